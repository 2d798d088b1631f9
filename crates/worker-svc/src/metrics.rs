//! `/livez` and `/metrics` on `METRICS_ADDR`: per-job counts and durations by queue and outcome,
//! jobs running now, and the Redis connections by role (queue-core's `Connections::stats()`,
//! read at each scrape), in Prometheus' text format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use queue_core::{Connections, RoleStats};

/// Labels of a finished attempt: queue and outcome.
type Labels = [(&'static str, &'static str); 2];

fn duration_histogram() -> Histogram {
    // 50 ms to about 7 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// The service's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    jobs: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    running: Family<[(&'static str, &'static str); 1], Gauge>,
}

impl Metrics {
    /// Registers everything, with `connections` read at each scrape.
    pub(crate) fn new(connections: Connections) -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<Labels, Counter>::default();
        let durations = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let running = Family::default();
        registry.register("worker_jobs", "Job attempts finished, by queue and outcome", jobs.clone());
        registry.register(
            "worker_job_duration_seconds",
            "Duration of job attempts, by queue and outcome",
            durations.clone(),
        );
        registry.register("worker_jobs_running", "Job attempts running now, by queue", running.clone());
        registry.register_collector(Box::new(ConnectionStats(connections)));
        Metrics { registry, jobs, durations, running }
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
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
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

/// queue-core's connection statistics, read at each scrape.
#[derive(Debug)]
struct ConnectionStats(Connections);

/// One per-role series: its name, help, type and how to read it.
type RoleSeries = (&'static str, &'static str, MetricType, fn(&RoleStats) -> u64);

const ROLE_SERIES: &[RoleSeries] = &[
    ("worker_redis_connections_planned", "Redis connections the plan allows, by role.", MetricType::Gauge, |s| {
        s.planned as u64
    }),
    ("worker_redis_connections_open", "Redis connections open now, by role.", MetricType::Gauge, |s| s.open as u64),
    (
        "worker_redis_connections_in_use",
        "Redis connections (or command calls) in use now, by role.",
        MetricType::Gauge,
        |s| s.in_use as u64,
    ),
    ("worker_redis_connection_waits", "Times a caller waited for a connection, by role.", MetricType::Counter, |s| {
        s.waits
    }),
    ("worker_redis_timeouts", "Redis calls that timed out, by role.", MetricType::Counter, |s| s.timeouts),
    (
        "worker_redis_reconnects",
        "Connections opened beyond the plan (reconnects), by role.",
        MetricType::Counter,
        |s| s.reconnects,
    ),
    ("worker_redis_connect_failures", "Failed connection attempts, by role.", MetricType::Counter, |s| {
        s.connect_failures
    }),
];

impl Collector for ConnectionStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let budget = prometheus_client::metrics::gauge::ConstGauge::new(stats.budget as i64);
        budget.encode(encoder.encode_descriptor(
            "worker_redis_connection_budget",
            "The process's Redis connection budget (REDIS_MAX_CONNECTIONS, else its plan).",
            None,
            budget.metric_type(),
        )?)?;
        let roles = [("command", &stats.command), ("subscriber", &stats.subscriber), ("blocking", &stats.blocking)];
        for (name, help, kind, read) in ROLE_SERIES {
            let mut series = encoder.encode_descriptor(name, help, None, *kind)?;
            for (role, role_stats) in roles {
                let labels = [("role", role)];
                let mut family = series.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => family
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&read(role_stats), None)?,
                    _ => family.encode_gauge(&(read(role_stats) as i64))?,
                }
            }
        }
        Ok(())
    }
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type(prometheus_client::encoding::prometheus_text::CONTENT_TYPE).body(metrics.encode())
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
