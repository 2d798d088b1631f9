//! health-svc's Prometheus metrics at `/metrics`:
//!
//! - the canary (`canary_up`, `canary_last_success_age_seconds`, `canary_last_latency_seconds`,
//!   `canary_probes_total{outcome}`), read from its state at each scrape;
//! - what Prometheus alerts on that no other service can see, read at each scrape through the
//!   one command connection (`deploy/prometheus/alerts.yml` uses them):
//!   `health_check_up{check}` (`redis`, `postgres`: readiness's cached checks),
//!   `redis_clients_connected` and `redis_maxclients` (`INFO`), `redis_ping_latency_seconds` (the
//!   mean of a few `PING`s), and per queue of `HEALTH_QUEUES` `queue_jobs{queue,state}`,
//!   `queue_paused{queue}` and `queue_oldest_waiting_age_seconds{queue}` (0 when nothing waits).
//!   Each read is bounded by `HEALTH_CHECK_TIMEOUT_MS`; one that fails or runs out leaves its
//!   series out of that scrape rather than repeating an old value;
//! - platform's request series (`http_requests_total{route,method,status}`,
//!   `http_request_duration_seconds`, the same as api-svc's);
//! - platform's collectors of the Redis connections by role and the Postgres pool.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use inspect::server::{Info, ping_sample};
use platform::metrics::{ConnectionStats, PoolStats, RequestMetrics};
use platform::records::Database;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use queue_core::{Connections, JobCounts, JobState, QueueView};

use crate::canary::Canary;
use crate::readiness::Readiness;

/// `PING`s per latency sample.
const PINGS: usize = 3;

/// The canary's state as series.
#[derive(Debug)]
struct CanaryStats(Arc<Canary>);

impl Collector for CanaryStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let verdict = self.0.verdict();
        let state = self.0.state();
        let up = ConstGauge::new(i64::from(verdict.ok));
        up.encode(encoder.encode_descriptor(
            "canary_up",
            "1 when the canary came back within HEALTH_CANARY_MAX_AGE_MS.",
            None,
            up.metric_type(),
        )?)?;
        if let Some(age) = verdict.age_s {
            let gauge = ConstGauge::new(age);
            gauge.encode(encoder.encode_descriptor(
                "canary_last_success_age_seconds",
                "Seconds since a canary last came back.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Some(ms) = state.last_latency_ms {
            let gauge = ConstGauge::new(ms as f64 / 1000.0);
            gauge.encode(encoder.encode_descriptor(
                "canary_last_latency_seconds",
                "Round trip of the last canary that came back.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        let mut family =
            encoder.encode_descriptor("canary_probes", "Canary probes by outcome.", None, MetricType::Counter)?;
        for outcome in ["ok", "late", "failed", "error"] {
            let counter = ConstCounter::new(state.probes.get(outcome).copied().unwrap_or(0));
            counter.encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        Ok(())
    }
}

/// One queue at a scrape.
#[derive(Debug)]
struct QueueGauges {
    name: String,
    counts: JobCounts,
    paused: bool,
    oldest_waiting_age_s: f64,
}

/// What a scrape read from Redis and readiness.
#[derive(Debug, Default)]
struct Facts {
    checks: Vec<(&'static str, bool)>,
    clients: Option<u64>,
    maxclients: Option<u64>,
    ping_s: Option<f64>,
    queues: Option<Vec<QueueGauges>>,
}

/// Where the facts come from.
struct Sources {
    connections: Connections,
    views: Vec<QueueView>,
    readiness: Arc<Readiness>,
    limit: Duration,
}

/// `read` within `limit`; `None` when it fails or runs out.
async fn within<T>(limit: Duration, read: impl Future<Output = queue_core::Result<T>>) -> Option<T> {
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a metrics read failed");
            None
        }
        Err(_) => None,
    }
}

impl Sources {
    async fn read(&self) -> Facts {
        let c = &self.connections;
        let queues = async {
            let mut out = Vec::new();
            for view in &self.views {
                out.push(queue_gauges(view).await?);
            }
            Ok(out)
        };
        let (report, info, ping, queues) = tokio::join!(
            self.readiness.report(),
            within(self.limit, Info::read(c)),
            within(self.limit, ping_sample(c, PINGS)),
            within(self.limit, queues),
        );
        Facts {
            checks: report.checks.iter().map(|(name, check)| (*name, check.ok)).collect(),
            clients: info.as_ref().and_then(|i| i.u64("connected_clients")),
            maxclients: info.as_ref().and_then(|i| i.u64("maxclients")),
            ping_s: ping.map(|p| p.avg_ms / 1000.0),
            queues,
        }
    }
}

/// A queue's counts, pause state and the age of the job that runs next (the same reads as
/// `/ops/queue`).
async fn queue_gauges(view: &QueueView) -> queue_core::Result<QueueGauges> {
    let counts = view.get_job_counts().await?;
    let paused = view.is_paused().await?;
    let next = view.get_jobs(&[JobState::Waiting], 0, 0, true).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let oldest_waiting_age_s = next
        .into_iter()
        .flatten()
        .next()
        .and_then(|job| job.timestamp)
        .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
    Ok(QueueGauges { name: view.name().to_owned(), counts, paused, oldest_waiting_age_s })
}

/// The last scrape's facts as series.
#[derive(Debug)]
struct FactStats(Arc<Mutex<Facts>>);

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for FactStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let facts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !facts.checks.is_empty() {
            let mut family = encoder.encode_descriptor(
                "health_check_up",
                "1 when the dependency answered readiness's last check (redis, postgres).",
                None,
                MetricType::Gauge,
            )?;
            for (check, ok) in &facts.checks {
                family.encode_family(&[("check", *check)])?.encode_gauge(&i64::from(*ok))?;
            }
        }
        if let Some(clients) = facts.clients {
            let help = "Clients connected to Redis (INFO connected_clients), every service's.";
            gauge(&mut encoder, "redis_clients_connected", help, clients as f64)?;
        }
        if let Some(max) = facts.maxclients {
            gauge(&mut encoder, "redis_maxclients", "Redis's maxclients (INFO).", max as f64)?;
        }
        if let Some(ping) = facts.ping_s {
            let help = "Mean round trip of a few PINGs from health-svc, at the scrape.";
            gauge(&mut encoder, "redis_ping_latency_seconds", help, ping)?;
        }
        let Some(queues) = facts.queues.as_ref().filter(|q| !q.is_empty()) else { return Ok(()) };
        let mut jobs = encoder.encode_descriptor("queue_jobs", "Jobs per queue and state.", None, MetricType::Gauge)?;
        for q in queues {
            let c = &q.counts;
            for (state, n) in [
                ("waiting", c.waiting),
                ("active", c.active),
                ("delayed", c.delayed),
                ("paused", c.paused),
                ("completed", c.completed),
                ("failed", c.failed),
            ] {
                jobs.encode_family(&[("queue", q.name.as_str()), ("state", state)])?.encode_gauge(&(n as i64))?;
            }
        }
        let mut paused = encoder.encode_descriptor(
            "queue_paused",
            "1 when the queue is paused for every worker.",
            None,
            MetricType::Gauge,
        )?;
        for q in queues {
            paused.encode_family(&[("queue", q.name.as_str())])?.encode_gauge(&i64::from(q.paused))?;
        }
        let mut oldest = encoder.encode_descriptor(
            "queue_oldest_waiting_age_seconds",
            "How long the job that runs next has waited (0 when nothing waits).",
            None,
            MetricType::Gauge,
        )?;
        for q in queues {
            oldest.encode_family(&[("queue", q.name.as_str())])?.encode_gauge(&q.oldest_waiting_age_s)?;
        }
        Ok(())
    }
}

/// What `/metrics` serves: the registry, and the facts it reads again at each scrape.
pub struct Metrics {
    registry: Registry,
    requests: RequestMetrics,
    facts: Arc<Mutex<Facts>>,
    sources: Sources,
    /// One scrape at a time reads the facts and encodes them.
    scraping: tokio::sync::Mutex<()>,
}

impl Metrics {
    /// Every collector: `views` and Redis read through `connections`, each read within `limit`.
    pub fn new(
        connections: Connections,
        database: Database,
        canary: Arc<Canary>,
        readiness: Arc<Readiness>,
        views: Vec<QueueView>,
        limit: Duration,
    ) -> Self {
        let mut registry = Registry::default();
        let requests = RequestMetrics::register(&mut registry);
        let facts = Arc::new(Mutex::new(Facts::default()));
        registry.register_collector(Box::new(ConnectionStats::new(connections.clone())));
        registry.register_collector(Box::new(PoolStats::new(database)));
        registry.register_collector(Box::new(CanaryStats(canary)));
        registry.register_collector(Box::new(FactStats(facts.clone())));
        let sources = Sources { connections, views, readiness, limit };
        Metrics { registry, requests, facts, sources, scraping: tokio::sync::Mutex::new(()) }
    }

    /// The request series, which `platform::metrics::middleware` records into.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Reads the facts, then the text exposition of everything.
    pub async fn encode(&self) -> String {
        let _one = self.scraping.lock().await;
        let facts = self.sources.read().await;
        *self.facts.lock().unwrap_or_else(PoisonError::into_inner) = facts;
        platform::metrics::encode(&self.registry)
    }
}
