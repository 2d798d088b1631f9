//! Liveness records: each process that holds Redis connections says, every few seconds, who it
//! is, which queues it works on and the connection budget it declares, in a key that expires if
//! it stops.
//!
//! Key: `<prefix>:__hb__:<service>:<instance>`, a JSON string with a TTL of three intervals.
//! `queuectl doctor` and the ops pages read them to list live processes and to compare each
//! service's connections in `CLIENT LIST` with the budget it declared. The queue name `__hb__` is
//! reserved for this. [`Connections`](crate::Connections) writes its process's record; nothing
//! else does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::bull::keys::{heartbeat_key, heartbeat_pattern};
use crate::clock::now_ms;
use crate::connection::budget::{BudgetStats, ConnectionPlan};
use crate::connection::command::CommandConnection;
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
    /// Queues this process works on (empty for a process that only produces or reads).
    pub queues: Vec<String>,
    /// The process's hard budget (`REDIS_MAX_CONNECTIONS`, or its plan when unset).
    pub budget: usize,
    /// Connections the process planned, by role.
    pub planned: ConnectionPlan,
    /// Connections open at the time of the heartbeat.
    pub open: usize,
    /// When the heartbeat was written (ms).
    pub at_ms: u64,
    /// Heartbeat period (ms); the record expires after three.
    pub interval_ms: u64,
    /// What the process adds about itself, by name (see
    /// [`Connections::report_in_heartbeat`](crate::Connections::report_in_heartbeat)), read
    /// at each beat.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, serde_json::Value>,
}

/// Reads one fact of a process at each heartbeat.
pub(crate) type FactSource = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What a process's heartbeat says, kept up to date by [`Connections`](crate::Connections).
pub(crate) struct Heartbeat {
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) prefix: String,
    pub(crate) interval: Duration,
    queues: Mutex<BTreeSet<String>>,
    facts: Mutex<BTreeMap<String, FactSource>>,
    /// Wakes the heartbeat task to write at once (the queues changed).
    changed: Notify,
}

impl Heartbeat {
    pub(crate) fn new(service: &str, prefix: &str, interval: Duration) -> Self {
        let host =
            std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into());
        Heartbeat {
            service: service.to_owned(),
            instance: format!("{host}-{}", std::process::id()),
            prefix: prefix.to_owned(),
            interval,
            queues: Mutex::new(BTreeSet::new()),
            facts: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        }
    }

    /// Adds queues to the record and has it written now.
    pub(crate) fn add_queues<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut queues = self.queues.lock().expect("heartbeat queues lock");
        let before = queues.len();
        queues.extend(names.into_iter().map(str::to_owned));
        if queues.len() != before {
            self.changed.notify_one();
        }
    }

    /// Adds (or replaces) the fact `name`, read by `source` at each beat.
    pub(crate) fn add_fact(&self, name: &str, source: FactSource) {
        self.facts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.to_owned(), source);
    }

    fn record(&self, stats: &BudgetStats) -> HeartbeatRecord {
        // A source that panicked once must not stop every later heartbeat.
        let facts = self.facts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        HeartbeatRecord {
            service: self.service.clone(),
            instance: self.instance.clone(),
            queues: self.queues.lock().expect("heartbeat queues lock").iter().cloned().collect(),
            budget: stats.budget,
            planned: ConnectionPlan {
                command: stats.command.planned,
                subscriber: stats.subscriber.planned,
                blocking: stats.blocking.planned,
            },
            open: stats.open,
            at_ms: now_ms(),
            interval_ms: self.interval.as_millis() as u64,
            facts: facts.iter().map(|(name, source)| (name.clone(), source())).collect(),
        }
    }

    fn key(&self) -> String {
        heartbeat_key(&self.prefix, &self.service, &self.instance)
    }

    /// Writes the record now.
    pub(crate) async fn beat(&self, command: &CommandConnection, stats: BudgetStats) -> Result<()> {
        let value =
            serde_json::to_string(&self.record(&stats)).map_err(|source| Error::Json { what: "heartbeat", source })?;
        let ttl = (self.interval * 3).as_millis() as u64;
        command.query::<()>(redis::cmd("SET").arg(self.key()).arg(value).arg("PX").arg(ttl)).await
    }

    /// Deletes the record (the process is closing), so it does not look alive for three more
    /// intervals.
    pub(crate) async fn remove(&self, command: &CommandConnection) -> Result<()> {
        command.query::<()>(redis::cmd("DEL").arg(self.key())).await
    }
}

/// Writes the heartbeat every interval, and at once when the queues change, until aborted.
pub(crate) fn spawn(
    heartbeat: Arc<Heartbeat>,
    command: CommandConnection,
    stats: impl Fn() -> BudgetStats + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = heartbeat.changed.notified() => {}
            }
            if let Err(e) = heartbeat.beat(&command, stats()).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    })
}

/// Every live heartbeat under `prefix` (read with `SCAN`, never `KEYS`).
pub(crate) async fn live(command: &CommandConnection, prefix: &str) -> Result<Vec<HeartbeatRecord>> {
    let pattern = heartbeat_pattern(prefix);
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500);
        let (next, found): (u64, Vec<String>) = command.query(&cmd).await?;
        keys.extend(found);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = command.query(redis::cmd("MGET").arg(&keys)).await?;
    Ok(values.into_iter().flatten().filter_map(|v| serde_json::from_str(&v).ok()).collect())
}
