//! The service's Prometheus metrics, served at `/metrics` in the text format:
//!
//! - `http_requests_total{route,method,status}` and `http_request_duration_seconds{route,method}`
//!   (until the response's head is ready), recorded by [`middleware`]. `route` is the matched
//!   route's pattern (`/v1/files/{id}`), never the path: ids in labels would make a new series
//!   per file. A path no route matches is `unmatched`, and a method outside the standard ones is
//!   `other`;
//! - `uploads_total{outcome}` and `upload_bytes_total` (the bytes of accepted uploads), recorded
//!   by the upload handler;
//! - the Redis connections by role and the Postgres pool, platform's collectors, read at each
//!   scrape.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use platform::metrics::{ConnectionStats, PoolStats};
use platform::records::Database;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use queue_core::Connections;

/// The `route` of a request that matched no route.
pub(crate) const UNMATCHED: &str = "unmatched";

/// How an upload that reached the handler (with a valid token) ended: `uploads_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UploadOutcome {
    /// 202: stored and recorded.
    Accepted,
    /// 202 again for an `Idempotency-Key` already answered; nothing new is kept.
    Replayed,
    /// 413: over `MAX_UPLOAD_BYTES`.
    TooLarge,
    /// Any other 4xx: the request was refused (body, filename, callback, idempotency key...).
    Rejected,
    /// 5xx: a dependency was down, or a bug; nothing is kept.
    Failed,
}

impl UploadOutcome {
    const ALL: [UploadOutcome; 5] = [
        UploadOutcome::Accepted,
        UploadOutcome::Replayed,
        UploadOutcome::TooLarge,
        UploadOutcome::Rejected,
        UploadOutcome::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            UploadOutcome::Accepted => "accepted",
            UploadOutcome::Replayed => "replayed",
            UploadOutcome::TooLarge => "too_large",
            UploadOutcome::Rejected => "rejected",
            UploadOutcome::Failed => "failed",
        }
    }
}

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

type OutcomeLabels = [(&'static str, &'static str); 1];

fn duration_histogram() -> Histogram {
    // 5 ms to about 41 s; longer uploads land in +Inf.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The registry and the series the service records into.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    uploads: Family<OutcomeLabels, Counter>,
    upload_bytes: Counter,
}

impl Metrics {
    /// Registers everything, with `connections` and `database`'s pool read at each scrape.
    pub(crate) fn new(connections: Connections, database: Database) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let uploads = Family::<OutcomeLabels, Counter>::default();
        let upload_bytes = Counter::default();
        registry.register("http_requests", "HTTP requests answered, by route, method and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time until the response's head was ready, by route and method",
            durations.clone(),
        );
        registry.register("uploads", "Uploads that reached the handler, by outcome", uploads.clone());
        registry.register("upload_bytes", "Bytes of accepted uploads", upload_bytes.clone());
        registry.register_collector(Box::new(ConnectionStats::new(connections)));
        registry.register_collector(Box::new(PoolStats::new(database)));
        // Every outcome is a series from the start, so a rate over the first one is not lost.
        for outcome in UploadOutcome::ALL {
            let _ = uploads.get_or_create(&[("outcome", outcome.as_str())]);
        }
        Metrics { registry, requests, durations, uploads, upload_bytes }
    }

    /// Counts a request to `route` (a pattern, `None` when no route matched).
    fn request(&self, route: Option<String>, method: &Method, status: StatusCode, took: Duration) {
        let route = route.unwrap_or_else(|| UNMATCHED.to_owned());
        let method = method_label(method);
        self.durations.get_or_create(&RouteLabels { route: route.clone(), method }).observe(took.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { route, method, status: status.as_u16() }).inc();
    }

    /// Counts an upload; `bytes` are added to `upload_bytes_total` when it was accepted.
    pub(crate) fn upload(&self, outcome: UploadOutcome, bytes: u64) {
        self.uploads.get_or_create(&[("outcome", outcome.as_str())]).inc();
        if outcome == UploadOutcome::Accepted {
            self.upload_bytes.inc_by(bytes);
        }
    }

    /// The text exposition.
    pub(crate) fn encode(&self) -> String {
        platform::metrics::encode(&self.registry)
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

/// The middleware (`actix_web::middleware::from_fn(metrics::middleware)`), with the [`Metrics`]
/// in the app data.
pub(crate) async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let Some(metrics) = req.app_data::<web::Data<Metrics>>().cloned() else {
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
    metrics.request(route, &method, status, started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
