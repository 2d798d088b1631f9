//! Reading a service's configuration from its environment: every variable has a name, a
//! documented default or none (then it is required), and a bad value stops start-up with an
//! error that names the variable.
//!
//! Variables that look like ours but are not known (a typo such as `API_TOKEN` for
//! `API_TOKENS`) are refused too, for the prefixes in [`OWNED_PREFIXES`]: a typo that silently
//! falls back to a default is how dev and prod drift apart.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Prefixes of the variables this product owns. An unknown variable with one of them fails
/// start-up (see [`Env::refuse_unknown`]).
pub const OWNED_PREFIXES: &[&str] =
    &["API_", "WORKER_", "WEBHOOK_", "STORAGE_", "CALLBACK_", "MAX_UPLOAD", "METRICS_", "QUEUE_", "REDIS_", "HEALTH_"];

/// health-svc's own variables. Every service tolerates them, so that one environment file can
/// serve the stack; a misspelt one is still refused everywhere.
pub const HEALTH_VARS: &[&str] = &[
    "HEALTH_CANARY_INTERVAL_MS",
    "HEALTH_CANARY_MAX_AGE_MS",
    "HEALTH_READY_CACHE_MS",
    "HEALTH_CHECK_TIMEOUT_MS",
    "HEALTH_QUEUES",
];

/// Variables every service reads (queue-core's and the common ones).
pub const COMMON_VARS: &[&str] = &[
    "REDIS_URL",
    "QUEUE_PREFIX",
    "REDIS_MAX_CONNECTIONS",
    "REDIS_CONNECT_TIMEOUT_MS",
    "REDIS_COMMAND_TIMEOUT_MS",
    "REDIS_TLS_CA_FILE",
    "DATABASE_URL",
    "LISTEN_ADDR",
    "RUST_LOG",
    "LOG_FORMAT",
];

/// A configuration value that is missing or invalid, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    /// The variable at fault.
    pub var: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `var`.
    pub fn new(var: &str, message: impl Into<String>) -> Self {
        ConfigError { var: var.to_owned(), message: message.into() }
    }
}

/// A snapshot of the environment (or of given pairs, in tests).
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets: names only.
        f.debug_struct("Env").field("vars", &self.vars.keys().collect::<Vec<_>>()).finish()
    }
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Env { vars: std::env::vars().collect() }
    }

    /// Exactly these variables (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env { vars: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    /// The raw value, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// A variable that has no default.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name).map(str::to_owned).ok_or_else(|| ConfigError::new(name, "is required and not set"))
    }

    /// A parsed value, or `default` when unset.
    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e| ConfigError::new(name, format!("{raw:?}: {e}"))),
        }
    }

    /// A positive integer, or `default` when unset.
    pub fn positive_or(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        let n: u64 = self.parse_or(name, default)?;
        if n == 0 {
            return Err(ConfigError::new(name, "must be a positive integer"));
        }
        Ok(n)
    }

    /// A duration in milliseconds (a variable named `..._MS`), or `default` when unset.
    pub fn millis_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.positive_or(name, default.as_millis() as u64)?))
    }

    /// A comma-separated list (empty items dropped); empty when unset.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|raw| raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Fails on a set variable with one of [`OWNED_PREFIXES`] that is in none of
    /// [`COMMON_VARS`], [`HEALTH_VARS`] and `known`.
    pub fn refuse_unknown(&self, known: &[&str]) -> Result<(), ConfigError> {
        self.refuse_unknown_with(OWNED_PREFIXES, known)
    }

    /// [`Env::refuse_unknown`] for the variables with one of `prefixes` only: a service that
    /// tolerates every variable of the others (health-svc) checks its own and the common ones.
    pub fn refuse_unknown_with(&self, prefixes: &[&str], known: &[&str]) -> Result<(), ConfigError> {
        for name in self.vars.keys() {
            let ours = prefixes.iter().any(|p| name.starts_with(p));
            let listed = [COMMON_VARS, HEALTH_VARS, known].iter().any(|list| list.contains(&name.as_str()));
            if ours && !listed {
                return Err(ConfigError::new(name, "is not a variable this service knows (a typo?)"));
            }
        }
        Ok(())
    }

    /// A lookup for queue-core's `RedisConfig::from_lookup`.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| self.get(name).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_fail_naming_the_variable() {
        let env = Env::from_pairs([("WORKER_CONCURRENCY", "x"), ("MAX_UPLOAD_BYTES", "0"), ("API_TOKENS", "a, b,,")]);
        assert_eq!(env.positive_or("WORKER_CONCURRENCY", 2).unwrap_err().var, "WORKER_CONCURRENCY");
        assert_eq!(
            env.positive_or("MAX_UPLOAD_BYTES", 5).unwrap_err().to_string(),
            "invalid MAX_UPLOAD_BYTES: must be a positive integer"
        );
        assert_eq!(env.positive_or("METRICS_PORT", 5).unwrap(), 5);
        assert_eq!(env.list("API_TOKENS"), vec!["a", "b"]);
        assert_eq!(
            env.required("STORAGE_DIR").unwrap_err().to_string(),
            "invalid STORAGE_DIR: is required and not set"
        );
    }

    #[test]
    fn unknown_variables_with_our_prefixes_are_refused() {
        let env = Env::from_pairs([("API_TOKEN", "x"), ("HOME", "/root"), ("REDIS_URL", "redis://r")]);
        assert_eq!(env.refuse_unknown(&["API_TOKENS"]).unwrap_err().var, "API_TOKEN");
        assert!(env.refuse_unknown(&["API_TOKEN"]).is_ok());
        assert!(format!("{env:?}").contains("API_TOKEN") && !format!("{env:?}").contains("redis://r"));
    }
}
