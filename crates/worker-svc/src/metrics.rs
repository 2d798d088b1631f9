//! `/livez` and `/metrics` on `METRICS_ADDR`, in Prometheus' text format:
//! - per attempt: `worker_jobs_total{queue,outcome}`, `worker_job_duration_seconds{queue,outcome}`,
//!   `worker_job_wait_seconds{queue}` (from added to taken), `worker_jobs_running{queue}`;
//! - ffmpeg and ffprobe: `worker_ffmpeg_seconds_total{tool}` (wall time of their runs);
//! - the queue-core worker's counters, read at each scrape: `worker_lock_renewals_total`,
//!   `worker_locks_lost_total{when}` (`renewal`: a renewal found the lock gone while the handler ran; `finish`: a
//!   result was discarded for it), `worker_lock_renewal_errors_total`,
//!   `worker_stalled_jobs_total{outcome}`;
//! - the Redis connections by role and the Postgres pool (platform's collectors, under the
//!   service's `worker_` prefix).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use platform::metrics::{ConnectionStats, PoolStats};
use platform::records::Database;
use platform::storage::Storage;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use queue_core::{Connections, WorkerStatsHandle};

/// Labels of a finished attempt: queue and outcome.
type Labels = [(&'static str, &'static str); 2];
/// The label of a queue.
type QueueLabel = [(&'static str, &'static str); 1];

fn duration_histogram() -> Histogram {
    // 50 ms to about 7 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// Seconds ffmpeg and ffprobe ran, by tool (`Tools` adds to it).
pub(crate) type ToolSeconds = Family<[(&'static str, &'static str); 1], Counter<f64, AtomicU64>>;

/// The service's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    jobs: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    waits: Family<QueueLabel, Histogram, fn() -> Histogram>,
    running: Family<QueueLabel, Gauge>,
    worker: Arc<OnceLock<WorkerStatsHandle>>,
}

/// The queue-core worker's counters, once it runs.
#[derive(Debug)]
struct WorkerCounters(Arc<OnceLock<WorkerStatsHandle>>);

impl Collector for WorkerCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(handle) = self.0.get() else { return Ok(()) };
        let s = handle.stats();
        let renewed = ConstCounter::new(s.locks_renewed);
        renewed.encode(encoder.encode_descriptor(
            "worker_lock_renewals",
            "Job locks extended by lock renewal.",
            None,
            MetricType::Counter,
        )?)?;
        let mut lost = encoder.encode_descriptor(
            "worker_locks_lost",
            "Job locks lost: found gone at a renewal, or a result discarded at finish.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.locks_lost_at_renewal).encode(lost.encode_family(&[("when", "renewal")])?)?;
        ConstCounter::new(s.lost_locks).encode(lost.encode_family(&[("when", "finish")])?)?;
        let errors = ConstCounter::new(s.lock_renewal_errors);
        errors.encode(encoder.encode_descriptor(
            "worker_lock_renewal_errors",
            "Lock renewal calls that failed (Redis unreachable or too slow).",
            None,
            MetricType::Counter,
        )?)?;
        let mut stalled = encoder.encode_descriptor(
            "worker_stalled_jobs",
            "Stalled jobs this worker's checks handled, by outcome.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.stalled_recovered).encode(stalled.encode_family(&[("outcome", "recovered")])?)?;
        ConstCounter::new(s.stalled_failed).encode(stalled.encode_family(&[("outcome", "failed")])?)?;
        Ok(())
    }
}

impl Metrics {
    /// Registers everything, with `connections` and `database`'s pool read at each scrape.
    pub(crate) fn new(
        connections: Connections,
        database: Database,
        storage: &Storage,
        tool_seconds: ToolSeconds,
    ) -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<Labels, Counter>::default();
        let durations = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let waits = Family::<_, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let running = Family::default();
        let worker = Arc::new(OnceLock::new());
        registry.register(
            "worker_job_wait_seconds",
            "Time from a job's add to its attempt's start (its delay included), by queue",
            waits.clone(),
        );
        registry.register("worker_ffmpeg_seconds", "Wall time of ffmpeg and ffprobe runs, by tool", tool_seconds);
        registry.register_collector(Box::new(WorkerCounters(worker.clone())));
        registry.register("worker_jobs", "Job attempts finished, by queue and outcome", jobs.clone());
        registry.register(
            "worker_job_duration_seconds",
            "Duration of job attempts, by queue and outcome",
            durations.clone(),
        );
        registry.register("worker_jobs_running", "Job attempts running now, by queue", running.clone());
        let shared = registry.sub_registry_with_prefix("worker");
        storage.report(shared, &connections);
        shared.register_collector(Box::new(ConnectionStats::new(connections)));
        shared.register_collector(Box::new(PoolStats::new(database)));
        Metrics { registry, jobs, durations, waits, running, worker }
    }

    /// Reads the worker's counters from now on.
    pub(crate) fn watch_worker(&self, handle: WorkerStatsHandle) {
        let _ = self.worker.set(handle);
    }

    /// Records how long an attempt of `queue` waited: from `added_ms` to `taken_ms` (ms since
    /// the epoch; Bull's `timestamp` and `processedOn`).
    pub(crate) fn waited(&self, queue: &'static str, added_ms: Option<i64>, taken_ms: Option<i64>) {
        if let (Some(added), Some(taken)) = (added_ms, taken_ms) {
            let waited = (taken - added).max(0) as f64 / 1000.0;
            self.waits.get_or_create(&[("queue", queue)]).observe(waited);
        }
    }

    /// Counts an attempt of `queue` that ended with `outcome` after `took`.
    pub(crate) fn finished(&self, queue: &'static str, outcome: &'static str, took: Duration) {
        let labels = [("queue", queue), ("outcome", outcome)];
        self.jobs.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Counts an attempt of `queue` as running until the guard is dropped.
    pub(crate) fn running(self: &Arc<Self>, queue: &'static str) -> RunningGuard {
        self.running.get_or_create(&[("queue", queue)]).inc();
        RunningGuard { metrics: self.clone(), queue }
    }

    /// The text exposition.
    pub(crate) fn encode(&self) -> String {
        platform::metrics::encode(&self.registry)
    }
}

/// Decrements the running gauge when dropped.
pub(crate) struct RunningGuard {
    metrics: Arc<Metrics>,
    queue: &'static str,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.metrics.running.get_or_create(&[("queue", self.queue)]).dec();
    }
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type(platform::metrics::CONTENT_TYPE).body(metrics.encode())
}

/// Serves `/livez` and `/metrics` on `addr` (one HTTP worker thread); returns the address bound
/// (for port 0) and the handle that stops the server.
pub(crate) fn serve(addr: SocketAddr, registry: Arc<Metrics>) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let data = web::Data::from(registry);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/livez", web::get().to(livez))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok((bound, handle))
}
