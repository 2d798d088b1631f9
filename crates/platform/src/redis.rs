//! A service's Redis connections: queue-core's [`Connections`], built from the same variables
//! in every service (`REDIS_URL`, `QUEUE_PREFIX`, `REDIS_MAX_CONNECTIONS`,
//! `REDIS_CONNECT_TIMEOUT_MS`, `REDIS_COMMAND_TIMEOUT_MS`) and named after the service.

use queue_core::{Connections, ConnectionsBuilder, RedisConfig};

use crate::env::{ConfigError, Env};

/// The Redis configuration of the environment. queue-core names the variable at fault.
pub fn config(env: &Env) -> Result<RedisConfig, ConfigError> {
    RedisConfig::from_lookup(env.lookup()).map_err(|e| match e {
        queue_core::Error::Config { var, message } => ConfigError::new(var, message),
        other => ConfigError::new("REDIS_URL", other.to_string()),
    })
}

/// Builds the connections `plan` describes (a builder for `service`, with the roles set), checked
/// against the budget. The endpoint is logged once by queue-core, password redacted.
pub fn connect(
    env: &Env,
    service: &str,
    plan: impl FnOnce(ConnectionsBuilder) -> ConnectionsBuilder,
) -> Result<Connections, ConfigError> {
    let builder = plan(Connections::builder(config(env)?, service));
    builder.build().map_err(|e| match e {
        queue_core::Error::BudgetTooSmall { .. } => ConfigError::new("REDIS_MAX_CONNECTIONS", e.to_string()),
        queue_core::Error::Config { var, message } => ConfigError::new(var, message),
        other => ConfigError::new("REDIS_URL", other.to_string()),
    })
}
