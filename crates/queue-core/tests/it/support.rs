//! Helpers for building connections and inspecting Redis from tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use queue_core::{Connections, QueueAdmin, RedisConfig, RedisUrl};

/// Polls `check` every 20 ms until it returns true or `limit` passes. `limit` only bounds a wait
/// for a state, so a broken test fails instead of hanging; it is never what a test asserts.
pub(crate) async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

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

/// `CLIENT LIST`, one map of fields (`id`, `name`, `flags`, `cmd`, …) per connection.
pub(crate) async fn client_list(conn: &mut redis::aio::MultiplexedConnection) -> Vec<HashMap<String, String>> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await.unwrap();
    list.lines()
        .map(|line| {
            line.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
        })
        .collect()
}

/// Names of the connections of `service` that are blocked in a blocking command right now.
pub(crate) async fn blocked_clients(conn: &mut redis::aio::MultiplexedConnection, service: &str) -> Vec<String> {
    client_list(conn)
        .await
        .into_iter()
        .filter(|c| c["name"].contains(service) && c["flags"].contains('b'))
        .map(|c| c["name"].clone())
        .collect()
}

/// How many times the server behind `conn` has run `command` (`INFO commandstats`): meaningful on
/// a private server only.
pub(crate) async fn command_calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    let wanted = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}
