//! Prometheus series every service registers, so that api-svc, worker-svc and health-svc
//! describe the same things with the same series:
//!
//! - [`RequestMetrics`] and its [`middleware`]: `http_requests_total{route,method,status}` and
//!   `http_request_duration_seconds{route,method}` (until the response's head is ready), for the
//!   HTTP services (api-svc, health-svc). `route` is the matched route's pattern
//!   (`/v1/files/{id}`), never the path: ids in labels would make a new series per file. A path
//!   no route matches is [`UNMATCHED`], and a method outside the standard ones is `other`;
//! - [`ConnectionStats`]: the Redis connections by role, from queue-core's
//!   [`Connections::stats()`]: `redis_connection_budget`, the gauges
//!   `redis_connections_{planned,open,in_use}{role}` and the counters
//!   `redis_{connection_waits,timeouts,reconnects,connect_failures}_total{role}`;
//! - [`PoolStats`]: the Postgres pool of a [`Database`]: `db_pool_connections{state}` (`idle`,
//!   `in_use`) and `db_pool_max_connections`.
//!
//! The collectors are read at each scrape, so they cost nothing between scrapes and are never
//! stale. A service that prefixes its metrics registers them in a sub-registry
//! (`registry.sub_registry_with_prefix("worker")` gives `worker_redis_connections_open`).
//! [`encode`] writes a registry in the Prometheus text format ([`CONTENT_TYPE`]).

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use queue_core::{Connections, RoleStats};

use crate::records::Database;

/// The `Content-Type` of what [`encode`] writes (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `registry` in the Prometheus text format. An encoding failure (a collector's bug) is logged
/// and leaves what was written before it.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding the metrics failed");
    }
    out
}

/// The `route` of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 41 s; longer requests (big uploads) land in +Inf.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// `http_requests_total{route,method,status}` and `http_request_duration_seconds{route,method}`,
/// recorded by [`middleware`]. Clones share the series.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl RequestMetrics {
    /// Registers both families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        registry.register("http_requests", "HTTP requests answered, by route, method and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time until the response's head was ready, by route and method",
            durations.clone(),
        );
        RequestMetrics { requests, durations }
    }

    /// Counts a request to `route` (a pattern, `None` when no route matched).
    pub fn record(&self, route: Option<String>, method: &Method, status: StatusCode, took: Duration) {
        let route = route.unwrap_or_else(|| UNMATCHED.to_owned());
        let method = method_label(method);
        self.durations.get_or_create(&RouteLabels { route: route.clone(), method }).observe(took.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { route, method, status: status.as_u16() }).inc();
    }
}

/// The standard methods by name, anything else as `other`: a label never takes a value the
/// client made up.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// The middleware that records each request in the [`RequestMetrics`] of the app data:
/// `App::new().app_data(web::Data::new(requests)).wrap(from_fn(metrics::middleware))`. Without
/// them in the app data it records nothing. A request that ends in an error is counted under
/// the error's status.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(metrics) = req.app_data::<web::Data<RequestMetrics>>().cloned() else {
        return next.call(req).await;
    };
    let route = req.match_pattern();
    let method = req.method().clone();
    let started = Instant::now();
    let result = next.call(req).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    metrics.record(route, &method, status, started.elapsed());
    result
}

/// The process's Redis connections by role, read from [`Connections::stats()`] at each scrape.
#[derive(Debug)]
pub struct ConnectionStats(Connections);

impl ConnectionStats {
    /// A collector of `connections`' statistics.
    pub fn new(connections: Connections) -> Self {
        ConnectionStats(connections)
    }
}

/// One per-role series: its name, help, type and how to read it.
type RoleSeries = (&'static str, &'static str, MetricType, fn(&RoleStats) -> u64);

const ROLE_SERIES: &[RoleSeries] = &[
    ("redis_connections_planned", "Redis connections the plan allows, by role.", MetricType::Gauge, |s| {
        s.planned as u64
    }),
    ("redis_connections_open", "Redis connections open now, by role.", MetricType::Gauge, |s| s.open as u64),
    ("redis_connections_in_use", "Redis connections (or command calls) in use now, by role.", MetricType::Gauge, |s| {
        s.in_use as u64
    }),
    ("redis_connection_waits", "Times a caller waited for a connection, by role.", MetricType::Counter, |s| s.waits),
    ("redis_timeouts", "Redis calls that timed out, by role.", MetricType::Counter, |s| s.timeouts),
    ("redis_reconnects", "Connections opened beyond the plan (reconnects), by role.", MetricType::Counter, |s| {
        s.reconnects
    }),
    ("redis_connect_failures", "Failed connection attempts, by role.", MetricType::Counter, |s| s.connect_failures),
];

impl Collector for ConnectionStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let budget = ConstGauge::new(stats.budget as i64);
        budget.encode(encoder.encode_descriptor(
            "redis_connection_budget",
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
                    MetricType::Counter => family.encode_counter::<NoLabelSet, _, u64>(&read(role_stats), None)?,
                    _ => family.encode_gauge(&(read(role_stats) as i64))?,
                }
            }
        }
        Ok(())
    }
}

/// The Postgres pool of a [`Database`], read at each scrape: connections open and idle, open and
/// in use, and the most the pool may open (`DATABASE_MAX_CONNECTIONS`). A pool that keeps all
/// its connections in use is where requests wait (up to `DATABASE_ACQUIRE_TIMEOUT_MS`).
#[derive(Debug)]
pub struct PoolStats(Database);

impl PoolStats {
    /// A collector of `database`'s pool.
    pub fn new(database: Database) -> Self {
        PoolStats(database)
    }
}

impl Collector for PoolStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pool = self.0.pool();
        // Two reads of a pool that may change in between: an idle count above the size is
        // clamped rather than reported as a negative number in use.
        let size = i64::from(pool.size());
        let idle = (pool.num_idle() as i64).min(size);
        let mut series = encoder.encode_descriptor(
            "db_pool_connections",
            "Postgres connections open in the pool, by state (idle, in_use).",
            None,
            MetricType::Gauge,
        )?;
        for (state, value) in [("idle", idle), ("in_use", size - idle)] {
            series.encode_family(&[("state", state)])?.encode_gauge(&value)?;
        }
        let max = ConstGauge::new(i64::from(pool.options().get_max_connections()));
        max.encode(encoder.encode_descriptor(
            "db_pool_max_connections",
            "The most connections the Postgres pool may open (DATABASE_MAX_CONNECTIONS).",
            None,
            max.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn requests_are_counted_under_their_pattern_or_unmatched() {
        let mut registry = Registry::default();
        let requests = RequestMetrics::register(&mut registry);
        requests.record(Some("/v1/files/{id}".to_owned()), &Method::GET, StatusCode::OK, Duration::from_millis(3));
        requests.record(None, &Method::from_bytes(b"BREW").unwrap(), StatusCode::NOT_FOUND, Duration::ZERO);
        let text = encode(&registry);
        assert!(text.contains(r#"http_requests_total{route="/v1/files/{id}",method="GET",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"http_requests_total{route="unmatched",method="other",status="404"} 1"#), "{text}");
        assert!(
            text.contains(r#"http_request_duration_seconds_count{route="/v1/files/{id}",method="GET"} 1"#),
            "{text}"
        );
    }
}
