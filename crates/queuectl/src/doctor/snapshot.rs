//! The one read of the server that the checks judge: `INFO` (as [`Info`]), a few `CONFIG GET`s,
//! `CLIENT LIST` and `CLIENT INFO`, heartbeats, the slow log and `LATENCY LATEST`, each part kept
//! with why it could not be read; and the small readers of raw RESP values the reads share.

use std::collections::HashMap;

use queue_core::tooling::{FromRedisValue, Raw, Value};
use queue_core::{Connections, HeartbeatRecord};

use inspect::clients::{self, Client};
pub(super) use inspect::server::Info;

use super::latency::{LatencyEvent, SlowLog, read_latency_latest, read_slowlog};

/// The only settings read with `CONFIG GET` (never `*`: that would fetch passwords too).
const CONFIG_KEYS: &[&str] =
    &["save", "appendfsync", "latency-monitor-threshold", "maxclients", "stop-writes-on-bgsave-error"];

/// What the doctor reads from the server in one go, each part with why it could not be read.
pub(super) struct Snapshot {
    pub(super) info: Result<Info, String>,
    pub(super) config: Result<HashMap<String, String>, String>,
    pub(super) clients: Result<Vec<Client>, String>,
    /// `laddr` of the doctor's own connection (`CLIENT INFO`): the address the server saw.
    pub(super) reached: Option<String>,
    pub(super) beats: Result<Vec<HeartbeatRecord>, String>,
    pub(super) slowlog: Result<SlowLog, String>,
    /// `None` when the latency monitor is known to be off, so `LATENCY LATEST` is not asked.
    pub(super) latency_events: Option<Result<Vec<LatencyEvent>, String>>,
}

impl Snapshot {
    pub(super) async fn read(c: &Connections) -> Snapshot {
        let info = Info::read(c).await.map_err(describe);
        let config = read_config(c).await;
        let clients = clients::client_list(c).await.map_err(|e| trim_error(&e.to_string()));
        let reached =
            Raw::new(c).query::<String>(&["CLIENT", "INFO"]).await.ok().and_then(|line| client_field(&line, "laddr"));
        let beats = c.live_heartbeats().await.map_err(describe);
        let slowlog = read_slowlog(c).await;
        let monitor_off =
            config.as_ref().ok().and_then(|cfg| cfg.get("latency-monitor-threshold")).map(String::as_str) == Some("0");
        let latency_events = if monitor_off { None } else { Some(read_latency_latest(c).await) };
        Snapshot { info, config, clients, reached, beats, slowlog, latency_events }
    }
}

pub(super) fn describe(e: queue_core::Error) -> String {
    trim_error(&e.to_string())
}

fn trim_error(text: &str) -> String {
    text.trim().to_owned()
}

/// Runs `cmd` for a raw value; a server error inside the value counts as a failure.
pub(super) async fn query_value(c: &Connections, args: &[&str]) -> Result<Value, String> {
    match Raw::new(c).query::<Value>(args).await {
        Ok(Value::ServerError(e)) => Err(trim_error(&e.to_string())),
        Ok(value) => Ok(value),
        Err(e) => Err(describe(e)),
    }
}

/// [`CONFIG_KEYS`], one `CONFIG GET` each (Redis 6.2 takes one parameter per call).
async fn read_config(c: &Connections) -> Result<HashMap<String, String>, String> {
    inspect::server::config(c, CONFIG_KEYS).await.map_err(describe)
}

/// `key=value` from one `CLIENT INFO` / `CLIENT LIST` line.
fn client_field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).map(str::to_owned)
}

/// What a check reads, or why it could not be read.
pub(super) type Source<'a, T> = Result<&'a T, &'a str>;

// Small readers of raw RESP values (RESP2 or RESP3).

pub(super) fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

pub(super) fn as_u64(value: &Value) -> Option<u64> {
    u64::from_redis_value_ref(value).ok()
}

pub(super) fn as_string(value: &Value) -> Option<String> {
    String::from_redis_value_ref(value).ok()
}
