//! Running one attempt of a job and recording its outcome.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::taken::{Fetched, Taken, parse_taken};
use super::{ActiveEntry, QueueState, Shared};
use crate::bull::job::Job;
use crate::bull::scripts::{CompleteJob, FailAction, FailJob, Recorded};
use crate::clock::now_ms;
use crate::error::Error;
use crate::handler::{ActiveJob, Outcome};

/// How often scheduling the next iteration of a repeatable job is tried before the job is left
/// to stall recovery (running it without scheduling would end the repeatable for good).
const REPEAT_TRIES: u32 = 3;

/// Keeps a job in its queue's `active` map (so its lock is renewed) until dropped, also when
/// the task unwinds. Removes only its own activation: a newer activation of the same id stays.
struct InHand<'a> {
    q: &'a QueueState,
    id: String,
    entry: ActiveEntry,
}

impl<'a> InHand<'a> {
    fn new(q: &'a QueueState, id: &str, lock: &str) -> Self {
        let entry = ActiveEntry {
            lock: lock.to_owned(),
            lost: Arc::new(AtomicBool::new(false)),
            finishing: Arc::new(AtomicBool::new(false)),
        };
        q.active.lock().expect("active lock").insert(id.to_owned(), entry.clone());
        InHand { q, id: id.to_owned(), entry }
    }
}

impl Drop for InHand<'_> {
    fn drop(&mut self) {
        let mut active = self.q.active.lock().expect("active lock");
        if active.get(&self.id).is_some_and(|e| e.lock == self.entry.lock) {
            active.remove(&self.id);
        }
    }
}

/// Runs a taken job, then the jobs its completions fetch, until one completion fetches none.
pub(super) async fn process(shared: Arc<Shared>, q: Arc<QueueState>, mut taken: Taken) {
    loop {
        let in_hand = InHand::new(&q, &taken.id, &taken.lock);
        let job = &taken.job;
        let span = tracing::info_span!("job", queue = q.queue.name(), id = %taken.id, name = %job.name, attempt = job.attempts_made + 1);
        let next = async {
            let outcome = run_attempt(&shared, &q, job, in_hand.entry.lost.clone()).await?;
            if shared.abandoned.load(Ordering::Acquire) {
                tracing::warn!("worker closed before the job finished; leaving it to stall recovery");
                return None;
            }
            // Fetching the next job is a take like any other: under StopWhen::MaxJobs it needs
            // one of the takes left.
            let take = (matches!(outcome, Outcome::Completed(_)) && q.limiter.is_none())
                .then(|| shared.try_take(&q))
                .flatten();
            in_hand.entry.finishing.store(true, Ordering::Release);
            let next = finish(&shared, &q, job, &taken.lock, outcome, take.is_some(), &in_hand.entry.lost).await;
            if let (Some(take), Some(_)) = (take, &next) {
                shared.taken(take);
            }
            next
        }
        .instrument(span)
        .await;
        drop(in_hand);
        match next {
            Some(next) => taken = next,
            None => return,
        }
    }
}

/// Runs the handler for one attempt. `None` leaves the job to stall recovery without running it.
async fn run_attempt(shared: &Shared, q: &QueueState, job: &Job, lost: Arc<AtomicBool>) -> Option<Outcome> {
    if let Some(reason) = &job.malformed {
        tracing::warn!(reason, "failing a malformed job");
        return Some(Outcome::Unrecoverable(reason.clone()));
    }
    if job.opts.repeat.is_some() && !schedule_next_iteration(shared, q, job).await {
        return None;
    }
    let active = ActiveJob::new(Arc::new(job.clone()), q.queue.clone(), lost);
    let handler = q.handler.clone();
    // The handler closure itself runs on the handler runtime too, so a panic before its
    // future exists is a failed attempt like any other.
    let task = shared.handlers.spawn(async move { handler(active).await });
    let abort = task.abort_handle();
    let joined = match job.opts.timeout.filter(|ms| *ms > 0) {
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), task).await {
            Ok(joined) => joined,
            Err(_) => {
                abort.abort();
                return Some(Outcome::Retry(format!("Promise timed out after {ms} milliseconds")));
            }
        },
        None => task.await,
    };
    Some(match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Outcome::Retry(format!("handler panicked: {}", panic_message(e.into_panic()))),
        Err(e) => Outcome::Retry(format!("handler task ended: {e}")),
    })
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Adds the next iteration of a repeatable job before its handler runs, as Bull does. Returns
/// false when that kept failing: the job is then left to stall recovery, which takes it again.
async fn schedule_next_iteration(shared: &Shared, q: &QueueState, job: &Job) -> bool {
    for attempt in 1..=REPEAT_TRIES {
        match q.queue.add_next_iteration(job).await {
            Ok(_) => return true,
            Err(e) if e.is_retryable() && attempt < REPEAT_TRIES => {
                tracing::warn!(error = %e, attempt, "scheduling the next iteration failed; retrying");
                tokio::time::sleep(shared.settings.error_backoff).await;
            }
            Err(e) if e.is_retryable() => {
                tracing::error!(error = %e, "could not schedule the next iteration; leaving the job to stall recovery");
                return false;
            }
            Err(e) => {
                // Not transient (e.g. an invalid cron in a Node-made job): retrying will not help.
                tracing::warn!(error = %e, "the repeatable job has no valid next iteration");
                return true;
            }
        }
    }
    false
}

/// What a failed attempt leads to.
#[derive(Debug, PartialEq)]
pub(super) enum Next {
    RetryNow,
    RetryAt(u64),
    Fail(String),
}

pub(super) fn after_failure(q: &QueueState, job: &Job, outcome: &Outcome, attempts_made: u64, now: u64) -> Next {
    let attempts = job.opts.attempts.unwrap_or(1).max(1);
    let reason = match outcome {
        Outcome::Retry(r) | Outcome::RetryAfter(_, r) | Outcome::Unrecoverable(r) => r.clone(),
        Outcome::Completed(_) => String::new(),
    };
    if matches!(outcome, Outcome::Unrecoverable(_)) || attempts_made >= attempts {
        return Next::Fail(reason);
    }
    if let Outcome::RetryAfter(d, _) = outcome {
        return if d.is_zero() { Next::RetryNow } else { Next::RetryAt(now + d.as_millis() as u64) };
    }
    let Some(backoff) = &job.opts.backoff else { return Next::RetryNow };
    let delay = match backoff.builtin_delay(attempts_made as u32) {
        Some(ms) => Some(ms as i64),
        None => match q.strategies.get(&backoff.kind) {
            Some(strategy) => {
                let decided = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    strategy(attempts_made, &reason, backoff.options.as_ref())
                }));
                match decided {
                    Ok(delay) => delay,
                    Err(payload) => {
                        return Next::Fail(format!(
                            "backoff strategy {} panicked: {}",
                            backoff.kind,
                            panic_message(payload)
                        ));
                    }
                }
            }
            None => {
                return Next::Fail(format!(
                    "Unknown backoff strategy {}. If a custom backoff strategy is used, specify it when the queue is created.",
                    backoff.kind
                ));
            }
        },
    };
    match delay {
        Some(-1) => Next::Fail(reason),
        Some(ms) if ms > 0 => Next::RetryAt(now + ms as u64),
        _ => Next::RetryNow,
    }
}

/// Records the outcome; returns the next job when the completion fetched one. A call that fails
/// with a retryable error is repeated, with the job still in hand (its lock renewed), for up to
/// half a lock duration: a repeat after a lost reply finds the lock gone and changes nothing.
async fn finish(
    shared: &Shared,
    q: &QueueState,
    job: &Job,
    lock: &str,
    outcome: Outcome,
    fetch_next: bool,
    lost: &AtomicBool,
) -> Option<Taken> {
    let now = now_ms();
    let next_lock = shared.next_lock();
    let (call, decided) = match &outcome {
        Outcome::Completed(value) => {
            (Call::Complete(completion(shared, q, job, lock, value, fetch_next, &next_lock, now)), None)
        }
        failure => {
            let attempts_made = job.attempts_made + 1;
            let next = after_failure(q, job, failure, attempts_made, now);
            (Call::Fail(failure_call(shared, q, job, lock, failure, &next, attempts_made, now)), Some(next))
        }
    };
    let deadline = Instant::now() + shared.settings.lock_duration / 2;
    let mut repeated = false;
    let reply = loop {
        let recorded = match &call {
            Call::Complete(complete) => complete.run(q.queue.connection()).await,
            Call::Fail(fail) => fail.run(q.queue.connection()).await,
        };
        match recorded {
            Ok(reply) => break reply,
            Err(e) if e.is_retryable() && Instant::now() < deadline && !shared.abandoned.load(Ordering::Acquire) => {
                tracing::warn!(error = %e, "recording the outcome failed; retrying");
                // A server that said to wait ran nothing; any other failure may have lost the
                // reply of a call that did the work.
                repeated |= !e.is_server_busy();
                tokio::time::sleep(shared.settings.error_backoff.min(Duration::from_millis(250))).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record the job's outcome; stall recovery will retry it");
                return None;
            }
        }
    };
    match reply {
        Recorded::Done(None) => {
            count(shared, decided.as_ref());
            None
        }
        Recorded::Refused(Error::LockLost { .. } | Error::WrongState { .. }) if repeated => {
            // An earlier call whose reply was lost did the work.
            count(shared, decided.as_ref());
            None
        }
        Recorded::Refused(e @ Error::LockLost { .. }) => {
            lost.store(true, Ordering::Release);
            shared.counters.lost_locks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "result discarded: another worker owns the job now");
            None
        }
        Recorded::Refused(e) => {
            tracing::warn!(error = %e, "result discarded");
            None
        }
        Recorded::Done(Some(fetched)) => {
            count(shared, decided.as_ref());
            match parse_taken(fetched, q.queue.name(), next_lock) {
                Ok(Fetched::Job(taken)) => Some(taken),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "unexpected reply when fetching the next job");
                    None
                }
            }
        }
    }
}

/// The script that records an attempt's outcome.
enum Call<'a> {
    Complete(CompleteJob<'a>),
    Fail(FailJob<'a>),
}

#[allow(clippy::too_many_arguments)]
fn completion<'a>(
    shared: &'a Shared,
    q: &'a QueueState,
    job: &'a Job,
    lock: &'a str,
    value: &'a serde_json::Value,
    fetch_next: bool,
    next_lock: &'a str,
    now: u64,
) -> CompleteJob<'a> {
    CompleteJob {
        keys: q.queue.keys(),
        job_id: &job.id,
        lock,
        now,
        returnvalue: value,
        keep: job.opts.remove_on_complete.as_ref(),
        fetch_next,
        lock_duration: shared.settings.lock_duration,
        debounced: job.debounce_id.is_some(),
        next_lock,
        worker_token: &shared.token,
        keep_slice: shared.settings.slices.keep,
    }
}

#[allow(clippy::too_many_arguments)]
fn failure_call<'a>(
    shared: &Shared,
    q: &'a QueueState,
    job: &'a Job,
    lock: &'a str,
    failure: &Outcome,
    next: &Next,
    attempts_made: u64,
    now: u64,
) -> FailJob<'a> {
    let reason = match (next, failure) {
        (Next::Fail(reason), _) => reason.clone(),
        (_, Outcome::Retry(r) | Outcome::RetryAfter(_, r) | Outcome::Unrecoverable(r)) => r.clone(),
        (_, Outcome::Completed(_)) => String::new(),
    };
    let mut stacktrace = job.stacktrace.clone();
    stacktrace.push(reason.clone());
    if let Some(limit) = job.opts.stack_trace_limit.filter(|l| *l > 0) {
        let excess = stacktrace.len().saturating_sub(limit as usize);
        stacktrace.drain(..excess);
    }
    let action = match next {
        Next::RetryNow => FailAction::Retry,
        Next::RetryAt(due) => FailAction::Delay(*due),
        Next::Fail(_) => FailAction::Fail,
    };
    tracing::info!(mode = action.mode(), reason, "attempt failed");
    FailJob {
        keys: q.queue.keys(),
        job_id: &job.id,
        lock,
        now,
        reason,
        stacktrace,
        attempts_made,
        action,
        keep: job.opts.remove_on_fail.as_ref(),
        keep_slice: shared.settings.slices.keep,
    }
}

/// Counts a recorded outcome: a completion (`None`), a retry or a final failure.
fn count(shared: &Shared, decided: Option<&Next>) {
    let c = &shared.counters;
    let counter = match decided {
        None => &c.completed,
        Some(Next::Fail(_)) => &c.failed,
        Some(_) => &c.retried,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use serde_json::{Value, json};
    use tokio::sync::{Notify, Semaphore};

    use super::*;
    use crate::bull::options::{Backoff, JobOptions};
    use crate::connections::Connections;
    use crate::queue::Queue;
    use crate::worker::BackoffStrategy;

    fn state(strategies: HashMap<String, BackoffStrategy>) -> QueueState {
        let connections = Connections::builder(
            crate::connection::config::RedisConfig::new(
                crate::connection::config::RedisUrl::parse("redis://127.0.0.1:1").unwrap(),
            ),
            "t",
        )
        .build()
        .unwrap();
        QueueState {
            queue: Queue::new(&connections, "q").unwrap(),
            handler: crate::handler::handler(|_| async { Outcome::Completed(Value::Null) }),
            limiter: None,
            strategies,
            slots: Arc::new(Semaphore::new(1)),
            active: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            delayed_wake: Notify::new(),
            next_due: AtomicU64::new(0),
            drained: AtomicBool::new(false),
            exhausted: AtomicBool::new(false),
            label: String::new(),
        }
    }

    fn job(opts: JobOptions) -> Job {
        let mut job = Job::from_hash("7", &HashMap::new());
        job.opts = opts;
        job
    }

    #[test]
    fn failures_follow_bulls_retry_rules() {
        let q = state(HashMap::new());
        let retry = Outcome::Retry("boom".into());
        assert_eq!(after_failure(&q, &job(JobOptions::default()), &retry, 1, 0), Next::Fail("boom".into()));
        let three = JobOptions::default().attempts(3);
        assert_eq!(after_failure(&q, &job(three.clone()), &retry, 1, 0), Next::RetryNow);
        assert_eq!(after_failure(&q, &job(three.clone()), &retry, 3, 0), Next::Fail("boom".into()));
        let exp = three.clone().backoff(Backoff::exponential(1000));
        assert_eq!(after_failure(&q, &job(exp.clone()), &retry, 1, 10), Next::RetryAt(1010));
        assert_eq!(after_failure(&q, &job(exp), &retry, 2, 10), Next::RetryAt(3010));
        let after = Outcome::RetryAfter(Duration::from_millis(50), "later".into());
        assert_eq!(after_failure(&q, &job(three.clone()), &after, 1, 10), Next::RetryAt(60));
        let fatal = Outcome::Unrecoverable("bad input".into());
        assert_eq!(after_failure(&q, &job(three.clone()), &fatal, 1, 0), Next::Fail("bad input".into()));
        let unknown = three.clone().backoff(Backoff::custom("jitter", None));
        assert!(
            matches!(after_failure(&q, &job(unknown), &retry, 1, 0), Next::Fail(r) if r.contains("Unknown backoff strategy jitter"))
        );
    }

    #[test]
    fn custom_strategies_decide_delay_or_stop() {
        let mut strategies: HashMap<String, BackoffStrategy> = HashMap::new();
        strategies
            .insert("linear".into(), Arc::new(|n, _, opts| Some(n as i64 * opts.and_then(Value::as_i64).unwrap_or(1))));
        strategies.insert("never".into(), Arc::new(|_, _, _| Some(-1)));
        let q = state(strategies);
        let retry = Outcome::Retry("boom".into());
        let linear = JobOptions::default().attempts(5).backoff(Backoff::custom("linear", Some(json!(100))));
        assert_eq!(after_failure(&q, &job(linear), &retry, 2, 0), Next::RetryAt(200));
        let never = JobOptions::default().attempts(5).backoff(Backoff::custom("never", None));
        assert_eq!(after_failure(&q, &job(never), &retry, 1, 0), Next::Fail("boom".into()));
    }

    #[test]
    fn a_panicking_strategy_fails_the_job_with_a_reason() {
        let mut strategies: HashMap<String, BackoffStrategy> = HashMap::new();
        strategies.insert("broken".into(), Arc::new(|_, _, _| panic!("no delay today")));
        let q = state(strategies);
        let opts = JobOptions::default().attempts(5).backoff(Backoff::custom("broken", None));
        let next = after_failure(&q, &job(opts), &Outcome::Retry("boom".into()), 1, 0);
        assert_eq!(next, Next::Fail("backoff strategy broken panicked: no delay today".into()));
    }
}
