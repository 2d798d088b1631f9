//! Taking jobs: the fetch loop of one queue, in blocking or zero-blocking mode.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::taken::{Fetched, parse_taken};
use super::{QueueState, Shared, StopWhen, attempt};
use crate::bull::scripts;
use crate::clock::now_ms;
use crate::error::Result;

/// How often the activation of an id that a blocking pop already moved to `active` is retried
/// before it is left to the stalled check.
const ACTIVATION_TRIES: u32 = 3;

pub(super) async fn fetch_loop(shared: Arc<Shared>, q: Arc<QueueState>) {
    let mut failures = 0u32;
    loop {
        if !shared.may_take(&q) {
            return;
        }
        let slot = tokio::select! {
            slot = q.slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            _ = shared.stop_requested() => return,
        };
        // Under StopWhen::MaxJobs, one of the takes left, held through the fetch (a blocking pop
        // included) and given back when it takes nothing.
        let take = tokio::select! {
            take = shared.takes.reserve() => take,
            _ = shared.stop_requested() => return,
        };
        if !shared.may_take(&q) {
            return;
        }
        match fetch(&shared, &q).await {
            Ok(Fetched::Job(taken)) => {
                failures = 0;
                shared.taken(take);
                let holding = shared.hold();
                let (shared, q) = (shared.clone(), q.clone());
                tokio::spawn(async move {
                    attempt::process(shared, q, taken).await;
                    drop(holding);
                    drop(slot);
                });
            }
            Ok(Fetched::Again) => failures = 0,
            Ok(Fetched::Idle) => {
                failures = 0;
                drop(slot);
                if shared.settings.stop_when == StopWhen::Drained {
                    shared.found_drained(&q);
                    return;
                }
                if !shared.blocking {
                    tokio::select! {
                        _ = q.wake.notified() => {}
                        _ = shared.nap(shared.settings.drain_delay) => {}
                    }
                }
            }
            Err(e) => {
                drop(slot);
                failures += 1;
                tracing::warn!(queue = q.queue.name(), error = %e, failures, "fetching a job failed");
                shared.nap(shared.settings.error_backoff.mul_f64(f64::from(failures.min(5)))).await;
            }
        }
    }
}

/// One fetch. In blocking mode a queue that was found drained goes straight to the blocking pop
/// (as Bull does), so an idle worker neither polls nor republishes `drained`. Under
/// [`StopWhen::Drained`] there is no pop: finding the queue empty is the end.
async fn fetch(shared: &Shared, q: &QueueState) -> Result<Fetched> {
    let pop = shared.blocking && shared.settings.stop_when != StopWhen::Drained;
    if !(pop && q.drained.load(Ordering::Acquire)) {
        let taken = move_to_active(shared, q, "").await?;
        if !matches!(taken, Fetched::Idle) || !pop {
            return Ok(taken);
        }
    }
    // A stop asked while `moveToActive` ran: do not start a pop only to end it.
    if shared.stop_asked() {
        return Ok(Fetched::Idle);
    }
    let Some(pool) = shared.connections.blocking() else { return Ok(Fetched::Idle) };
    let keys = q.queue.keys();
    // Asked to stop, the pop is ended with CLIENT UNBLOCK: it returns what the server already
    // moved to `active` (then activated and processed like any job) or nothing.
    let (wait, active) = (keys.wait(), keys.active());
    let stop = shared.stop_requested();
    let drain = shared.settings.drain_delay;
    let popped = pool.blmove_interruptible(&wait, &active, drain, Some(&q.label), stop, q.queue.connection()).await?;
    let Some(id) = popped else { return Ok(Fetched::Idle) };
    // The id is in `active` without a lock until the activation succeeds; retrying it is safe.
    let mut tries = 0;
    loop {
        tries += 1;
        match move_to_active(shared, q, &id).await {
            Err(e) if e.is_retryable() && tries < ACTIVATION_TRIES => {
                tracing::warn!(queue = q.queue.name(), id, error = %e, "activating a popped job failed; retrying");
                tokio::time::sleep(shared.settings.error_backoff).await;
            }
            other => return other,
        }
    }
}

/// Runs `moveToActive` for `id` (a job a blocking pop moved) or for the next waiting job ("").
pub(super) async fn move_to_active(shared: &Shared, q: &QueueState, id: &str) -> Result<Fetched> {
    let lock = shared.next_lock();
    let reply = scripts::MoveToActive {
        keys: q.queue.keys(),
        lock: &lock,
        lock_duration: shared.settings.lock_duration,
        now: now_ms(),
        popped: id,
        limiter: q.limiter.map(|l| scripts::Limiter { max: l.max, duration: l.duration, per_group: l.per_group }),
        worker_token: &shared.token,
        publish_drained: !q.drained.load(Ordering::Acquire),
    }
    .run(q.queue.connection())
    .await?;
    let fetched = parse_taken(reply, q.queue.name(), lock)?;
    q.drained.store(matches!(fetched, Fetched::Idle), Ordering::Release);
    Ok(fetched)
}
