//! health-svc's configuration, read once from the environment. A bad value stops start-up with
//! a message naming the variable.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | required | `host:port` of `/livez`, `/readyz`, `/ops`, `/ops/queue`, `/metrics` |
//! | `DATABASE_URL` | required | Postgres, checked with `SELECT 1` (a one-connection pool) |
//! | `HEALTH_QUEUES` | `files,webhooks` | the queues `/ops` reports on |
//! | `HEALTH_READY_CACHE_MS` | `1000` | how long a readiness answer is reused |
//! | `HEALTH_CHECK_TIMEOUT_MS` | `1000` | limit of one Redis or Postgres check |
//! | `HEALTH_CANARY_INTERVAL_MS` | `5000` | how often a canary job is sent on `files` |
//! | `HEALTH_CANARY_MAX_AGE_MS` | `30000` | `/readyz?deep=1` fails when the last canary came back longer ago than this |
//! | `REDIS_URL`, `QUEUE_PREFIX`, `REDIS_MAX_CONNECTIONS`, `REDIS_CONNECT_TIMEOUT_MS`, `REDIS_COMMAND_TIMEOUT_MS` | queue-core's | the one Redis connection (command role) |
//! | `LOG_FORMAT`, `RUST_LOG` | `pretty`, `info` | logs |
//!
//! The other services' variables are tolerated, so one environment file serves the stack; an
//! unknown `HEALTH_`, `REDIS_` or `QUEUE_` variable (a typo) stops start-up.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use platform::env::{ConfigError, Env};

/// The prefixes whose unknown variables stop health-svc: its own and the common ones. The other
/// services' variables (`API_`, `WORKER_`, `WEBHOOK_`, ...) are tolerated, so one environment
/// file serves the stack.
pub const CHECKED_PREFIXES: &[&str] = &["HEALTH_", "REDIS_", "QUEUE_"];

/// health-svc's configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `LISTEN_ADDR`.
    pub listen_addr: SocketAddr,
    /// `HEALTH_QUEUES`.
    pub queues: Vec<String>,
    /// `HEALTH_READY_CACHE_MS`.
    pub ready_cache: Duration,
    /// `HEALTH_CHECK_TIMEOUT_MS`.
    pub check_timeout: Duration,
    /// `HEALTH_CANARY_INTERVAL_MS`.
    pub canary_interval: Duration,
    /// `HEALTH_CANARY_MAX_AGE_MS`.
    pub canary_max_age: Duration,
    /// The environment, from which platform builds the Redis connection and the Postgres pool.
    pub(crate) env: Env,
}

impl Config {
    /// Reads and checks every variable; the error names the first bad one.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        env.refuse_unknown_with(CHECKED_PREFIXES, &[])?;
        let raw = env.required("LISTEN_ADDR")?;
        let listen_addr = raw
            .to_socket_addrs()
            .map_err(|e| ConfigError::new("LISTEN_ADDR", format!("{raw:?}: {e}")))?
            .next()
            .ok_or_else(|| ConfigError::new("LISTEN_ADDR", format!("{raw:?} resolves to no address")))?;
        let mut queues = env.list("HEALTH_QUEUES");
        if queues.is_empty() {
            queues = vec![platform::jobs::FILES_QUEUE.to_owned(), platform::jobs::WEBHOOKS_QUEUE.to_owned()];
        }
        let ready_cache = env.millis_or("HEALTH_READY_CACHE_MS", Duration::from_secs(1))?;
        let check_timeout = env.millis_or("HEALTH_CHECK_TIMEOUT_MS", Duration::from_secs(1))?;
        let canary_interval = env.millis_or("HEALTH_CANARY_INTERVAL_MS", Duration::from_secs(5))?;
        let canary_max_age = env.millis_or("HEALTH_CANARY_MAX_AGE_MS", Duration::from_secs(30))?;
        if canary_max_age <= canary_interval {
            return Err(ConfigError::new(
                "HEALTH_CANARY_MAX_AGE_MS",
                "must be longer than HEALTH_CANARY_INTERVAL_MS, or every canary would be overdue",
            ));
        }
        platform::redis::config(env)?;
        env.required("DATABASE_URL")?;
        Ok(Config {
            listen_addr,
            queues,
            ready_cache,
            check_timeout,
            canary_interval,
            canary_max_age,
            env: env.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut pairs = vec![("LISTEN_ADDR", "127.0.0.1:0"), ("DATABASE_URL", "postgres://app:app@127.0.0.1/app")];
        pairs.extend_from_slice(extra);
        Config::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_and_bad_values() {
        let c = config(&[]).unwrap();
        assert_eq!(c.queues, ["files", "webhooks"]);
        assert_eq!((c.ready_cache, c.canary_max_age), (Duration::from_secs(1), Duration::from_secs(30)));
        assert_eq!(config(&[("HEALTH_CANARY_MAX_AGE_MS", "100")]).unwrap_err().var, "HEALTH_CANARY_MAX_AGE_MS");
        assert_eq!(config(&[("HEALTH_CANARY_INTERVAL", "100")]).unwrap_err().var, "HEALTH_CANARY_INTERVAL");
        assert_eq!(config(&[("HEALTH_CHECK_TIMEOUT_MS", "soon")]).unwrap_err().var, "HEALTH_CHECK_TIMEOUT_MS");
        assert_eq!(config(&[("LISTEN_ADDR", "nowhere")]).unwrap_err().var, "LISTEN_ADDR");
        assert!(
            config(&[("API_TOKENS", "x"), ("WORKER_NICE", "2"), ("WEBHOOK_TIMEOUT_MS", "1")]).is_ok(),
            "a shared environment"
        );
        assert_eq!(config(&[("REDIS_URI", "redis://x")]).unwrap_err().var, "REDIS_URI");
    }
}
