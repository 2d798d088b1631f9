//! Logs: `tracing` to stderr, JSON lines with `LOG_FORMAT=json` (the default in containers is
//! whatever the deployment sets; the default here is `pretty`), filtered by `RUST_LOG`
//! (default `info`).

use tracing_subscriber::EnvFilter;

use crate::env::{ConfigError, Env};

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Pretty,
}

impl LogFormat {
    /// `LOG_FORMAT`: `json` or `pretty` (default).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.get("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
            None | Some("pretty") => Ok(LogFormat::Pretty),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(ConfigError::new("LOG_FORMAT", format!("{other:?}: expected json or pretty"))),
        }
    }
}

/// Installs the global subscriber. Call once, first thing in `main`; a second call (tests
/// spawning several apps) is a no-op.
pub fn init(format: LogFormat, env: &Env) -> Result<(), ConfigError> {
    let filter = match env.get("RUST_LOG") {
        Some(directives) => EnvFilter::try_new(directives).map_err(|e| ConfigError::new("RUST_LOG", e.to_string()))?,
        None => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    Ok(())
}
