//! The read-only handle: what dashboards, health checks and `queuectl doctor` read.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::bull::job::{Job, JobState};
use crate::bull::keys::{HEARTBEAT_NAMESPACE, QueueKeys, due_from_score, escape_glob};
use crate::bull::scripts;
use crate::connection::command::CommandConnection;
use crate::connections::Connections;
use crate::error::{Error, Result};

/// Keys whose presence under `<prefix>:<queue>:` marks a Bull queue.
const QUEUE_MARKERS: &[&str] = &["id", "wait", "active", "delayed", "paused", "meta-paused", "completed", "failed"];

/// `SCAN ... COUNT` for queue discovery.
const SCAN_COUNT: usize = 1000;

/// `getJobCounts()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    /// `LLEN wait`.
    pub waiting: u64,
    /// `LLEN active`.
    pub active: u64,
    /// `ZCARD completed`.
    pub completed: u64,
    /// `ZCARD failed`.
    pub failed: u64,
    /// `ZCARD delayed`.
    pub delayed: u64,
    /// `LLEN paused`.
    pub paused: u64,
}

/// `getJobLogs()`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobLogs {
    /// The lines in the requested range.
    pub logs: Vec<String>,
    /// All lines of the job.
    pub count: u64,
}

/// A queue, read-only: counts, jobs, states, logs. It has no method that writes, so a service
/// that holds only views (health checks, dashboards) cannot change a queue. Cheap to clone.
#[derive(Clone)]
pub struct QueueView {
    pub(super) keys: QueueKeys,
    pub(super) conn: CommandConnection,
}

impl std::fmt::Debug for QueueView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueView").field("keys", &self.keys).finish()
    }
}

impl QueueView {
    /// Queue `name` with the prefix from the connections' configuration.
    pub fn new(connections: &Connections, name: &str) -> Result<Self> {
        Self::with_prefix(connections, &connections.config().prefix, name)
    }

    /// Queue `name` under an explicit prefix.
    pub fn with_prefix(connections: &Connections, prefix: &str, name: &str) -> Result<Self> {
        Ok(QueueView { keys: QueueKeys::new(prefix, name)?, conn: connections.command().clone() })
    }

    /// The names of the Bull queues under `prefix`, found by one `SCAN` pass over its keys
    /// (never `KEYS`), by the keys every Bull queue has (`id`, `wait`, `active`, ...).
    pub async fn discover(connections: &Connections, prefix: &str) -> Result<BTreeSet<String>> {
        let pattern = escape_glob(prefix) + ":*";
        let mut names = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<Vec<u8>>) = connections.command().query(&cmd).await?;
            for key in keys {
                if let Some(queue) = queue_of_key(prefix, &String::from_utf8_lossy(&key)) {
                    names.insert(queue.to_owned());
                }
            }
            cursor = next;
            if cursor == 0 {
                return Ok(names);
            }
        }
    }

    /// The job, or `None` when it does not exist.
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>> {
        let hash: HashMap<String, String> = self.conn.query(redis::cmd("HGETALL").arg(self.keys.job(id))).await?;
        Ok((!hash.is_empty()).then(|| Job::from_hash(id, &hash)))
    }

    /// Counts per state, read atomically.
    pub async fn get_job_counts(&self) -> Result<JobCounts> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .llen(k.wait())
            .llen(k.active())
            .zcard(k.completed())
            .zcard(k.failed())
            .zcard(k.delayed())
            .llen(k.paused());
        let (waiting, active, completed, failed, delayed, paused) = self.conn.query_pipeline(&pipe).await?;
        Ok(JobCounts { waiting, active, completed, failed, delayed, paused })
    }

    /// The job's state, read atomically; `None` when the job does not exist.
    pub async fn get_job_state(&self, id: &str) -> Result<Option<JobState>> {
        scripts::GetState { keys: &self.keys, job_id: id }.run(&self.conn).await
    }

    /// Jobs in `states`, `start..=end` of each (negative counts from the end), in Bull's order:
    /// with `asc`, next-to-run (lists) or oldest (sets) first. Entries whose hash is gone are
    /// `None`, as in Bull.
    pub async fn get_jobs(&self, states: &[JobState], start: i64, end: i64, asc: bool) -> Result<Vec<Option<Job>>> {
        let mut ids: Vec<String> = Vec::new();
        for state in states {
            let Some(suffix) = state.key_suffix() else {
                return Err(Error::InvalidOptions("stuck jobs are in no list; use get_job".into()));
            };
            let key = self.keys.key(suffix);
            let mut cmd;
            if state.is_list() {
                if asc {
                    cmd = redis::cmd("LRANGE");
                    cmd.arg(&key).arg(-(end + 1)).arg(-(start + 1));
                } else {
                    cmd = redis::cmd("LRANGE");
                    cmd.arg(&key).arg(start).arg(end);
                }
            } else {
                cmd = redis::cmd(if asc { "ZRANGE" } else { "ZREVRANGE" });
                cmd.arg(&key).arg(start).arg(end);
            }
            let mut found: Vec<String> = self.conn.query(&cmd).await?;
            if state.is_list() && asc {
                found.reverse();
            }
            ids.extend(found);
        }
        self.jobs_by_id(&ids).await
    }

    async fn jobs_by_id(&self, ids: &[String]) -> Result<Vec<Option<Job>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.keys.job(id));
        }
        let hashes: Vec<HashMap<String, String>> = self.conn.query_pipeline(&pipe).await?;
        Ok(ids.iter().zip(hashes).map(|(id, hash)| (!hash.is_empty()).then(|| Job::from_hash(id, &hash))).collect())
    }

    /// A job's log lines `start..=end` (oldest first with `asc`), and how many there are.
    pub async fn get_logs(&self, id: &str, start: i64, end: i64, asc: bool) -> Result<JobLogs> {
        let key = self.keys.logs(id);
        let (from, to) = if asc { (start, end) } else { (-(end + 1), -(start + 1)) };
        let mut pipe = redis::pipe();
        pipe.atomic().lrange(&key, from as isize, to as isize).llen(&key);
        let (mut logs, count): (Vec<String>, u64) = self.conn.query_pipeline(&pipe).await?;
        if !asc {
            logs.reverse();
        }
        Ok(JobLogs { logs, count })
    }

    /// Whether the queue is globally paused (by Bull's key or BullMQ's meta field).
    pub async fn is_paused(&self) -> Result<bool> {
        let mut pipe = redis::pipe();
        pipe.exists(self.keys.meta_paused()).hexists(self.keys.meta(), "paused");
        let (legacy, meta): (bool, bool) = self.conn.query_pipeline(&pipe).await?;
        Ok(legacy || meta)
    }

    /// The queue name.
    pub fn name(&self) -> &str {
        self.keys.name()
    }

    pub(crate) fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// The name Bull's `getWorkers()` looks for: connections named `<prefix>:<base64(queue)>`,
    /// or starting with it and `:` (our blocking connections while they wait on this queue).
    pub fn worker_connection_name(&self) -> String {
        self.keys.worker_name_prefix()
    }

    /// Ids among the oldest `limit` active jobs whose lock key does not exist: jobs nobody
    /// holds (a crashed worker's), until a stalled check moves them back. A job between its
    /// move to `active` and its lock (inside one script) is never seen here.
    pub async fn active_without_lock(&self, limit: usize) -> Result<Vec<String>> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.keys.active()).arg(-(limit.max(1) as i64)).arg(-1);
        let ids: Vec<String> = self.conn.query(&cmd).await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.exists(self.keys.lock(id));
        }
        let locked: Vec<bool> = self.conn.query_pipeline(&pipe).await?;
        Ok(ids.into_iter().zip(locked).filter(|(_, locked)| !locked).map(|(id, _)| id).collect())
    }

    /// When the first delayed job is due (ms since the epoch), if there is one.
    pub async fn next_delayed_due(&self) -> Result<Option<u64>> {
        let first: Vec<(String, f64)> =
            self.conn.query(redis::cmd("ZRANGE").arg(self.keys.delayed()).arg(0).arg(0).arg("WITHSCORES")).await?;
        Ok(first.first().map(|(_, score)| due_from_score(*score)))
    }

    /// How many jobs failed at or after `since_ms` (by `finishedOn`, the failed set's score).
    pub async fn failed_since(&self, since_ms: u64) -> Result<u64> {
        self.conn.query(redis::cmd("ZCOUNT").arg(self.keys.failed()).arg(since_ms).arg("+inf")).await
    }
}

/// The queue a key marks, for `<prefix>:<queue>:<marker>` with a [`QUEUE_MARKERS`] marker.
fn queue_of_key<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
    let (queue, marker) = rest.split_once(':')?;
    let is_queue = !queue.is_empty() && queue != HEARTBEAT_NAMESPACE && QUEUE_MARKERS.contains(&marker);
    is_queue.then_some(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_recognised_by_bull_s_keys_only() {
        assert_eq!(queue_of_key("bull", "bull:files:id"), Some("files"));
        assert_eq!(queue_of_key("bull", "bull:files:meta-paused"), Some("files"));
        assert_eq!(queue_of_key("{bull}", "{bull}:q:delayed"), Some("q"));
        assert_eq!(queue_of_key("bull", "bull:files:17"), None);
        assert_eq!(queue_of_key("bull", "bull:files:17:lock"), None);
        assert_eq!(queue_of_key("bull", "bull:__hb__:svc:wait"), None);
        assert_eq!(queue_of_key("bull", "bull:x:files:wait"), None);
        assert_eq!(queue_of_key("bull", "bullx:files:wait"), None);
        assert_eq!(queue_of_key("b:c", "b:c:q:active"), Some("q"));
    }
}
