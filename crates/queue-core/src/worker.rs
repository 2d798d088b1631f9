//! Processing jobs: fetching, running handlers, finishing, and the duties every Bull worker
//! shares (lock renewal, delayed promotion, the stalled-job check).
//!
//! Two fetch modes, chosen by the process's connection plan:
//! - **blocking**: with a blocking pool of at least one connection per queue, an idle queue waits
//!   in `BLMOVE wait active` for up to `drain_delay`, so a new job is picked up at once;
//! - **zero-blocking**: with no blocking connection, the worker fetches on the command
//!   connection and sleeps between empty fetches until Bull's `waiting@*`, `delayed` or `resumed`
//!   messages wake it (when the plan has a subscriber) or `drain_delay` passes.
//!
//! Handlers run on their own runtime (`handler_threads` threads), so a CPU-bound handler cannot
//! starve lock renewal, which runs with the Redis connections on the caller's runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value as RedisValue;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::connections::Connections;
use crate::error::{Error, Result};
use crate::handler::{ActiveJob, Handler, Outcome};
use crate::job::Job;
use crate::options::KeepJobs;
use crate::queue::{Queue, now_ms};
use crate::scripts::{self, check_code};
use crate::subscriber::SubscriberEvent;

/// Default lock time-to-live; renewed every half of it while the handler runs.
pub const DEFAULT_LOCK_DURATION: Duration = Duration::from_secs(30);
/// Default period of the stalled-job check (Bull's `stalledInterval`).
pub const DEFAULT_STALLED_INTERVAL: Duration = Duration::from_secs(30);
/// Default number of stall recoveries before a job fails (Bull's `maxStalledCount`).
pub const DEFAULT_MAX_STALLED_COUNT: u64 = 1;
/// Default longest sleep of the delayed-job promoter (Bull's `guardInterval`).
pub const DEFAULT_GUARD_INTERVAL: Duration = Duration::from_secs(5);
/// Default block time of an idle fetch, and poll interval in zero-blocking mode (Bull's
/// `drainDelay`).
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// Default pause after an error in a worker loop before it tries again.
pub const DEFAULT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Worker timings. Defaults are Bull's, named by the constants above.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerSettings {
    /// Lock time-to-live.
    pub lock_duration: Duration,
    /// Lock renewal period; must be shorter than `lock_duration`.
    pub lock_renew_time: Duration,
    /// Stalled-check period; zero turns the check off.
    pub stalled_interval: Duration,
    /// Stall recoveries allowed before the job fails.
    pub max_stalled_count: u64,
    /// Longest sleep of the delayed promoter.
    pub guard_interval: Duration,
    /// Block time / poll interval of an idle queue.
    pub drain_delay: Duration,
    /// Pause after an error in a loop.
    pub error_backoff: Duration,
    /// Threads of the handler runtime; default: the number of CPUs.
    pub handler_threads: usize,
    /// Period of the worker's heartbeat (see `heartbeat.rs`).
    pub heartbeat_interval: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            lock_duration: DEFAULT_LOCK_DURATION,
            lock_renew_time: DEFAULT_LOCK_DURATION / 2,
            stalled_interval: DEFAULT_STALLED_INTERVAL,
            max_stalled_count: DEFAULT_MAX_STALLED_COUNT,
            guard_interval: DEFAULT_GUARD_INTERVAL,
            drain_delay: DEFAULT_DRAIN_DELAY,
            error_backoff: DEFAULT_ERROR_BACKOFF,
            handler_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            heartbeat_interval: crate::heartbeat::DEFAULT_HEARTBEAT_INTERVAL,
        }
    }
}

impl WorkerSettings {
    /// Sets the lock duration and renews at half of it.
    pub fn lock_duration(mut self, d: Duration) -> Self {
        self.lock_duration = d;
        self.lock_renew_time = d / 2;
        self
    }
    /// Sets the stalled-check period.
    pub fn stalled_interval(mut self, d: Duration) -> Self {
        self.stalled_interval = d;
        self
    }
    /// Sets the stall recoveries allowed.
    pub fn max_stalled_count(mut self, n: u64) -> Self {
        self.max_stalled_count = n;
        self
    }
    /// Sets the promoter's longest sleep.
    pub fn guard_interval(mut self, d: Duration) -> Self {
        self.guard_interval = d;
        self
    }
    /// Sets the idle block time / poll interval.
    pub fn drain_delay(mut self, d: Duration) -> Self {
        self.drain_delay = d;
        self
    }
    /// Sets the handler threads.
    pub fn handler_threads(mut self, n: usize) -> Self {
        self.handler_threads = n.max(1);
        self
    }

    fn check(&self) -> Result<()> {
        if self.lock_duration.is_zero() || self.lock_renew_time.is_zero() || self.lock_renew_time >= self.lock_duration
        {
            return Err(Error::config("lock_renew_time", "must be positive and shorter than lock_duration"));
        }
        if self.drain_delay < Duration::from_millis(10) {
            return Err(Error::config("drain_delay", "must be at least 10 ms"));
        }
        Ok(())
    }
}

/// Bull's rate limiter: at most `max` jobs start per `duration`, across every worker of the
/// queue (Node ones included). Limited jobs wait in `delayed`; none is ever dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Jobs per window.
    pub max: u64,
    /// Window.
    pub duration: Duration,
    /// Limit per group: the text after the last `:` of the job id (Bull's `groupKey`).
    pub per_group: bool,
}

/// A custom backoff strategy: `(attempts_made, reason, backoff.options)` to a delay in ms;
/// `-1` fails the job now, `0` or `None` retries at once.
pub type BackoffStrategy = Arc<dyn Fn(u64, &str, Option<&Value>) -> Option<i64> + Send + Sync>;

/// One queue a worker consumes.
#[must_use]
pub struct QueueSpec {
    queue: Queue,
    concurrency: usize,
    handler: Handler,
    limiter: Option<RateLimit>,
    strategies: HashMap<String, BackoffStrategy>,
}

impl QueueSpec {
    /// Consume `queue` with up to `concurrency` jobs at once, each run by `handler`.
    pub fn new(queue: Queue, concurrency: usize, handler: Handler) -> Self {
        QueueSpec { queue, concurrency: concurrency.max(1), handler, limiter: None, strategies: HashMap::new() }
    }

    /// Applies a rate limiter.
    pub fn limiter(mut self, limit: RateLimit) -> Self {
        self.limiter = Some(limit);
        self
    }

    /// Registers a custom backoff strategy under `name` (a job's `backoff.type`).
    pub fn backoff_strategy(mut self, name: &str, strategy: BackoffStrategy) -> Self {
        self.strategies.insert(name.to_owned(), strategy);
        self
    }
}

/// Counters of one worker, all queues together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed for good.
    pub failed: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Results discarded because the lock was lost.
    pub lost_locks: u64,
    /// Jobs this worker's stalled checks moved back to waiting.
    pub stalled_recovered: u64,
    /// Jobs this worker's stalled checks failed.
    pub stalled_failed: u64,
    /// Jobs being processed now.
    pub active: u64,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    lost_locks: AtomicU64,
    stalled_recovered: AtomicU64,
    stalled_failed: AtomicU64,
}

struct QueueState {
    queue: Queue,
    concurrency: usize,
    handler: Handler,
    limiter: Option<RateLimit>,
    strategies: HashMap<String, BackoffStrategy>,
    slots: Arc<Semaphore>,
    active: Mutex<HashMap<String, Arc<AtomicBool>>>,
    wake: Notify,
    delayed_wake: Notify,
    next_due: AtomicU64,
    label: String,
}

struct Shared {
    connections: Connections,
    settings: WorkerSettings,
    token: String,
    blocking: bool,
    closing: AtomicBool,
    /// Set when `close` gives up on jobs in hand: their outcome is no longer written, so their
    /// lock expires and a stalled check recovers them.
    abandoned: AtomicBool,
    paused: AtomicBool,
    state_changed: Notify,
    counters: Counters,
    handlers: tokio::runtime::Handle,
}

/// A running worker. Stop it with [`Worker::close`]; dropping it stops it abruptly.
pub struct Worker {
    shared: Arc<Shared>,
    queues: Vec<Arc<QueueState>>,
    fetchers: Vec<JoinHandle<()>>,
    duties: Vec<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queues", &self.queues.iter().map(|q| q.queue.name().to_owned()).collect::<Vec<_>>())
            .field("blocking", &self.shared.blocking)
            .field("stats", &self.stats())
            .finish()
    }
}

type Taken = (String, Job);

impl Worker {
    /// Starts consuming `queues` with the connections of this process. Blocking mode needs a
    /// blocking connection per queue; with none the worker runs in zero-blocking mode; anything
    /// in between is refused. Must be called inside a tokio runtime.
    pub async fn start(connections: &Connections, settings: WorkerSettings, queues: Vec<QueueSpec>) -> Result<Self> {
        settings.check()?;
        if queues.is_empty() {
            return Err(Error::config("queues", "a worker needs at least one queue"));
        }
        let pool = connections.stats().blocking.planned;
        if pool > 0 && pool < queues.len() {
            return Err(Error::config(
                "blocking connections",
                format!(
                    "{pool} blocking connections for {} queues: give each queue one, or none for zero-blocking mode",
                    queues.len()
                ),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.handler_threads)
            .thread_name("job-handler")
            .enable_all()
            .build()
            .map_err(|e| Error::config("handler_threads", e.to_string()))?;
        let shared = Arc::new(Shared {
            connections: connections.clone(),
            token: uuid::Uuid::new_v4().to_string(),
            blocking: pool > 0,
            closing: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            state_changed: Notify::new(),
            counters: Counters::default(),
            handlers: runtime.handle().clone(),
            settings,
        });
        let queues: Vec<Arc<QueueState>> = queues
            .into_iter()
            .map(|spec| {
                Arc::new(QueueState {
                    label: spec.queue.keys().worker_name_prefix(),
                    slots: Arc::new(Semaphore::new(spec.concurrency)),
                    queue: spec.queue,
                    concurrency: spec.concurrency,
                    handler: spec.handler,
                    limiter: spec.limiter,
                    strategies: spec.strategies,
                    active: Mutex::new(HashMap::new()),
                    wake: Notify::new(),
                    delayed_wake: Notify::new(),
                    next_due: AtomicU64::new(u64::MAX),
                })
            })
            .collect();
        let mut duties = Vec::new();
        if let Some(subscriber) = connections.subscriber() {
            // Subscribe before the first fetch so nothing published meanwhile is missed.
            let mut events = subscriber.events();
            for q in &queues {
                let keys = q.queue.keys();
                subscriber.subscribe(&keys.delayed_channel()).await?;
                subscriber.subscribe(&keys.resumed_channel()).await?;
                if !shared.blocking {
                    subscriber.psubscribe(&keys.waiting_pattern()).await?;
                }
            }
            let listener_queues = queues.clone();
            duties.push(tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(SubscriberEvent::Message(m)) => {
                            for q in &listener_queues {
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
                        Ok(SubscriberEvent::Reconnected) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            for q in &listener_queues {
                                q.wake.notify_one();
                                q.delayed_wake.notify_one();
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        duties.push(tokio::spawn(renew_locks(shared.clone(), queues.clone())));
        duties.push(crate::heartbeat::spawn(
            connections.clone(),
            queues.iter().map(|q| q.queue.name().to_owned()).collect(),
            shared.settings.heartbeat_interval,
        ));
        if !shared.settings.stalled_interval.is_zero() {
            duties.push(tokio::spawn(check_stalled(shared.clone(), queues.clone())));
        }
        for q in &queues {
            duties.push(tokio::spawn(promote_delayed(shared.clone(), q.clone())));
        }
        let fetchers = queues.iter().map(|q| tokio::spawn(fetch_loop(shared.clone(), q.clone()))).collect();
        tracing::info!(
            queues = ?queues.iter().map(|q| q.queue.name()).collect::<Vec<_>>(),
            mode = if shared.blocking { "blocking" } else { "zero-blocking" },
            "worker started"
        );
        Ok(Worker { shared, queues, fetchers, duties, runtime: Some(runtime) })
    }

    /// Counters of this worker.
    pub fn stats(&self) -> WorkerStats {
        let c = &self.shared.counters;
        WorkerStats {
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            lost_locks: c.lost_locks.load(Ordering::Relaxed),
            stalled_recovered: c.stalled_recovered.load(Ordering::Relaxed),
            stalled_failed: c.stalled_failed.load(Ordering::Relaxed),
            active: self.queues.iter().map(|q| q.active.lock().expect("active lock").len() as u64).sum(),
        }
    }

    /// Whether the worker fetches with blocking pops.
    pub fn is_blocking(&self) -> bool {
        self.shared.blocking
    }

    /// The token this worker locks jobs with.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Stops taking new jobs in this process (other workers go on) and waits until the jobs in
    /// hand are finished. A blocking pop already waiting may still deliver one more job.
    pub async fn pause_local(&self) {
        self.shared.paused.store(true, Ordering::Release);
        self.shared.state_changed.notify_waiters();
        while self.stats().active > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes jobs again after [`Worker::pause_local`].
    pub fn resume_local(&self) {
        self.shared.paused.store(false, Ordering::Release);
        self.shared.state_changed.notify_waiters();
        for q in &self.queues {
            q.wake.notify_one();
        }
    }

    /// Stops fetching, lets jobs in hand finish until `deadline`, then stops everything. Jobs
    /// still running then keep their lock until it expires and are recovered by a stalled check
    /// (of this worker's successor or any other worker): never dropped, possibly run twice.
    pub async fn close(mut self, deadline: Duration) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.state_changed.notify_waiters();
        for fetcher in self.fetchers.drain(..) {
            fetcher.abort();
            let _ = fetcher.await;
        }
        let drained = async {
            for q in &self.queues {
                let _ = q.slots.acquire_many(q.concurrency as u32).await;
            }
        };
        if tokio::time::timeout(deadline, drained).await.is_err() {
            self.shared.abandoned.store(true, Ordering::Release);
            tracing::warn!(
                active = self.stats().active,
                "worker closed with jobs still running; stall recovery will retry them"
            );
        }
        for duty in self.duties.drain(..) {
            duty.abort();
        }
        tracing::info!(stats = ?self.stats(), "worker closed");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.abandoned.store(true, Ordering::Release);
        for task in self.fetchers.iter().chain(self.duties.iter()) {
            task.abort();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn stopped(shared: &Shared) -> bool {
    shared.closing.load(Ordering::Acquire)
}

/// Sleeps for `d` or until the worker's state changes, whichever is first.
async fn nap(shared: &Shared, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shared.state_changed.notified() => {}
    }
}

async fn fetch_loop(shared: Arc<Shared>, q: Arc<QueueState>) {
    let mut failures = 0u32;
    loop {
        if stopped(&shared) {
            return;
        }
        if shared.paused.load(Ordering::Acquire) {
            nap(&shared, shared.settings.drain_delay).await;
            continue;
        }
        let Ok(slot) = q.slots.clone().acquire_owned().await else { return };
        if stopped(&shared) || shared.paused.load(Ordering::Acquire) {
            continue;
        }
        match fetch(&shared, &q).await {
            Ok(Fetched::Job(id, job)) => {
                failures = 0;
                let (shared, q) = (shared.clone(), q.clone());
                tokio::spawn(async move {
                    process(shared, q, id, *job).await;
                    drop(slot);
                });
            }
            Ok(Fetched::Again) => failures = 0,
            Ok(Fetched::Idle) => {
                failures = 0;
                drop(slot);
                if !shared.blocking {
                    tokio::select! {
                        _ = q.wake.notified() => {}
                        _ = nap(&shared, shared.settings.drain_delay) => {}
                    }
                }
            }
            Err(e) => {
                drop(slot);
                failures += 1;
                tracing::warn!(queue = q.queue.name(), error = %e, failures, "fetching a job failed");
                nap(&shared, shared.settings.error_backoff.mul_f64(f64::from(failures.min(5)))).await;
            }
        }
    }
}

enum Fetched {
    Job(String, Box<Job>),
    /// Something was taken care of (an orphan id, a rate-limited job): fetch again at once.
    Again,
    Idle,
}

async fn fetch(shared: &Shared, q: &QueueState) -> Result<Fetched> {
    let taken = move_to_active(shared, q, "").await?;
    if !matches!(taken, Fetched::Idle) || !shared.blocking {
        return Ok(taken);
    }
    let Some(pool) = shared.connections.blocking() else { return Ok(Fetched::Idle) };
    let keys = q.queue.keys();
    let popped = pool.blmove_as(&keys.wait(), &keys.active(), shared.settings.drain_delay, Some(&q.label)).await?;
    match popped {
        Some(id) => move_to_active(shared, q, &id).await,
        None => Ok(Fetched::Idle),
    }
}

async fn move_to_active(shared: &Shared, q: &QueueState, id: &str) -> Result<Fetched> {
    let keys = q.queue.keys();
    let k = [keys.wait(), keys.active(), keys.priority(), keys.stalled(), keys.limiter(), keys.delayed()];
    let k: Vec<&str> = k.iter().map(String::as_str).collect();
    let (max, duration, group) = match q.limiter {
        Some(l) => (l.max.to_string(), l.duration.as_millis().to_string(), if l.per_group { "1" } else { "0" }),
        None => (String::new(), String::new(), "0"),
    };
    let args = (
        keys.base(),
        &shared.token,
        shared.settings.lock_duration.as_millis() as u64,
        now_ms(),
        id,
        max,
        duration,
        group,
    );
    let reply: RedisValue = scripts::MOVE_TO_ACTIVE.run(q.queue.connection(), &k, args).await?;
    parse_taken(reply, q.queue.name())
}

fn text(v: &RedisValue) -> Option<String> {
    match v {
        RedisValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RedisValue::SimpleString(s) => Some(s.clone()),
        RedisValue::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn parse_taken(reply: RedisValue, queue: &str) -> Result<Fetched> {
    let bad = |detail: String| Error::Protocol { script: "moveToActive", detail };
    let RedisValue::Array(items) = reply else {
        return match reply {
            RedisValue::Int(_) | RedisValue::Nil => Ok(Fetched::Idle),
            other => Err(bad(format!("{other:?}"))),
        };
    };
    let kind = items.first().and_then(text).ok_or_else(|| bad("empty reply".into()))?;
    let id = items.get(1).and_then(text);
    match (kind.as_str(), id) {
        ("none", _) => Ok(Fetched::Idle),
        ("orphan", Some(id)) => {
            tracing::warn!(queue, id, "dropped a job id that had no job hash");
            Ok(Fetched::Again)
        }
        ("limited", Some(_)) => Ok(Fetched::Again),
        ("job", Some(id)) => {
            let fields = match items.get(2) {
                Some(RedisValue::Array(fields)) => fields.iter().filter_map(text).collect::<Vec<_>>(),
                Some(RedisValue::Map(pairs)) => pairs.iter().flat_map(|(k, v)| [text(k), text(v)]).flatten().collect(),
                _ => Vec::new(),
            };
            let hash: HashMap<String, String> =
                fields.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
            let job = Job::from_hash(&id, &hash);
            Ok(Fetched::Job(id, Box::new(job)))
        }
        (other, _) => Err(bad(format!("unknown reply kind {other}"))),
    }
}

async fn process(shared: Arc<Shared>, q: Arc<QueueState>, mut id: String, mut job: Job) {
    loop {
        let lost = Arc::new(AtomicBool::new(false));
        q.active.lock().expect("active lock").insert(id.clone(), lost.clone());
        let span = tracing::info_span!("job", queue = q.queue.name(), id = %id, name = %job.name, attempt = job.attempts_made + 1);
        let next = async {
            let outcome = run_attempt(&shared, &q, &job, lost.clone()).await;
            if shared.abandoned.load(Ordering::Acquire) {
                tracing::warn!("worker closed before the job finished; leaving it to stall recovery");
                return None;
            }
            let fetch_next = matches!(outcome, Outcome::Completed(_))
                && q.limiter.is_none()
                && !stopped(&shared)
                && !shared.paused.load(Ordering::Acquire);
            finish(&shared, &q, &job, outcome, fetch_next, &lost).await
        }
        .instrument(span)
        .await;
        q.active.lock().expect("active lock").remove(&id);
        match next {
            Some((next_id, next_job)) => (id, job) = (next_id, next_job),
            None => return,
        }
    }
}

async fn run_attempt(shared: &Shared, q: &QueueState, job: &Job, lost: Arc<AtomicBool>) -> Outcome {
    if let Some(reason) = &job.malformed {
        tracing::warn!(reason, "failing a malformed job");
        return Outcome::Unrecoverable(reason.clone());
    }
    if job.opts.repeat.is_some()
        && let Err(e) = q.queue.add_next_iteration(job).await
    {
        tracing::warn!(error = %e, "could not schedule the next iteration of a repeatable job");
    }
    let active = ActiveJob::new(Arc::new(job.clone()), q.queue.clone(), lost);
    let task = shared.handlers.spawn((q.handler)(active));
    let abort = task.abort_handle();
    let joined = match job.opts.timeout.filter(|ms| *ms > 0) {
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), task).await {
            Ok(joined) => joined,
            Err(_) => {
                abort.abort();
                return Outcome::Retry(format!("Promise timed out after {ms} milliseconds"));
            }
        },
        None => task.await,
    };
    match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Outcome::Retry(format!("handler panicked: {message}"))
        }
        Err(e) => Outcome::Retry(format!("handler task ended: {e}")),
    }
}

/// What a failed attempt leads to.
#[derive(Debug, PartialEq)]
enum Next {
    RetryNow,
    RetryAt(u64),
    Fail(String),
}

fn after_failure(q: &QueueState, job: &Job, outcome: &Outcome, attempts_made: u64, now: u64) -> Next {
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
            Some(strategy) => strategy(attempts_made, &reason, backoff.options.as_ref()),
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

async fn finish(
    shared: &Shared,
    q: &QueueState,
    job: &Job,
    outcome: Outcome,
    fetch_next: bool,
    lost: &AtomicBool,
) -> Option<Taken> {
    let keys = q.queue.keys();
    let now = now_ms();
    let conn = q.queue.connection();
    let result: Result<RedisValue> = match &outcome {
        Outcome::Completed(value) => {
            let returnvalue = value.to_string();
            let (age, count) = KeepJobs::normalized(job.opts.remove_on_complete.as_ref());
            let event = json!({"jobId": job.id, "val": returnvalue}).to_string();
            let k = [keys.active(), keys.completed(), keys.wait(), keys.priority(), keys.stalled()];
            let k: Vec<&str> = k.iter().map(String::as_str).collect();
            let args = (
                keys.base(),
                &job.id,
                &shared.token,
                now,
                returnvalue,
                age.map(|a| a.to_string()).unwrap_or_default(),
                count,
                event,
                if fetch_next { "1" } else { "0" },
                shared.settings.lock_duration.as_millis() as u64,
                if job.debounce_id.is_some() { "1" } else { "0" },
            );
            scripts::COMPLETE_JOB.run(conn, &k, args).await
        }
        failure => {
            let attempts_made = job.attempts_made + 1;
            let next = after_failure(q, job, failure, attempts_made, now);
            let reason = match (&next, failure) {
                (Next::Fail(reason), _) => reason.clone(),
                (_, Outcome::Retry(r) | Outcome::RetryAfter(_, r) | Outcome::Unrecoverable(r)) => r.clone(),
                (_, Outcome::Completed(_)) => unreachable!("completions are handled above"),
            };
            let mut stacktrace = job.stacktrace.clone();
            stacktrace.push(reason.clone());
            if let Some(limit) = job.opts.stack_trace_limit.filter(|l| *l > 0) {
                let excess = stacktrace.len().saturating_sub(limit as usize);
                stacktrace.drain(..excess);
            }
            let (mode, due) = match next {
                Next::RetryNow => ("retry", 0),
                Next::RetryAt(due) => ("delay", due),
                Next::Fail(_) => ("fail", 0),
            };
            let (age, count) = KeepJobs::normalized(job.opts.remove_on_fail.as_ref());
            let event = json!({"jobId": job.id, "val": reason}).to_string();
            let k = [
                keys.active(),
                keys.failed(),
                keys.wait(),
                keys.paused(),
                keys.meta_paused(),
                keys.priority(),
                keys.delayed(),
            ];
            let k: Vec<&str> = k.iter().map(String::as_str).collect();
            let args: Vec<String> = vec![
                keys.base().to_owned(),
                job.id.clone(),
                shared.token.clone(),
                now.to_string(),
                reason.clone(),
                serde_json::to_string(&stacktrace).unwrap_or_else(|_| "[]".into()),
                attempts_made.to_string(),
                mode.to_owned(),
                due.to_string(),
                age.map(|a| a.to_string()).unwrap_or_default(),
                count.to_string(),
                event,
            ];
            tracing::info!(mode, reason, "attempt failed");
            scripts::FAIL_JOB.run(conn, &k, args).await
        }
    };
    let script = if matches!(outcome, Outcome::Completed(_)) { &*scripts::COMPLETE_JOB } else { &*scripts::FAIL_JOB };
    let reply = match result {
        Ok(reply) => reply,
        Err(e) => {
            // The job stays active and locked until the lock expires; the stalled check then
            // moves it back to waiting. Nothing is lost.
            tracing::error!(error = %e, "could not record the job's outcome; stall recovery will retry it");
            return None;
        }
    };
    match reply {
        RedisValue::Int(code) => match check_code(script, code, &job.id, q.queue.name()) {
            Ok(_) => {
                count_outcome(shared, job, &outcome, q);
                None
            }
            Err(e @ Error::LockLost { .. }) => {
                lost.store(true, Ordering::Release);
                shared.counters.lost_locks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "result discarded: another worker owns the job now");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "result discarded");
                None
            }
        },
        other => {
            count_outcome(shared, job, &outcome, q);
            match parse_taken(other, q.queue.name()) {
                Ok(Fetched::Job(id, job)) => Some((id, *job)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "unexpected reply when fetching the next job");
                    None
                }
            }
        }
    }
}

fn count_outcome(shared: &Shared, job: &Job, outcome: &Outcome, q: &QueueState) {
    let c = &shared.counters;
    match outcome {
        Outcome::Completed(_) => {
            c.completed.fetch_add(1, Ordering::Relaxed);
        }
        failure => match after_failure(q, job, failure, job.attempts_made + 1, now_ms()) {
            Next::Fail(_) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                c.retried.fetch_add(1, Ordering::Relaxed);
            }
        },
    }
}

async fn renew_locks(shared: Arc<Shared>, queues: Vec<Arc<QueueState>>) {
    let mut tick = tokio::time::interval(shared.settings.lock_renew_time);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for q in &queues {
            let ids: Vec<String> = q.active.lock().expect("active lock").keys().cloned().collect();
            if ids.is_empty() {
                continue;
            }
            let keys = q.queue.keys();
            let mut args = vec![
                keys.base().to_owned(),
                shared.token.clone(),
                shared.settings.lock_duration.as_millis().to_string(),
            ];
            args.extend(ids);
            match scripts::EXTEND_LOCKS.run::<Vec<String>>(q.queue.connection(), &[&keys.stalled()], args).await {
                Ok(lost) => {
                    let active = q.active.lock().expect("active lock");
                    for id in lost {
                        if let Some(flag) = active.get(&id)
                            && !flag.swap(true, Ordering::AcqRel)
                        {
                            tracing::warn!(queue = q.queue.name(), id, "lock lost while the job was running");
                        }
                    }
                }
                Err(e) => tracing::warn!(queue = q.queue.name(), error = %e, "lock renewal failed"),
            }
        }
    }
}

async fn check_stalled(shared: Arc<Shared>, queues: Vec<Arc<QueueState>>) {
    let mut tick = tokio::time::interval(shared.settings.stalled_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for q in &queues {
            let keys = q.queue.keys();
            let k = [
                keys.stalled(),
                keys.wait(),
                keys.active(),
                keys.failed(),
                keys.stalled_check(),
                keys.meta_paused(),
                keys.paused(),
            ];
            let k: Vec<&str> = k.iter().map(String::as_str).collect();
            let args = (
                shared.settings.max_stalled_count,
                keys.base(),
                now_ms(),
                shared.settings.stalled_interval.as_millis() as u64,
            );
            match scripts::MOVE_STALLED.run::<(Vec<String>, Vec<String>)>(q.queue.connection(), &k, args).await {
                Ok((failed, recovered)) => {
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

async fn promote_delayed(shared: Arc<Shared>, q: Arc<QueueState>) {
    let keys = q.queue.keys();
    let k = [keys.delayed(), keys.wait(), keys.paused(), keys.meta_paused(), keys.priority()];
    let k: Vec<&str> = k.iter().map(String::as_str).collect();
    let guard = shared.settings.guard_interval;
    loop {
        let now = now_ms();
        let wait = match scripts::PROMOTE_DELAYED
            .run::<Option<String>>(q.queue.connection(), &k, (keys.base(), now, &shared.token))
            .await
        {
            Ok(Some(score)) => {
                let due = score.parse::<f64>().map_or(now, crate::keys::due_from_score);
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
        if stopped(&shared) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Backoff, JobOptions};

    fn state(strategies: HashMap<String, BackoffStrategy>) -> QueueState {
        let connections = Connections::builder(
            crate::config::RedisConfig::new(crate::config::RedisUrl::parse("redis://127.0.0.1:1").unwrap()),
            "t",
        )
        .build()
        .unwrap();
        QueueState {
            queue: Queue::new(&connections, "q").unwrap(),
            concurrency: 1,
            handler: crate::handler::handler(|_| async { Outcome::Completed(Value::Null) }),
            limiter: None,
            strategies,
            slots: Arc::new(Semaphore::new(1)),
            active: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            delayed_wake: Notify::new(),
            next_due: AtomicU64::new(0),
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
}
