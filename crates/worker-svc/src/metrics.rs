//! `/livez` and `/metrics` on `METRICS_ADDR`: per-job counts and durations by queue and outcome,
//! jobs running now, the Redis connections by role and the Postgres pool (platform's collectors,
//! read at each scrape, under the service's `worker_` prefix), in Prometheus' text format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use platform::metrics::{ConnectionStats, PoolStats};
use platform::records::Database;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use queue_core::Connections;

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
    /// Registers everything, with `connections` and `database`'s pool read at each scrape.
    pub(crate) fn new(connections: Connections, database: Database) -> Self {
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
        let shared = registry.sub_registry_with_prefix("worker");
        shared.register_collector(Box::new(ConnectionStats::new(connections)));
        shared.register_collector(Box::new(PoolStats::new(database)));
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
