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

async fn renew(shared: &Shared, q: &QueueState, held: Vec<(String, String)>) {
    let renewal =
        scripts::ExtendLocks { keys: q.queue.keys(), lock_duration: shared.settings.lock_duration, held: &held };
    match renewal.run(q.queue.connection()).await {
        Ok(lost) => {
            let active = q.active.lock().expect("active lock");
            for id in lost {
                // Only the activation this renewal was for; a newer one has a lock of its own.
                let Some(lock) = held.iter().find(|(held_id, _)| *held_id == id).map(|(_, lock)| lock) else {
                    continue;
                };
                if let Some(entry) = active.get(&id).filter(|e| &e.lock == lock)
                    && !entry.lost.swap(true, Ordering::AcqRel)
                {
                    tracing::warn!(queue = q.queue.name(), id, "lock lost while the job was running");
                }
            }
        }
        Err(e) => tracing::warn!(queue = q.queue.name(), error = %e, "lock renewal failed"),
    }
}

pub(super) async fn check_stalled(shared: Arc<Shared>, queues: Vec<Arc<QueueState>>) {
    let mut tick = tokio::time::interval(shared.settings.stalled_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for q in &queues {
            let check = scripts::MoveStalledJobsToWait {
                keys: q.queue.keys(),
                max_stalled_count: shared.settings.max_stalled_count,
                now: now_ms(),
                stalled_interval: shared.settings.stalled_interval,
            };
            match check.run(q.queue.connection()).await {
                Ok(scripts::Stalled { failed, recovered }) => {
                    if !failed.is_empty() || !recovered.is_empty() {
                        tracing::warn!(queue = q.queue.name(), ?failed, ?recovered, "stalled jobs handled");
                    }
                    shared.counters.stalled_failed.fetch_add(failed.len() as u64, Ordering::Relaxed);
                    shared.counters.stalled_recovered.fetch_add(recovered.len() as u64, Ordering::Relaxed);
                    if !recovered.is_empty() {
                        q.wake.notify_one();
                    }
                }
                Err(e) => tracing::warn!(queue = q.queue.name(), error = %e, "stalled check failed"),
            }
        }
    }
}

pub(super) async fn promote_delayed(shared: Arc<Shared>, q: Arc<QueueState>) {
    let guard = shared.settings.guard_interval;
    loop {
        let now = now_ms();
        let promotion = scripts::PromoteDelayed { keys: q.queue.keys(), now, token: &shared.token };
        let wait = match promotion.run(q.queue.connection()).await {
            Ok(Some(due)) => {
                q.next_due.store(due, Ordering::Release);
                // Promotion takes due < now, so wake a millisecond after the due time.
                Duration::from_millis(due.saturating_sub(now) + 1).min(guard)
            }
            Ok(None) => {
                q.next_due.store(u64::MAX, Ordering::Release);
                guard
            }
            Err(e) => {
                tracing::warn!(queue = q.queue.name(), error = %e, "promoting delayed jobs failed");
                shared.settings.error_backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = q.delayed_wake.notified() => {}
        }
        if shared.stopped() {
            return;
        }
    }
}
