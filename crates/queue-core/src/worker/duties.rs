//! The background loops every worker runs: pub/sub wake-ups, lock renewal, the stalled-job
//! check and delayed promotion, all on the Redis runtime, never on the handler runtime.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{QueueState, Shared};
use crate::bull::scripts;
use crate::clock::now_ms;
use crate::connection::subscriber::SubscriberEvent;
use crate::error::Result;

/// Wakes fetchers and promoters on Bull's messages: `waiting@*` (zero-blocking mode), `resumed`,
/// and `delayed` when it announces a job due earlier than the promoter's next run. After a
/// reconnect or a lag, messages may be lost: everything is woken.
pub(super) async fn listen(mut events: broadcast::Receiver<SubscriberEvent>, queues: Vec<Arc<QueueState>>) {
    loop {
        match events.recv().await {
            Ok(SubscriberEvent::Message(m)) => {
                for q in &queues {
                    let keys = q.queue.keys();
                    if m.channel == keys.delayed_channel() {
                        let due = m.payload.parse::<f64>().map_or(0, |v| v.ceil() as u64);
                        if due < q.next_due.load(Ordering::Acquire) {
                            q.delayed_wake.notify_one();
                        }
                    } else if m.channel.starts_with(keys.base()) {
                        q.wake.notify_one();
                    }
                }
            }
            Ok(SubscriberEvent::Reconnected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                for q in &queues {
                    q.wake.notify_one();
                    q.delayed_wake.notify_one();
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Every `lock_renew_time`, renews the lock of every job in hand, all queues at once, each with
/// the lock value of its own activation. A job whose lock is gone or taken is marked lost.
pub(super) async fn renew_locks(shared: Arc<Shared>, queues: Vec<Arc<QueueState>>) {
    let mut tick = tokio::time::interval(shared.settings.lock_renew_time);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut renewals = tokio::task::JoinSet::new();
        for q in &queues {
            let held: Vec<(String, String)> =
                q.active.lock().expect("active lock").iter().map(|(id, e)| (id.clone(), e.lock.clone())).collect();
            if held.is_empty() {
                continue;
            }
            let (shared, q) = (shared.clone(), q.clone());
            renewals.spawn(async move { renew(&shared, &q, held).await });
        }
        while renewals.join_next().await.is_some() {}
    }
}

/// Renews the locks of `held`, [`Slices::renew`](crate::Slices::renew) per call.
async fn renew(shared: &Shared, q: &QueueState, held: Vec<(String, String)>) {
    for held in held.chunks(shared.settings.slices.renew) {
        let renewal = scripts::ExtendLocks { keys: q.queue.keys(), lock_duration: shared.settings.lock_duration, held };
        match renewal.run(q.queue.connection()).await {
            Ok(lost) => {
                let renewed = held.len().saturating_sub(lost.len()) as u64;
                shared.counters.locks_renewed.fetch_add(renewed, Ordering::Relaxed);
                let active = q.active.lock().expect("active lock");
                for id in lost {
                    // Only the activation this renewal was for; a newer one has a lock of its own.
                    let Some(lock) = held.iter().find(|(held_id, _)| *held_id == id).map(|(_, lock)| lock) else {
                        continue;
                    };
                    // A job that is gone from the map, or whose outcome is being recorded, took
                    // its own lock away: the renewal raced its finish.
                    if let Some(entry) = active.get(&id).filter(|e| &e.lock == lock)
                        && !entry.finishing.load(Ordering::Acquire)
                        && !entry.lost.swap(true, Ordering::AcqRel)
                    {
                        shared.counters.locks_lost_at_renewal.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(queue = q.queue.name(), id, "lock lost while the job was running");
                    }
                }
            }
            Err(e) => {
                shared.counters.lock_renewal_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(queue = q.queue.name(), error = %e, "lock renewal failed");
            }
        }
    }
}

/// Every `stalled_interval`, runs the stalled check of each queue (unless another worker, Node
/// or Rust, ran it within the interval).
pub(super) async fn check_stalled(shared: Arc<Shared>, queues: Vec<Arc<QueueState>>) {
    let mut tick = tokio::time::interval(shared.settings.stalled_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for q in &queues {
            match check_queue_stalled(&shared, q).await {
                Ok((failed, recovered)) => {
                    if failed > 0 || recovered > 0 {
                        tracing::warn!(queue = q.queue.name(), failed, recovered, "stalled jobs handled");
                    }
                }
                Err(e) => tracing::warn!(queue = q.queue.name(), error = %e, "stalled check failed"),
            }
        }
    }
}

/// One stalled check of `q`, a call per [`Slices::stalled`](crate::Slices::stalled) active jobs,
/// until it is done; returns how many jobs it failed and recovered. Aborted between two calls
/// (the worker closing), it leaves a consistent queue: the jobs it did not look at are
/// recovered by the next check.
async fn check_queue_stalled(shared: &Shared, q: &QueueState) -> Result<(u64, u64)> {
    let (mut failed, mut recovered) = (0, 0);
    let mut step = scripts::StalledStep::start();
    while step.phase != scripts::StalledPhase::Done {
        let check = scripts::MoveStalledJobsToWait {
            keys: q.queue.keys(),
            max_stalled_count: shared.settings.max_stalled_count,
            now: now_ms(),
            stalled_interval: shared.settings.stalled_interval,
            step: &step,
            slice: shared.settings.slices.stalled,
            keep_slice: shared.settings.slices.keep,
        };
        let slice = check.run(q.queue.connection()).await?;
        if !slice.failed.is_empty() || !slice.recovered.is_empty() {
            tracing::debug!(queue = q.queue.name(), failed = ?slice.failed, recovered = ?slice.recovered, "stalled jobs");
        }
        failed += slice.failed.len() as u64;
        recovered += slice.recovered.len() as u64;
        shared.counters.stalled_failed.fetch_add(slice.failed.len() as u64, Ordering::Relaxed);
        shared.counters.stalled_recovered.fetch_add(slice.recovered.len() as u64, Ordering::Relaxed);
        if !slice.recovered.is_empty() {
            q.wake.notify_one();
        }
        step = slice.next;
    }
    Ok((failed, recovered))
}

/// Promotes the due delayed jobs of `q`, [`Slices::promote`](crate::Slices::promote) per call;
/// a full slice is followed at once by the next call. Then sleeps until the next job is due,
/// at most `guard_interval`, or until a `delayed` message announces an earlier one.
pub(super) async fn promote_delayed(shared: Arc<Shared>, q: Arc<QueueState>) {
    let guard = shared.settings.guard_interval;
    loop {
        let now = now_ms();
        let promotion = scripts::PromoteDelayed {
            keys: q.queue.keys(),
            due_by: Some(now),
            token: &shared.token,
            slice: shared.settings.slices.promote,
        };
        let wait = match promotion.run(q.queue.connection()).await {
            Ok(promoted) if promoted.count >= shared.settings.slices.promote => Duration::ZERO,
            Ok(promoted) => match promoted.next_due {
                Some(due) => {
                    q.next_due.store(due, Ordering::Release);
                    // Promotion takes due < now, so wake a millisecond after the due time.
                    Duration::from_millis(due.saturating_sub(now) + 1).min(guard)
                }
                None => {
                    q.next_due.store(u64::MAX, Ordering::Release);
                    guard
                }
            },
            Err(e) => {
                tracing::warn!(queue = q.queue.name(), error = %e, "promoting delayed jobs failed");
                shared.settings.error_backoff
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = q.delayed_wake.notified() => {}
            }
        }
        if shared.stopped() {
            return;
        }
    }
}
