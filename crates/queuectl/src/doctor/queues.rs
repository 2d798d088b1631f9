//! Queues: discovery by one `SCAN` pass over the prefix, then per queue its counts and live
//! workers, a global pause, active jobs without a lock, overdue delayed jobs and recent failures.

use std::collections::BTreeSet;
use std::time::Duration;

use queue_core::{Connections, HeartbeatRecord, JobCounts, Queue};

use crate::clients::Client;

use super::snapshot::describe;
use super::{Finding, LISTED, Severity, plural};

/// `SCAN ... COUNT` for queue discovery.
pub(super) const SCAN_COUNT: usize = 1000;
/// At most this many active ids (the oldest) are checked for a lock, per queue.
const STUCK_SCAN_LIMIT: usize = 1000;
/// Delay before confirming that active jobs without a lock are still without one.
pub(super) const STUCK_RECHECK: Duration = Duration::from_millis(500);
/// A delayed job this late means nobody promotes it (promoters sleep at most until the next due
/// time, and Bull's `guardInterval` is 5 s).
pub(super) const DELAYED_OVERDUE: Duration = Duration::from_secs(5);
/// Window for "failed-job growth".
pub(super) const FAILED_WINDOW: Duration = Duration::from_secs(60);
/// Keys whose presence under `<prefix>:<queue>:` marks a Bull queue.
const QUEUE_MARKERS: &[&str] = &["id", "wait", "active", "delayed", "paused", "meta-paused", "completed", "failed"];

/// Findings for every queue under `prefix`.
pub(super) async fn queue_findings(
    c: &Connections,
    prefix: &str,
    list: Option<&[Client]>,
    beats: &[HeartbeatRecord],
) -> Vec<Finding> {
    let names = match discover_queues(c, prefix).await {
        Ok(names) => names,
        Err(e) => return vec![Finding::unavailable("queues", "SCAN", &describe(e))],
    };
    if names.is_empty() {
        return vec![Finding::ok("queues", format!("no Bull queue under prefix {prefix:?}"))];
    }
    let mut out = vec![Finding::ok("queues", format!("{} under prefix {prefix:?}", names.len()))];
    for name in names {
        let Ok(queue) = Queue::with_prefix(c, prefix, &name) else { continue };
        let workers = Workers::of(&queue, list, beats);
        out.extend(check_queue(c, &queue, &workers).await);
    }
    out
}

/// The queue a key marks, for `<prefix>:<queue>:<marker>` with a [`QUEUE_MARKERS`] marker.
fn queue_of_key<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
    let (queue, marker) = rest.split_once(':')?;
    let is_queue = !queue.is_empty() && queue != queue_core::HEARTBEAT_NAMESPACE && QUEUE_MARKERS.contains(&marker);
    is_queue.then_some(queue)
}

/// Queue names under `prefix`: one `SCAN` pass (never `KEYS`).
async fn discover_queues(c: &Connections, prefix: &str) -> queue_core::Result<BTreeSet<String>> {
    let pattern = format!("{}:*", queue_core::escape_glob(prefix));
    let mut names = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<Vec<u8>>) = c.command().query(&cmd).await?;
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

/// Who works on one queue: heartbeats listing it, and connections named like Bull's workers.
#[derive(Debug, Default)]
struct Workers {
    /// `service/instance` of each live heartbeat that lists the queue.
    heartbeats: Vec<String>,
    /// Connections named `<prefix>:<base64(queue)>` (Node Bull) or with that label (ours, blocking).
    bull_connections: usize,
}

impl Workers {
    fn of(queue: &Queue, list: Option<&[Client]>, beats: &[HeartbeatRecord]) -> Workers {
        let heartbeats = beats
            .iter()
            .filter(|b| b.queues.iter().any(|q| q == queue.name()))
            .map(|b| format!("{}/{}", b.service, b.instance))
            .collect();
        let label = queue.keys().worker_name_prefix();
        let labelled = format!("{label}:");
        let bull_connections =
            list.unwrap_or_default().iter().filter(|c| c.name == label || c.name.starts_with(&labelled)).count();
        Workers { heartbeats, bull_connections }
    }

    fn any(&self) -> bool {
        !self.heartbeats.is_empty() || self.bull_connections > 0
    }

    fn describe(&self) -> String {
        if !self.any() {
            return "no live worker seen".to_owned();
        }
        let mut parts = Vec::new();
        if !self.heartbeats.is_empty() {
            parts.push(format!("{} with heartbeats ({})", self.heartbeats.len(), self.heartbeats.join(", ")));
        }
        if self.bull_connections > 0 {
            parts.push(format!("{} Bull worker connections", self.bull_connections));
        }
        format!("workers: {}", parts.join(", "))
    }

    /// Warn when a worker runs (it will repair), critical when none does.
    fn severity(&self) -> Severity {
        if self.any() { Severity::Warn } else { Severity::Critical }
    }
}

async fn check_queue(c: &Connections, q: &Queue, workers: &Workers) -> Vec<Finding> {
    let name = q.name();
    let mut out = Vec::new();
    match q.get_job_counts().await {
        Ok(counts) => out.push(queue_summary(name, &counts, workers)),
        Err(e) => out.push(Finding::unavailable("queue", "counts", &describe(e))),
    }
    match q.is_paused().await {
        Ok(true) => out.push(Finding::new(
            "queue-paused",
            Severity::Warn,
            format!("{name}: paused globally, no worker takes its jobs"),
            format!("queuectl resume {name} when it should run again"),
        )),
        Ok(false) => {}
        Err(e) => out.push(Finding::unavailable("queue-paused", "EXISTS", &describe(e))),
    }
    match stuck_jobs(c, q).await {
        Ok(ids) => out.extend(stuck_finding(name, &ids, workers)),
        Err(e) => out.push(Finding::unavailable("stuck-jobs", "LRANGE/EXISTS", &describe(e))),
    }
    match oldest_delayed_due(c, q).await {
        Ok(due) => out.extend(due.and_then(|due| overdue_finding(name, due, queue_core::now_ms(), workers))),
        Err(e) => out.push(Finding::unavailable("overdue-delayed", "ZRANGE", &describe(e))),
    }
    match recent_failures(c, q).await {
        Ok(n) => out.extend(failed_finding(name, n)),
        Err(e) => out.push(Finding::unavailable("failed-jobs", "ZCOUNT", &describe(e))),
    }
    out
}

/// Counts and workers; jobs waiting with no worker seen → warn.
fn queue_summary(name: &str, n: &JobCounts, workers: &Workers) -> Finding {
    let measured = format!(
        "{name}: waiting {}, active {}, delayed {}, completed {}, failed {}, paused {}; {}",
        n.waiting,
        n.active,
        n.delayed,
        n.completed,
        n.failed,
        n.paused,
        workers.describe()
    );
    if n.waiting > 0 && !workers.any() {
        return Finding::new(
            "queue",
            Severity::Warn,
            measured,
            "jobs wait and no worker was seen (no heartbeat, no Bull worker connection): start a worker",
        );
    }
    Finding::ok("queue", measured)
}

/// Ids among the oldest [`STUCK_SCAN_LIMIT`] active jobs whose lock key does not exist.
async fn active_without_lock(c: &Connections, q: &Queue) -> queue_core::Result<Vec<String>> {
    let keys = q.keys();
    let ids: Vec<String> =
        c.command().query(redis::cmd("LRANGE").arg(keys.active()).arg(-(STUCK_SCAN_LIMIT as i64)).arg(-1)).await?;
    if ids.is_empty() {
        return Ok(ids);
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.exists(keys.lock(id));
    }
    let locked: Vec<bool> = c.command().query_pipeline(&pipe).await?;
    Ok(ids.into_iter().zip(locked).filter(|(_, locked)| !locked).map(|(id, _)| id).collect())
}

/// Active jobs without a lock, confirmed [`STUCK_RECHECK`] later.
async fn stuck_jobs(c: &Connections, q: &Queue) -> queue_core::Result<Vec<String>> {
    let first = active_without_lock(c, q).await?;
    if first.is_empty() {
        return Ok(first);
    }
    tokio::time::sleep(STUCK_RECHECK).await;
    let second: BTreeSet<String> = active_without_lock(c, q).await?.into_iter().collect();
    Ok(first.into_iter().filter(|id| second.contains(id)).collect())
}

fn stuck_finding(name: &str, ids: &[String], workers: &Workers) -> Option<Finding> {
    if ids.is_empty() {
        return None;
    }
    let listed = ids.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    let advice = if workers.any() {
        "a worker runs: its stalled check moves them back to waiting after lockDuration + stalledInterval"
    } else {
        "no worker runs, so nothing recovers them: start a worker (its stalled check moves them back to waiting)"
    };
    Some(Finding::new(
        "stuck-jobs",
        workers.severity(),
        format!("{name}: {} without a lock ({listed}); {}", plural(ids.len() as u64, "active job"), workers.describe()),
        advice,
    ))
}

/// The due time (ms) of the job that is due first, if any.
async fn oldest_delayed_due(c: &Connections, q: &Queue) -> queue_core::Result<Option<u64>> {
    let first: Vec<(String, f64)> =
        c.command().query(redis::cmd("ZRANGE").arg(q.keys().delayed()).arg(0).arg(0).arg("WITHSCORES")).await?;
    Ok(first.first().map(|(_, score)| queue_core::due_from_score(*score)))
}

fn overdue_finding(name: &str, due_ms: u64, now_ms: u64, workers: &Workers) -> Option<Finding> {
    let late = Duration::from_millis(now_ms.saturating_sub(due_ms));
    if late <= DELAYED_OVERDUE {
        return None;
    }
    let advice = if workers.any() {
        "a worker runs but does not promote delayed jobs: check its logs (promoter errors) and clock"
    } else {
        "no worker runs, so nobody promotes delayed jobs: start a worker, or queuectl promote"
    };
    Some(Finding::new(
        "overdue-delayed",
        workers.severity(),
        format!("{name}: the first delayed job is {} s overdue; {}", late.as_secs(), workers.describe()),
        advice,
    ))
}

/// Jobs in `failed` whose score (finishedOn) is within the last [`FAILED_WINDOW`].
async fn recent_failures(c: &Connections, q: &Queue) -> queue_core::Result<u64> {
    let since = queue_core::now_ms().saturating_sub(FAILED_WINDOW.as_millis() as u64);
    c.command().query(redis::cmd("ZCOUNT").arg(q.keys().failed()).arg(since).arg("+inf")).await
}

fn failed_finding(name: &str, recent: u64) -> Option<Finding> {
    (recent > 0).then(|| {
        Finding::new(
            "failed-jobs",
            Severity::Warn,
            format!("{name}: {} failed for good in the last {} s", plural(recent, "job"), FAILED_WINDOW.as_secs()),
            format!("queuectl jobs {name} --state failed shows why; queuectl retry {name} --all once fixed"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_are_recognised() {
        assert_eq!(queue_of_key("bull", "bull:files:id"), Some("files"));
        assert_eq!(queue_of_key("bull", "bull:files:meta-paused"), Some("files"));
        assert_eq!(queue_of_key("{bull}", "{bull}:q:delayed"), Some("q"));
        assert_eq!(queue_of_key("bull", "bull:files:17"), None);
        assert_eq!(queue_of_key("bull", "bull:files:17:lock"), None);
        assert_eq!(queue_of_key("bull", "bull:__hb__:svc:wait"), None);
        assert_eq!(queue_of_key("bull", "bull:x:files:wait"), None);
        assert_eq!(queue_of_key("bull", "bullx:files:wait"), None);
        assert_eq!(queue_core::escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn queue_decisions_depend_on_live_workers() {
        let none = Workers::default();
        let some = Workers { heartbeats: vec!["svc/h-1".into()], bull_connections: 0 };
        let ids = vec!["7".to_owned()];
        assert_eq!(stuck_finding("q", &ids, &none).map(|f| f.severity), Some(Severity::Critical));
        assert_eq!(stuck_finding("q", &ids, &some).map(|f| f.severity), Some(Severity::Warn));
        assert!(stuck_finding("q", &[], &none).is_none());
        let now = 1_800_000_000_000;
        assert_eq!(overdue_finding("q", now - 60_000, now, &none).map(|f| f.severity), Some(Severity::Critical));
        assert_eq!(overdue_finding("q", now - 60_000, now, &some).map(|f| f.severity), Some(Severity::Warn));
        assert!(overdue_finding("q", now - 2_000, now, &none).is_none());
        assert!(failed_finding("q", 0).is_none());
        let waiting = JobCounts { waiting: 3, ..Default::default() };
        assert_eq!(queue_summary("q", &waiting, &none).severity, Severity::Warn);
        assert_eq!(queue_summary("q", &waiting, &some).severity, Severity::Ok);
    }
}
