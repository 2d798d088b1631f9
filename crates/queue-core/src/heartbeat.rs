//! Liveness records: each worker process says, every few seconds, who it is, which queues it
//! serves and the connection budget it declares, in a key that expires if it stops.
//!
//! Key: `<prefix>:__hb__:<service>:<instance>`, a JSON string with a TTL of three intervals.
//! `queuectl doctor` reads them to list live workers and to compare each service's connections in
//! `CLIENT LIST` with the budget it declared. The queue name `__hb__` is reserved for this.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bull::keys::{heartbeat_key, heartbeat_pattern};
use crate::clock::now_ms;
use crate::connection::budget::BudgetStats;
use crate::connections::Connections;
use crate::error::{Error, Result};

/// Default period between two heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// One process's heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HeartbeatRecord {
    /// The service name (first part of its connection names).
    pub service: String,
    /// Unique per process: host name and pid.
    pub instance: String,
    /// Queues this process works on.
    pub queues: Vec<String>,
    /// `REDIS_MAX_CONNECTIONS` of the process.
    pub budget: usize,
    /// Connections the process planned, by role: command, subscriber, blocking.
    pub planned: [usize; 3],
    /// Connections open at the time of the heartbeat.
    pub open: usize,
    /// When the heartbeat was written (ms).
    pub at_ms: u64,
    /// Heartbeat period (ms); the record expires after three.
    pub interval_ms: u64,
}

impl HeartbeatRecord {
    fn new(connections: &Connections, queues: &[String], interval: Duration) -> Self {
        let stats: BudgetStats = connections.stats();
        let host =
            std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into());
        HeartbeatRecord {
            service: connections.service().to_owned(),
            instance: format!("{host}-{}", std::process::id()),
            queues: queues.to_vec(),
            budget: stats.budget,
            planned: [stats.command.planned, stats.subscriber.planned, stats.blocking.planned],
            open: stats.open,
            at_ms: now_ms(),
            interval_ms: interval.as_millis() as u64,
        }
    }
}

/// Writes one heartbeat now, on the command connection.
pub async fn beat(connections: &Connections, queues: &[String], interval: Duration) -> Result<()> {
    let record = HeartbeatRecord::new(connections, queues, interval);
    let value = serde_json::to_string(&record).map_err(|source| Error::Json { what: "heartbeat", source })?;
    let ttl = (interval * 3).as_millis() as u64;
    let mut cmd = redis::cmd("SET");
    cmd.arg(heartbeat_key(&connections.config().prefix, &record.service, &record.instance))
        .arg(value)
        .arg("PX")
        .arg(ttl);
    connections.command().query::<()>(&cmd).await
}

/// Writes a heartbeat every `interval` until the returned task is aborted.
pub fn spawn(connections: Connections, queues: Vec<String>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = beat(&connections, &queues, interval).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    })
}

/// Every live heartbeat under `prefix` (read with `SCAN`, never `KEYS`).
pub async fn live(connections: &Connections, prefix: &str) -> Result<Vec<HeartbeatRecord>> {
    let pattern = heartbeat_pattern(prefix);
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500);
        let (next, found): (u64, Vec<String>) = connections.command().query(&cmd).await?;
        keys.extend(found);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = connections.command().query(redis::cmd("MGET").arg(&keys)).await?;
    Ok(values.into_iter().flatten().filter_map(|v| serde_json::from_str(&v).ok()).collect())
}
