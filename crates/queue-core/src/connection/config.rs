//! Redis configuration, read from the environment.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | `redis://` or `rediss://` (TLS), optional `user:password@`, optional `/db` |
//! | `QUEUE_PREFIX` | `bull` | Bull key prefix; may be a Redis Cluster hash tag such as `{bull}` |
//! | `REDIS_MAX_CONNECTIONS` | the process's plan | hard budget of Redis connections for this process; when set, a plan that needs more fails at start-up |
//! | `REDIS_CONNECT_TIMEOUT_MS` | [`DEFAULT_CONNECT_TIMEOUT`] | TCP + TLS + handshake limit for one connection attempt |
//! | `REDIS_COMMAND_TIMEOUT_MS` | [`DEFAULT_COMMAND_TIMEOUT`] | limit for one non-blocking command or script |
//! | `REDIS_TLS_CA_FILE` | unset: the public web roots | with `rediss://`, a PEM file of the CA(s) that signed the server's certificate (a private CA) |
//!
//! Nothing is rewritten: the URL given is the URL used, and it is logged once, redacted.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default `REDIS_URL`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default `QUEUE_PREFIX`, Bull's own.
pub const DEFAULT_PREFIX: &str = "bull";
/// Default `REDIS_CONNECT_TIMEOUT_MS`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Default `REDIS_COMMAND_TIMEOUT_MS`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(5_000);

/// A Redis URL whose password never reaches `Debug`, `Display` or a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the scheme and that the URL parses; does not connect.
    pub fn parse(raw: &str) -> Result<Self> {
        let url = RedisUrl(raw.trim().to_owned());
        if !(url.0.starts_with("redis://") || url.0.starts_with("rediss://")) {
            return Err(Error::config("REDIS_URL", format!("must start with redis:// or rediss://, got {url}")));
        }
        redis::IntoConnectionInfo::into_connection_info(url.0.as_str())
            .map_err(|e| Error::config("REDIS_URL", format!("{url} does not parse: {e}")))?;
        Ok(url)
    }

    /// The URL with any password, for connecting. Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss://")
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "***".to_owned();
        };
        // Userinfo ends at the last '@' before any query or fragment. A password may itself
        // contain '/', so the path cannot be used to find where the authority ends.
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        match rest[..end].rfind('@') {
            None => self.0.clone(),
            Some(at) => {
                let userinfo = &rest[..at];
                let user = match userinfo.split_once(':') {
                    // tidy: not a key (a URL's userinfo with the password masked)
                    Some((user, _)) => format!("{user}:***"),
                    None if userinfo.is_empty() => String::new(),
                    // A lone userinfo without ':' is a password in redis URLs of some clients.
                    None => "***".to_owned(),
                };
                format!("{scheme}://{user}@{}", &rest[at + 1..])
            }
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.redacted()).finish()
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How this process talks to Redis. Built by [`RedisConfig::from_env`] or by hand.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Where Redis is.
    pub url: RedisUrl,
    /// Bull key prefix.
    pub prefix: String,
    /// Hard budget of open Redis connections for this process; `None` (the default) makes the
    /// budget exactly what the process plans.
    pub max_connections: Option<usize>,
    /// Limit for one connection attempt.
    pub connect_timeout: Duration,
    /// Limit for one non-blocking command.
    pub command_timeout: Duration,
    /// With `rediss://`: the PEM certificates of the CA(s) to trust instead of the public web
    /// roots (`REDIS_TLS_CA_FILE`, read at start-up).
    pub tls_ca: Option<Vec<u8>>,
}

impl RedisConfig {
    /// A configuration with every default but the URL.
    pub fn new(url: RedisUrl) -> Self {
        RedisConfig {
            url,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_connections: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            tls_ca: None,
        }
    }

    /// Reads the variables listed in the module docs from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`RedisConfig::from_env`], with the variables taken from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let url = match lookup("REDIS_URL").filter(|v| !v.trim().is_empty()) {
            Some(raw) => RedisUrl::parse(&raw)?,
            None => RedisUrl::parse(DEFAULT_REDIS_URL)?,
        };
        let mut config = RedisConfig::new(url);
        if let Some(prefix) = lookup("QUEUE_PREFIX") {
            validate_prefix(&prefix).map_err(|e| Error::config("QUEUE_PREFIX", e.to_string()))?;
            config.prefix = prefix;
        }
        if let Some(raw) = lookup("REDIS_MAX_CONNECTIONS") {
            config.max_connections = Some(parse_positive("REDIS_MAX_CONNECTIONS", &raw)? as usize);
        }
        if let Some(raw) = lookup("REDIS_CONNECT_TIMEOUT_MS") {
            config.connect_timeout = Duration::from_millis(parse_positive("REDIS_CONNECT_TIMEOUT_MS", &raw)?);
        }
        if let Some(raw) = lookup("REDIS_COMMAND_TIMEOUT_MS") {
            config.command_timeout = Duration::from_millis(parse_positive("REDIS_COMMAND_TIMEOUT_MS", &raw)?);
        }
        if let Some(path) = lookup("REDIS_TLS_CA_FILE").filter(|v| !v.trim().is_empty()) {
            let bad = |why: String| Error::config("REDIS_TLS_CA_FILE", why);
            if !config.url.is_tls() {
                return Err(bad("is only used with a rediss:// REDIS_URL".to_owned()));
            }
            let pem = std::fs::read(&path).map_err(|e| bad(format!("{path}: {e}")))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad(format!("{path}: no PEM certificate in it")));
            }
            config.tls_ca = Some(pem);
        }
        Ok(config)
    }
}

fn parse_positive(var: &'static str, raw: &str) -> Result<u64> {
    match raw.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::config(var, format!("must be a positive integer, got {raw:?}"))),
    }
}

/// Refuses a prefix that cannot form keys.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Err(Error::config("QUEUE_PREFIX", "must not be empty"));
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::config("QUEUE_PREFIX", format!("{prefix:?} must not contain whitespace")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = RedisConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(config.url.expose(), DEFAULT_REDIS_URL);
        assert_eq!(config.prefix, "bull");
        assert_eq!(config.max_connections, None);
        assert_eq!(config.command_timeout, DEFAULT_COMMAND_TIMEOUT);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let cases: [&'static [(&str, &str)]; 5] = [
            &[("REDIS_URL", "http://x")],
            &[("REDIS_MAX_CONNECTIONS", "0")],
            &[("REDIS_CONNECT_TIMEOUT_MS", "soon")],
            &[("REDIS_COMMAND_TIMEOUT_MS", "-5")],
            &[("QUEUE_PREFIX", "")],
        ];
        for case in cases {
            let err = RedisConfig::from_lookup(lookup(case)).unwrap_err().to_string();
            assert!(err.contains(case[0].0), "{err} should name {}", case[0].0);
        }
    }

    #[test]
    fn passwords_are_redacted_everywhere() {
        let url = RedisUrl::parse("rediss://app:s3cret@redis.example:6380/2").unwrap();
        assert_eq!(url.redacted(), "rediss://app:***@redis.example:6380/2");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!format!("{url}").contains("s3cret"));
        let config = RedisConfig::new(url);
        assert!(!format!("{config:?}").contains("s3cret"));
        let slashed = RedisUrl("redis://user:pa/ss@h:1/0".to_owned());
        assert_eq!(slashed.redacted(), "redis://user:***@h:1/0");
        let bare = RedisUrl::parse("redis://:pw@h:1").unwrap();
        assert_eq!(bare.redacted(), "redis://:***@h:1");
        assert_eq!(RedisUrl::parse("redis://h:1").unwrap().redacted(), "redis://h:1");
    }
}
