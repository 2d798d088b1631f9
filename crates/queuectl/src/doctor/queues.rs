//! Queues: discovery by one `SCAN` pass over the prefix, then per queue its counts and live
//! workers, a global pause, active jobs without a lock, overdue delayed jobs and recent failures.

use std::collections::BTreeSet;
use std::time::Duration;

use queue_core::tooling::now_ms;
use queue_core::{Connections, HeartbeatRecord, JobCounts, QueueView};

use inspect::clients::Client;

use super::snapshot::describe;
use super::{Finding, LISTED, Severity, plural};

/// At most this many active ids (the oldest) are checked for a lock, per queue.
const STUCK_SCAN_LIMIT: usize = 1000;
/// Delay before confirming that active jobs without a lock are still without one.
pub(super) const STUCK_RECHECK: Duration = Duration::from_millis(500);
/// A delayed job this late means nobody promotes it (promoters sleep at most until the next due
/// time, and Bull's `guardInterval` is 5 s).
pub(super) const DELAYED_OVERDUE: Duration = Duration::from_secs(5);
/// Window for "failed-job growth".
pub(super) const FAILED_WINDOW: Duration = Duration::from_secs(60);

/// Findings for every queue under `prefix`.
pub(super) async fn queue_findings(
    c: &Connections,
    prefix: &str,
    list: Option<&[Client]>,
    beats: &[HeartbeatRecord],
) -> Vec<Finding> {
    let names = match QueueView::discover(c, prefix).await {
        Ok(names) => names,
        Err(e) => return vec![Finding::unavailable("queues", "SCAN", &describe(e))],
    };
    if names.is_empty() {
        return vec![Finding::ok("queues", format!("no Bull queue under prefix {prefix:?}"))];
    }
    let mut out = vec![Finding::ok("queues", format!("{} under prefix {prefix:?}", names.len()))];
    for name in names {
        let Ok(queue) = QueueView::with_prefix(c, prefix, &name) else { continue };
        let workers = Workers::of(&queue, list, beats);
        out.extend(check_queue(&queue, &workers).await);
    }
    out
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
    fn of(queue: &QueueView, list: Option<&[Client]>, beats: &[HeartbeatRecord]) -> Workers {
        let heartbeats = beats
            .iter()
            .filter(|b| b.queues.iter().any(|q| q == queue.name()))
            .map(|b| format!("{}/{}", b.service, b.instance))
            .collect();
        let label = queue.worker_connection_name();
        // tidy: not a key (a connection-name prefix)
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

async fn check_queue(q: &QueueView, workers: &Workers) -> Vec<Finding> {
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
    match stuck_jobs(q).await {
        Ok(ids) => out.extend(stuck_finding(name, &ids, workers)),
        Err(e) => out.push(Finding::unavailable("stuck-jobs", "LRANGE/EXISTS", &describe(e))),
    }
    match q.next_delayed_due().await {
        Ok(due) => out.extend(due.and_then(|due| overdue_finding(name, due, now_ms(), workers))),
        Err(e) => out.push(Finding::unavailable("overdue-delayed", "ZRANGE", &describe(e))),
    }
    match q.failed_since(now_ms().saturating_sub(FAILED_WINDOW.as_millis() as u64)).await {
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

/// Active jobs without a lock, confirmed [`STUCK_RECHECK`] later.
async fn stuck_jobs(q: &QueueView) -> queue_core::Result<Vec<String>> {
    let first = q.active_without_lock(STUCK_SCAN_LIMIT).await?;
    if first.is_empty() {
        return Ok(first);
    }
    tokio::time::sleep(STUCK_RECHECK).await;
    let second: BTreeSet<String> = q.active_without_lock(STUCK_SCAN_LIMIT).await?.into_iter().collect();
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
