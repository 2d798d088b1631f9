//! Helpers for building connections and inspecting Redis from tests.

use std::collections::HashMap;

use queue_core::{Connections, QueueAdmin, RedisConfig, RedisUrl};

/// A configuration for `url` with a unique prefix and the given budget.
pub(crate) fn config(url: &str, budget: usize) -> RedisConfig {
    let mut config = RedisConfig::new(RedisUrl::parse(url).unwrap());
    config.prefix = test_support::unique("qc");
    config.max_connections = Some(budget);
    config
}

/// Command-only connections to the shared test Redis, with a unique prefix.
pub(crate) fn shared() -> Connections {
    Connections::builder(config(&test_support::redis_url(), 1), &test_support::unique("it")).build().unwrap()
}

/// A queue on fresh connections to the shared Redis, isolated by prefix.
pub(crate) fn queue(name: &str) -> QueueAdmin {
    QueueAdmin::new(&shared(), name).unwrap()
}

/// A plain client for assertions, outside any budget.
pub(crate) async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(std::time::Duration::from_secs(10)));
    client.get_multiplexed_async_connection_with_config(&config).await.unwrap()
}

/// `HGETALL` of a key.
pub(crate) async fn hash(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query_async(conn).await.unwrap()
}

/// Every key under `pattern`.
pub(crate) async fn keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut found: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(conn).await.unwrap();
    found.sort();
    found
}

/// `CLIENT LIST` entries whose name starts with `service:`, as (id, name, flags) triples.
pub(crate) async fn clients_of(conn: &mut redis::aio::MultiplexedConnection, service: &str) -> Vec<(String, String)> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await.unwrap();
    list.lines()
        .filter_map(|line| {
            let field =
                |name: &str| line.split(' ').find_map(|kv| kv.strip_prefix(&format!("{name}="))).map(str::to_owned);
            let name = field("name")?;
            name.starts_with(&format!("{service}:")).then(|| (field("id").unwrap(), name))
        })
        .collect()
}

/// Every client name in `CLIENT LIST`.
pub(crate) async fn all_client_names(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await.unwrap();
    list.lines()
        .filter_map(|line| {
            line.split(' ').find_map(|kv| kv.strip_prefix("name=")).filter(|n| !n.is_empty()).map(str::to_owned)
        })
        .collect()
}
