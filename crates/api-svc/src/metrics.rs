//! The service's Prometheus metrics, served at `/metrics` in the text format:
//!
//! - `http_requests_total{route,method,status}` and `http_request_duration_seconds{route,method}`,
//!   platform's [`RequestMetrics`], recorded by `platform::metrics::middleware` under the
//!   route's pattern (`/v1/files/{id}`), never the path;
//! - `uploads_total{outcome}` and `upload_bytes_total` (the bytes of accepted uploads), recorded
//!   by the upload handler;
//! - the Redis connections by role and the Postgres pool, platform's collectors, read at each
//!   scrape.

use platform::metrics::{ConnectionStats, PoolStats, RequestMetrics};
use platform::records::Database;
use platform::storage::Storage;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use queue_core::Connections;

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

type OutcomeLabels = [(&'static str, &'static str); 1];

/// The registry and the series the service records into.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: RequestMetrics,
    uploads: Family<OutcomeLabels, Counter>,
    upload_bytes: Counter,
}

impl Metrics {
    /// Registers everything, with `connections` and `database`'s pool read at each scrape.
    pub(crate) fn new(connections: Connections, database: Database, storage: &Storage) -> Self {
        let mut registry = Registry::default();
        let requests = RequestMetrics::register(&mut registry);
        let uploads = Family::<OutcomeLabels, Counter>::default();
        let upload_bytes = Counter::default();
        registry.register("uploads", "Uploads that reached the handler, by outcome", uploads.clone());
        registry.register("upload_bytes", "Bytes of accepted uploads", upload_bytes.clone());
        storage.report(&mut registry, &connections);
        registry.register_collector(Box::new(ConnectionStats::new(connections)));
        registry.register_collector(Box::new(PoolStats::new(database)));
        // Every outcome is a series from the start, so a rate over the first one is not lost.
        for outcome in UploadOutcome::ALL {
            let _ = uploads.get_or_create(&[("outcome", outcome.as_str())]);
        }
        Metrics { registry, requests, uploads, upload_bytes }
    }

    /// The request series, which the middleware finds in the app data.
    pub(crate) fn requests(&self) -> &RequestMetrics {
        &self.requests
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
