//! api-svc's configuration, read once from the environment. A bad value stops start-up with a
//! message naming the variable; so does an unknown variable with one of the product's prefixes
//! (a typo such as `API_TOKEN`).
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | required | `host:port` the HTTP server binds, e.g. `0.0.0.0:8080` |
//! | `API_TOKENS` | required, or `API_TOKENS_FILE` | comma-separated bearer tokens |
//! | `API_TOKENS_FILE` | unset | a file with one token per line (`#` comments, blank lines ignored); instead of `API_TOKENS` |
//! | `MAX_UPLOAD_BYTES` | `1073741824` (1 GiB) | largest accepted upload, enforced while streaming |
//! | `WEBHOOK_SECRET` | unset | `whsec_<base64>`; unset, uploads with a `callback_url` are refused (400 `callbacks_disabled`) |
//! | `CALLBACK_ALLOWED_HOSTS` | empty | hosts (`host` or `host:port`) a callback may reach over http or at a non-public address |
//! | `STORAGE_DIR` | required unless `STORAGE_URL` | where files are stored; `STORAGE_URL=s3://bucket[/prefix]` (with the `AWS_*` variables) stores them in S3 instead |
//! | `DATABASE_URL` | required | Postgres; migrations are applied at start-up |
//! | `DATABASE_MAX_CONNECTIONS` | `5` | the Postgres pool's size |
//! | `DATABASE_ACQUIRE_TIMEOUT_MS` | `3000` | how long a request waits for a pooled connection |
//! | `DATABASE_TIMEOUT_MS` | `5000` | limit of one database call, the wait for a connection included |
//! | `REDIS_URL`, `QUEUE_PREFIX`, `REDIS_MAX_CONNECTIONS`, `REDIS_CONNECT_TIMEOUT_MS`, `REDIS_COMMAND_TIMEOUT_MS` | queue-core's | the one Redis connection (command role) |
//! | `LOG_FORMAT`, `RUST_LOG` | `pretty`, `info` | logs |
//!
//! `WORKER_CONCURRENCY` and `METRICS_ADDR`, worker-svc's fixed variables, are tolerated so that
//! one environment file can serve the whole stack.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use base64::Engine;
use platform::callback::CallbackPolicy;
use platform::env::{ConfigError, Env};
use platform::storage::Storage;

use crate::auth::Tokens;

/// Default of `MAX_UPLOAD_BYTES`: 1 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;
/// Default of `DATABASE_TIMEOUT_MS`.
pub const DEFAULT_DATABASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Variables api-svc reads besides the common ones ([`platform::env::COMMON_VARS`]).
pub const KNOWN_VARS: &[&str] = &[
    "API_TOKENS",
    "API_TOKENS_FILE",
    "MAX_UPLOAD_BYTES",
    "WEBHOOK_SECRET",
    "CALLBACK_ALLOWED_HOSTS",
    "STORAGE_DIR",
    "STORAGE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_ACQUIRE_TIMEOUT_MS",
    "DATABASE_TIMEOUT_MS",
    // worker-svc's, tolerated in a shared environment.
    "WORKER_CONCURRENCY",
    "METRICS_ADDR",
];

/// api-svc's configuration.
#[derive(Debug)]
#[non_exhaustive]
pub struct Config {
    /// Where the HTTP server listens (`LISTEN_ADDR`).
    pub(crate) listen_addr: SocketAddr,
    /// The bearer tokens, as digests.
    pub(crate) tokens: Tokens,
    /// `MAX_UPLOAD_BYTES`.
    pub(crate) max_upload_bytes: u64,
    /// Whether `WEBHOOK_SECRET` is set (api-svc only checks its form; worker-svc signs).
    pub(crate) callbacks_enabled: bool,
    /// `CALLBACK_ALLOWED_HOSTS`.
    pub(crate) callback_policy: CallbackPolicy,
    /// The file store (`STORAGE_DIR`).
    pub(crate) storage: Storage,
    /// `DATABASE_TIMEOUT_MS`.
    pub(crate) database_timeout: Duration,
    /// The environment, from which platform builds the Redis connections and the Postgres pool
    /// (both checked here already).
    pub(crate) env: Env,
}

impl Config {
    /// Reads and checks every variable; the error names the first bad one.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        env.refuse_unknown(KNOWN_VARS)?;
        let listen_addr = listen_addr(env)?;
        let tokens = tokens(env)?;
        let max_upload_bytes = env.positive_or("MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)?;
        let callbacks_enabled = match env.get("WEBHOOK_SECRET") {
            None => false,
            Some(secret) => {
                check_webhook_secret(secret).map_err(|m| ConfigError::new("WEBHOOK_SECRET", m))?;
                true
            }
        };
        let callback_policy = CallbackPolicy::from_env(env)?;
        // Checked now so that a bad value stops start-up; built later, inside the runtime.
        platform::redis::config(env)?;
        env.required("DATABASE_URL")?;
        env.positive_or("DATABASE_MAX_CONNECTIONS", 1)?;
        env.positive_or("DATABASE_ACQUIRE_TIMEOUT_MS", 1)?;
        let database_timeout = env.millis_or("DATABASE_TIMEOUT_MS", DEFAULT_DATABASE_TIMEOUT)?;
        let storage = Storage::from_env(env)?;
        Ok(Config {
            listen_addr,
            tokens,
            max_upload_bytes,
            callbacks_enabled,
            callback_policy,
            storage,
            database_timeout,
            env: env.clone(),
        })
    }
}

fn listen_addr(env: &Env) -> Result<SocketAddr, ConfigError> {
    let raw = env.required("LISTEN_ADDR")?;
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    raw.to_socket_addrs()
        .map_err(|e| ConfigError::new("LISTEN_ADDR", format!("{raw:?}: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::new("LISTEN_ADDR", format!("{raw:?} resolves to no address")))
}

fn tokens(env: &Env) -> Result<Tokens, ConfigError> {
    let (var, list) = match (env.get("API_TOKENS"), env.get("API_TOKENS_FILE")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new("API_TOKENS_FILE", "set API_TOKENS or API_TOKENS_FILE, not both"));
        }
        (Some(_), None) => ("API_TOKENS", env.list("API_TOKENS")),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new("API_TOKENS_FILE", format!("{path}: {e}")))?;
            let lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
            ("API_TOKENS_FILE", lines.map(str::to_owned).collect())
        }
        (None, None) => return Err(ConfigError::new("API_TOKENS", "is required (or API_TOKENS_FILE) and not set")),
    };
    Tokens::new(list).map_err(|m| ConfigError::new(var, m))
}

/// Standard Webhooks' secret form: `whsec_` and the base64 of at least 16 bytes.
fn check_webhook_secret(secret: &str) -> Result<(), String> {
    let encoded = secret.strip_prefix("whsec_").ok_or("must have the form whsec_<base64>")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "the part after whsec_ is not base64".to_owned())?;
    if key.len() < 16 {
        return Err(format!("the key is {} bytes; at least 16 are needed", key.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&'static str, &'static str)], dir: &str) -> Env {
        let dir: &'static str = Box::leak(dir.to_owned().into_boxed_str());
        let mut pairs = vec![
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("API_TOKENS", "token-one-0123456789,token-two-0123456789"),
            ("DATABASE_URL", "postgres://app:app@127.0.0.1:5432/app"),
            ("STORAGE_DIR", dir),
        ];
        for (k, v) in extra {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k, v));
        }
        Env::from_pairs(pairs)
    }

    fn error_var(extra: &[(&'static str, &'static str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        Config::from_env(&env(extra, dir.path().to_str().unwrap())).unwrap_err().var
    }

    #[test]
    fn defaults_apply_with_only_the_required_variables() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_env(&env(&[], dir.path().to_str().unwrap())).unwrap();
        assert_eq!(config.max_upload_bytes, DEFAULT_MAX_UPLOAD_BYTES);
        assert!(!config.callbacks_enabled);
        assert_eq!(config.tokens.len(), 2);
        assert_eq!(config.database_timeout, DEFAULT_DATABASE_TIMEOUT);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        assert_eq!(error_var(&[("LISTEN_ADDR", "nowhere")]), "LISTEN_ADDR");
        assert_eq!(error_var(&[("LISTEN_ADDR", "")]), "LISTEN_ADDR");
        assert_eq!(error_var(&[("API_TOKENS", "")]), "API_TOKENS");
        assert_eq!(error_var(&[("API_TOKENS_FILE", "/nonexistent/tokens")]), "API_TOKENS_FILE");
        assert_eq!(error_var(&[("MAX_UPLOAD_BYTES", "1GB")]), "MAX_UPLOAD_BYTES");
        assert_eq!(error_var(&[("WEBHOOK_SECRET", "plain-secret")]), "WEBHOOK_SECRET");
        assert_eq!(error_var(&[("WEBHOOK_SECRET", "whsec_c2hvcnQ=")]), "WEBHOOK_SECRET");
        assert_eq!(error_var(&[("CALLBACK_ALLOWED_HOSTS", "a:b:c")]), "CALLBACK_ALLOWED_HOSTS");
        assert_eq!(error_var(&[("REDIS_URL", "http://redis")]), "REDIS_URL");
        assert_eq!(error_var(&[("REDIS_COMMAND_TIMEOUT_MS", "soon")]), "REDIS_COMMAND_TIMEOUT_MS");
        assert_eq!(error_var(&[("DATABASE_URL", "")]), "DATABASE_URL");
        assert_eq!(error_var(&[("DATABASE_TIMEOUT_MS", "0")]), "DATABASE_TIMEOUT_MS");
        assert_eq!(error_var(&[("STORAGE_URL", "gs://bucket")]), "STORAGE_URL");
        assert_eq!(error_var(&[("API_TOKEN", "typo")]), "API_TOKEN");
    }

    #[test]
    fn tokens_come_from_a_file_and_secrets_in_whsec_form_enable_callbacks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# deploy tokens\nfirst-token-0123456789\n\n  second-token-0123456789  \n").unwrap();
        let file: &'static str = Box::leak(file.to_str().unwrap().to_owned().into_boxed_str());
        let pairs = [
            ("API_TOKENS", ""),
            ("API_TOKENS_FILE", file),
            ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ];
        let config = Config::from_env(&env(&pairs, dir.path().to_str().unwrap())).unwrap();
        assert_eq!(config.tokens.len(), 2);
        assert!(config.tokens.authenticate(b"second-token-0123456789").is_some());
        assert!(config.callbacks_enabled);
        let both = [("API_TOKENS_FILE", file)];
        assert_eq!(error_var(&both), "API_TOKENS_FILE");
    }
}
