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
//!
//! A service runs a worker until its shutdown signal ([`Worker::run_until`]); a drain-and-exit
//! tool also sets [`WorkerSettings::stop_when`] so the worker stops by itself.
//!
//! Files: `fetch.rs` takes jobs, `attempt.rs` runs one and records its outcome, `duties.rs` holds
//! the background loops (lock renewal, stalled check, delayed promotion, pub/sub wake-ups),
//! `stop.rs` says when a worker stops taking jobs by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::bull::slices::Slices;
use crate::connections::Connections;
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::queue::Queue;

mod attempt;
mod duties;
mod fetch;
mod stop;
mod taken;

pub use stop::StopWhen;

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

/// Worker timings, slice sizes, and when the worker stops by itself. Timing defaults are Bull's,
/// named by the constants above; `slices` defaults to [`Slices::default`]; `stop_when` defaults
/// to [`StopWhen::Never`].
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
    /// When the worker stops taking jobs by itself; default: never.
    pub stop_when: StopWhen,
    /// How many jobs one call of the worker's duties touches: `promote` (the delayed promoter),
    /// `stalled` (the stalled check), `keep` (a finish's keep policy) and `renew` (lock
    /// renewal). Each duty that has more to do calls again at once, so no call holds Redis for
    /// much more than a millisecond.
    pub slices: Slices,
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
            stop_when: StopWhen::Never,
            slices: Slices::default(),
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
    /// Sets when the worker stops taking jobs by itself (for drain-and-exit tools).
    pub fn stop_when(mut self, stop_when: StopWhen) -> Self {
        self.stop_when = stop_when;
        self
    }
    /// Sets the slice sizes of the worker's duties (kept within 1..=[`MAX_SLICE`](crate::MAX_SLICE)).
    pub fn slices(mut self, slices: Slices) -> Self {
        self.slices = slices.bounded();
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
    pub fn new(queue: impl Into<Queue>, concurrency: usize, handler: Handler) -> Self {
        QueueSpec {
            queue: queue.into(),
            concurrency: concurrency.max(1),
            handler,
            limiter: None,
            strategies: HashMap::new(),
        }
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
    /// Locks extended by lock renewal.
    pub locks_renewed: u64,
    /// Locks a renewal found gone or taken by another worker.
    pub locks_lost_at_renewal: u64,
    /// Renewal calls that failed (Redis unreachable or too slow); the locks may still expire.
    pub lock_renewal_errors: u64,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    lost_locks: AtomicU64,
    stalled_recovered: AtomicU64,
    stalled_failed: AtomicU64,
    locks_renewed: AtomicU64,
    locks_lost_at_renewal: AtomicU64,
    lock_renewal_errors: AtomicU64,
}

/// One job this worker holds: the lock value of this activation, and whether it was lost.
#[derive(Clone)]
struct ActiveEntry {
    lock: String,
    lost: Arc<AtomicBool>,
    /// Set once the outcome is being recorded: the recording script deletes the lock itself, so
    /// a renewal that finds it gone meanwhile has raced the finish, not lost the job (a lock
    /// really lost by then is reported by the finish).
    finishing: Arc<AtomicBool>,
}

struct QueueState {
    queue: Queue,
    handler: Handler,
    limiter: Option<RateLimit>,
    strategies: HashMap<String, BackoffStrategy>,
    slots: Arc<Semaphore>,
    /// Jobs in hand by id; renewed by `duties::renew_locks`.
    active: Mutex<HashMap<String, ActiveEntry>>,
    wake: Notify,
    delayed_wake: Notify,
    next_due: AtomicU64,
    /// The last fetch found nothing: block (or wait) before fetching again, and do not publish
    /// `drained` again.
    drained: AtomicBool,
    /// Under [`StopWhen::Drained`], a fetch found the queue empty: nothing more is taken from it.
    exhausted: AtomicBool,
    label: String,
}

impl QueueState {
    fn new(spec: QueueSpec) -> Self {
        QueueState {
            label: spec.queue.keys().worker_name_prefix(),
            slots: Arc::new(Semaphore::new(spec.concurrency)),
            queue: spec.queue,
            handler: spec.handler,
            limiter: spec.limiter,
            strategies: spec.strategies,
            active: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            delayed_wake: Notify::new(),
            next_due: AtomicU64::new(u64::MAX),
            drained: AtomicBool::new(false),
            exhausted: AtomicBool::new(false),
        }
    }
}

struct Shared {
    connections: Connections,
    settings: WorkerSettings,
    token: String,
    /// Makes each activation's lock value unique: `<token>:<n>`.
    activations: AtomicU64,
    blocking: bool,
    closing: AtomicBool,
    /// Set when `close` gives up on jobs in hand: their outcome is no longer written, so their
    /// lock expires and a stalled check recovers them.
    abandoned: AtomicBool,
    paused: AtomicBool,
    /// True while the fetch loops must stop (closing, locally paused, or done taking). They
    /// finish the step in hand; a blocking pop is ended with `CLIENT UNBLOCK` and returns what the
    /// server already moved, which is processed: a job is never taken and then dropped.
    stopping: watch::Sender<bool>,
    /// Becomes true, for good, once the worker has taken all that `stop_when` allows.
    done_taking: watch::Sender<bool>,
    /// Jobs taken, and the takes left under [`StopWhen::MaxJobs`].
    takes: stop::Takes,
    /// Queues found empty under [`StopWhen::Drained`], of `queue_count`.
    drained_queues: AtomicUsize,
    queue_count: usize,
    counters: Counters,
    /// Jobs taken and not yet finished, all queues; counted by [`Holding`] guards, watched by
    /// `close` and `pause_local`.
    in_hand: watch::Sender<usize>,
    handlers: tokio::runtime::Handle,
}

impl Shared {
    fn next_lock(&self) -> String {
        // tidy: not a key (a lock value, `<worker token>:<n>`)
        format!("{}:{}", self.token, self.activations.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts a taken job as in hand until the guard is dropped.
    fn hold(self: &Arc<Self>) -> Holding {
        self.in_hand.send_modify(|n| *n += 1);
        Holding(self.clone())
    }

    fn stopped(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Whether the fetch loops are asked to stop.
    fn stop_asked(&self) -> bool {
        *self.stopping.borrow() || self.stopped() || self.paused()
    }

    /// Whether a job of `q` may be taken now: no stop is asked and, under
    /// [`StopWhen::Drained`], `q` has not been found empty.
    fn may_take(&self, q: &QueueState) -> bool {
        !self.stop_asked() && !q.exhausted.load(Ordering::Acquire)
    }

    /// The right to take the next job of `q` now (a completion fetching the next job), if it may
    /// be taken and [`StopWhen::MaxJobs`] leaves one.
    fn try_take(&self, q: &QueueState) -> Option<stop::Take<'_>> {
        if self.may_take(q) { self.takes.try_reserve() } else { None }
    }

    /// Records a job taken with `take`. The last one [`StopWhen::MaxJobs`] allows stops the
    /// taking.
    fn taken(&self, take: stop::Take<'_>) {
        if self.takes.record(take) {
            tracing::info!(jobs = self.takes.limit(), "took the most jobs allowed; taking no more");
            self.stop_taking();
        }
    }

    /// A fetch found `q` empty under [`StopWhen::Drained`]: stops taking from it, and stops the
    /// worker taking once every queue has been found empty.
    fn found_drained(&self, q: &QueueState) {
        if !q.exhausted.swap(true, Ordering::AcqRel)
            && self.drained_queues.fetch_add(1, Ordering::AcqRel) + 1 == self.queue_count
        {
            tracing::info!("every queue was found empty; taking no more jobs");
            self.stop_taking();
        }
    }

    /// The worker has taken all it was asked to: the fetch loops stop for good.
    fn stop_taking(&self) {
        self.done_taking.send_replace(true);
        self.stopping.send_replace(true);
    }

    /// Resolves once the fetch loops are asked to stop.
    fn stop_requested(&self) -> impl Future<Output = ()> + use<> {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    }

    /// Sleeps for `d` or until the fetch loops are asked to stop, whichever is first.
    async fn nap(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop_requested() => {}
        }
    }
}

/// One job in hand, from its take until its task ends (also by unwinding).
struct Holding(Arc<Shared>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.in_hand.send_modify(|n| *n -= 1);
    }
}

/// The handler runtime, shut down without blocking when dropped (dropping a runtime normally
/// blocks, which panics inside async code).
struct HandlerRuntime(Option<tokio::runtime::Runtime>);

impl Drop for HandlerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A running worker. Stop it with [`Worker::close`]; dropping it stops it abruptly.
pub struct Worker {
    shared: Arc<Shared>,
    queues: Vec<Arc<QueueState>>,
    fetchers: Mutex<Vec<JoinHandle<()>>>,
    duties: Vec<JoinHandle<()>>,
    _runtime: HandlerRuntime,
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

impl Worker {
    /// Starts consuming `queues` with the connections of this process. Blocking mode needs a
    /// blocking connection per queue; with none the worker runs in zero-blocking mode; anything
    /// in between is refused. Must be called inside a tokio runtime.
    pub async fn start(connections: &Connections, settings: WorkerSettings, queues: Vec<QueueSpec>) -> Result<Self> {
        settings.check()?;
        let settings = WorkerSettings { slices: settings.slices.bounded(), ..settings };
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
        let handlers = runtime.handle().clone();
        // From here on an early return drops the runtime without blocking.
        let runtime = HandlerRuntime(Some(runtime));
        let shared = Arc::new(Shared {
            connections: connections.clone(),
            token: uuid::Uuid::new_v4().to_string(),
            activations: AtomicU64::new(0),
            blocking: pool > 0,
            closing: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            stopping: watch::channel(false).0,
            done_taking: watch::channel(false).0,
            takes: stop::Takes::new(settings.stop_when),
            drained_queues: AtomicUsize::new(0),
            queue_count: queues.len(),
            counters: Counters::default(),
            in_hand: watch::channel(0).0,
            handlers,
            settings,
        });
        if shared.takes.exhausted() {
            shared.stop_taking(); // StopWhen::MaxJobs(0)
        }
        let queues: Vec<Arc<QueueState>> = queues.into_iter().map(|spec| Arc::new(QueueState::new(spec))).collect();
        let mut duties = Vec::new();
        if let Some(subscriber) = connections.subscriber() {
            // Subscribe before the first fetch so nothing published meanwhile is missed.
            let events = subscriber.events();
            for q in &queues {
                let keys = q.queue.keys();
                subscriber.subscribe(&keys.delayed_channel()).await?;
                subscriber.subscribe(&keys.resumed_channel()).await?;
                if !shared.blocking {
                    subscriber.psubscribe(&keys.waiting_pattern()).await?;
                }
            }
            duties.push(tokio::spawn(duties::listen(events, queues.clone())));
        }
        duties.push(tokio::spawn(duties::renew_locks(shared.clone(), queues.clone())));
        connections.announce_queues(queues.iter().map(|q| q.queue.name()));
        if !shared.settings.stalled_interval.is_zero() {
            duties.push(tokio::spawn(duties::check_stalled(shared.clone(), queues.clone())));
        }
        for q in &queues {
            duties.push(tokio::spawn(duties::promote_delayed(shared.clone(), q.clone())));
        }
        let worker = Worker { shared, queues, fetchers: Mutex::new(Vec::new()), duties, _runtime: runtime };
        worker.spawn_fetchers();
        tracing::info!(
            queues = ?worker.queues.iter().map(|q| q.queue.name()).collect::<Vec<_>>(),
            mode = if worker.shared.blocking { "blocking" } else { "zero-blocking" },
            "worker started"
        );
        Ok(worker)
    }

    fn spawn_fetchers(&self) {
        let mut fetchers = self.fetchers.lock().expect("fetchers lock");
        for q in &self.queues {
            fetchers.push(tokio::spawn(fetch::fetch_loop(self.shared.clone(), q.clone())));
        }
    }

    /// Asks the fetch loops to stop and waits until they have: a job they took meanwhile is in
    /// hand and will be processed.
    async fn stop_fetchers(&self) {
        self.shared.stopping.send_replace(true);
        let fetchers: Vec<_> = self.fetchers.lock().expect("fetchers lock").drain(..).collect();
        for fetcher in fetchers {
            let _ = fetcher.await;
        }
    }

    async fn wait_until_empty_handed(&self) {
        let _ = self.shared.in_hand.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Counters of this worker.
    pub fn stats(&self) -> WorkerStats {
        stats_of(&self.shared)
    }

    /// A handle that reads this worker's counters from elsewhere (a metrics collector), for as
    /// long as the process runs; cheap to clone.
    pub fn stats_handle(&self) -> WorkerStatsHandle {
        WorkerStatsHandle(self.shared.clone())
    }

    /// Whether the worker fetches with blocking pops.
    pub fn is_blocking(&self) -> bool {
        self.shared.blocking
    }

    /// The token this worker's lock values and `active@` events carry.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Stops taking new jobs in this process (other workers go on) and waits until the jobs in
    /// hand are finished.
    pub async fn pause_local(&self) {
        self.shared.paused.store(true, Ordering::Release);
        self.stop_fetchers().await;
        self.wait_until_empty_handed().await;
    }

    /// Takes jobs again after [`Worker::pause_local`] (unless it has taken all that
    /// [`WorkerSettings::stop_when`] allows).
    pub fn resume_local(&self) {
        if self.shared.paused.swap(false, Ordering::AcqRel)
            && !self.shared.stopped()
            && !*self.shared.done_taking.borrow()
        {
            self.shared.stopping.send_replace(false);
            self.spawn_fetchers();
        }
    }

    /// Runs until `shutdown` resolves, or until the worker has stopped taking jobs by itself
    /// ([`WorkerSettings::stop_when`]), then closes it with `drain_deadline` (see
    /// [`Worker::close`]) and returns its final counters. This is what a service's `main` awaits:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use queue_core::{Connections, Outcome, Queue, QueueSpec, Worker, WorkerSettings, handler};
    /// # async fn example(connections: Connections, files: Queue) -> queue_core::Result<()> {
    /// let process = handler(|_job| async { Outcome::Completed(serde_json::Value::Null) });
    /// let worker = Worker::start(&connections, WorkerSettings::default(), vec![QueueSpec::new(files, 4, process)]).await?;
    /// let shutdown = async {
    ///     let _ = tokio::signal::ctrl_c().await;
    /// };
    /// let stats = worker.run_until(shutdown, Duration::from_secs(30)).await;
    /// tracing::info!(?stats, "worker stopped");
    /// # Ok(()) }
    /// ```
    pub async fn run_until(self, shutdown: impl Future<Output = ()>, drain_deadline: Duration) -> WorkerStats {
        let mut done_taking = self.shared.done_taking.subscribe();
        tokio::select! {
            () = shutdown => tracing::info!("shutdown requested; closing the worker"),
            _ = done_taking.wait_for(|done| *done) => {
                tracing::info!(stop_when = ?self.shared.settings.stop_when, "the worker stopped taking jobs by itself");
            }
        }
        self.close(drain_deadline).await
    }

    /// Stops fetching, lets jobs in hand finish until `deadline`, then stops everything, and
    /// returns the final counters. Jobs still running then keep their lock until it expires and
    /// are recovered by a stalled check (of this worker's successor or any other worker): never
    /// dropped, possibly run twice.
    pub async fn close(self, deadline: Duration) -> WorkerStats {
        self.shared.closing.store(true, Ordering::Release);
        self.stop_fetchers().await;
        if tokio::time::timeout(deadline, self.wait_until_empty_handed()).await.is_err() {
            self.shared.abandoned.store(true, Ordering::Release);
            tracing::warn!(
                active = self.stats().active,
                "worker closed with jobs still running; stall recovery will retry them"
            );
        }
        for duty in &self.duties {
            duty.abort();
        }
        let stats = self.stats();
        tracing::info!(?stats, "worker closed");
        stats
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.abandoned.store(true, Ordering::Release);
        if let Ok(fetchers) = self.fetchers.lock() {
            fetchers.iter().for_each(JoinHandle::abort);
        }
        self.duties.iter().for_each(JoinHandle::abort);
    }
}

/// Reads a running worker's counters (see [`Worker::stats_handle`]).
#[derive(Clone)]
pub struct WorkerStatsHandle(Arc<Shared>);

impl WorkerStatsHandle {
    /// The worker's counters now.
    pub fn stats(&self) -> WorkerStats {
        stats_of(&self.0)
    }
}

impl std::fmt::Debug for WorkerStatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkerStatsHandle").field(&self.stats()).finish()
    }
}

fn stats_of(shared: &Shared) -> WorkerStats {
    let c = &shared.counters;
    WorkerStats {
        completed: c.completed.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        retried: c.retried.load(Ordering::Relaxed),
        lost_locks: c.lost_locks.load(Ordering::Relaxed),
        stalled_recovered: c.stalled_recovered.load(Ordering::Relaxed),
        stalled_failed: c.stalled_failed.load(Ordering::Relaxed),
        active: *shared.in_hand.borrow() as u64,
        locks_renewed: c.locks_renewed.load(Ordering::Relaxed),
        locks_lost_at_renewal: c.locks_lost_at_renewal.load(Ordering::Relaxed),
        lock_renewal_errors: c.lock_renewal_errors.load(Ordering::Relaxed),
    }
}
