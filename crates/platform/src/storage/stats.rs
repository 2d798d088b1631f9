//! What the store was asked and how it answered, by operation: requests, errors, bytes and
//! latency, counted by [`Storage`](super::Storage) around every request it makes.
//!
//! Two readers: a service's `/metrics` ([`StoreStats::register`]: `storage_requests_total{op}`,
//! `storage_errors_total{op}`, `storage_bytes_total{op}` and the histogram
//! `storage_request_duration_seconds{op}`), and health-svc's `/ops`, which gets a
//! [`StoreSnapshot`] from each process's heartbeat. An S3 upload is several requests
//! (`create_upload`, one `put_part` per 5 MiB, then `complete_upload` or `abort_upload`), so a
//! slow store shows in `put_part` whatever the client's pace; `get` is timed until the
//! response's head arrives, and its bytes are counted as the body is read.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// One kind of request to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreOp {
    /// Starts a multipart upload.
    CreateUpload,
    /// Sends one part of an upload.
    PutPart,
    /// Completes an upload: the object appears.
    CompleteUpload,
    /// Aborts an upload: its parts are dropped.
    AbortUpload,
    /// Reads an object (or a range of it).
    Get,
    /// Reads an object's size and ETag.
    Head,
    /// Deletes an object.
    Delete,
    /// Lists keys (deleting a file's objects, the readiness probe).
    List,
}

impl StoreOp {
    /// Every operation, in the order the series list them.
    pub const ALL: [StoreOp; 8] = [
        StoreOp::CreateUpload,
        StoreOp::PutPart,
        StoreOp::CompleteUpload,
        StoreOp::AbortUpload,
        StoreOp::Get,
        StoreOp::Head,
        StoreOp::Delete,
        StoreOp::List,
    ];

    /// Its label.
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::CreateUpload => "create_upload",
            StoreOp::PutPart => "put_part",
            StoreOp::CompleteUpload => "complete_upload",
            StoreOp::AbortUpload => "abort_upload",
            StoreOp::Get => "get",
            StoreOp::Head => "head",
            StoreOp::Delete => "delete",
            StoreOp::List => "list",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    micros: AtomicU64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The last failure, for `/ops`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    /// The operation that failed.
    pub op: String,
    /// Why (no credentials: object_store's errors name the key and the status).
    pub error: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// The counters of one store, shared by every clone of its [`Storage`](super::Storage).
#[derive(Debug)]
pub struct StoreStats {
    backend: &'static str,
    ops: [OpCounters; StoreOp::ALL.len()],
    latency: Family<OpLabel, Histogram, fn() -> Histogram>,
    last_error: Mutex<Option<LastError>>,
}

impl StoreStats {
    pub(super) fn new(backend: &'static str) -> Self {
        StoreStats {
            backend,
            ops: Default::default(),
            latency: Family::new_with_constructor(latency_histogram),
            last_error: Mutex::new(None),
        }
    }

    /// Counts one request of `op` that took `took`; `error` when it failed.
    pub(super) fn record(&self, op: StoreOp, took: Duration, error: Option<&dyn std::fmt::Display>) {
        let counters = &self.ops[op.index()];
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.latency.get_or_create(&OpLabel { op: op.name() }).observe(took.as_secs_f64());
        if let Some(error) = error {
            self.failed(op, error);
        }
    }

    /// Counts a failure of `op` found after its request was counted (a body that broke off).
    pub(super) fn failed(&self, op: StoreOp, error: &dyn std::fmt::Display) {
        self.ops[op.index()].errors.fetch_add(1, Ordering::Relaxed);
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let last = LastError { op: op.name().to_owned(), error: without_userinfo(&error.to_string()), at_ms };
        *self.last_error.lock().expect("store stats lock") = Some(last);
    }

    /// Counts `n` bytes sent (`put_part`) or received (`get`).
    pub(super) fn bytes(&self, op: StoreOp, n: u64) {
        self.ops[op.index()].bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Registers the series in `registry` (see the module docs). They read these counters at
    /// each scrape.
    pub fn register(self: &std::sync::Arc<Self>, registry: &mut Registry) {
        registry.register(
            "storage_request_duration_seconds",
            "Time of a request to the file store, by operation (get: until the response's head)",
            self.latency.clone(),
        );
        registry.register_collector(Box::new(Series(std::sync::Arc::clone(self))));
    }

    /// The counters now, for a heartbeat.
    pub fn snapshot(&self) -> StoreSnapshot {
        let ops = StoreOp::ALL
            .iter()
            .filter_map(|op| {
                let c = &self.ops[op.index()];
                let requests = c.requests.load(Ordering::Relaxed);
                (requests > 0).then(|| {
                    let micros = c.micros.load(Ordering::Relaxed);
                    let snapshot = OpSnapshot {
                        requests,
                        errors: c.errors.load(Ordering::Relaxed),
                        bytes: c.bytes.load(Ordering::Relaxed),
                        mean_ms: micros as f64 / requests as f64 / 1000.0,
                    };
                    (op.name().to_owned(), snapshot)
                })
            })
            .collect();
        StoreSnapshot {
            backend: self.backend.to_owned(),
            ops,
            last_error: self.last_error.lock().expect("store stats lock").clone(),
        }
    }
}

/// One operation's counters since the process started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpSnapshot {
    /// Requests made.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Bytes sent or received.
    pub bytes: u64,
    /// Mean time per request, in milliseconds.
    pub mean_ms: f64,
}

/// A process's store counters, as its heartbeat carries them to `/ops`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreSnapshot {
    /// `local` or `s3`.
    pub backend: String,
    /// By operation name, only those used.
    pub ops: BTreeMap<String, OpSnapshot>,
    /// The last failure, if any.
    pub last_error: Option<LastError>,
}

/// `text` with the userinfo of every URL in it (`scheme://user:secret@host`) taken out: a
/// store's error names the request's URL, and the last error travels to Redis and `/ops`.
fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after.find(|c: char| c == '/' || c.is_whitespace()).unwrap_or(after.len());
        let authority = &after[..end];
        out.push_str(authority.rsplit_once('@').map_or(authority, |(_, host)| host));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The name under which processes put their [`StoreSnapshot`] in their heartbeat.
pub const HEARTBEAT_FACT: &str = "storage";

/// The counter series, read at each scrape.
#[derive(Debug)]
struct Series(std::sync::Arc<StoreStats>);

type CounterSeries = (&'static str, &'static str, fn(&OpCounters) -> &AtomicU64);

const COUNTERS: &[CounterSeries] = &[
    ("storage_requests", "Requests to the file store, by operation.", |c| &c.requests),
    ("storage_errors", "Requests to the file store that failed, by operation.", |c| &c.errors),
    ("storage_bytes", "Bytes sent to (put_part) or read from (get) the file store, by operation.", |c| &c.bytes),
];

impl Collector for Series {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, read) in COUNTERS {
            let mut series = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for op in StoreOp::ALL {
                let value = read(&self.0.ops[op.index()]).load(Ordering::Relaxed);
                let labels = [("op", op.name())];
                series.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
        let mut info = encoder.encode_descriptor(
            "storage_backend",
            "The file store in use (1 for the backend label: local or s3).",
            None,
            MetricType::Gauge,
        )?;
        info.encode_family(&[("backend", self.0.backend)])?.encode_gauge(&1i64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_errors_and_bytes_by_operation() {
        let stats = std::sync::Arc::new(StoreStats::new("s3"));
        let mut registry = Registry::default();
        stats.register(&mut registry);
        stats.record(StoreOp::PutPart, Duration::from_millis(4), None);
        stats.bytes(StoreOp::PutPart, 5 << 20);
        stats.record(StoreOp::Get, Duration::from_millis(2), Some(&"connection refused"));
        let text = crate::metrics::encode(&registry);
        assert!(text.contains(r#"storage_requests_total{op="put_part"} 1"#), "{text}");
        assert!(text.contains(r#"storage_bytes_total{op="put_part"} 5242880"#), "{text}");
        assert!(text.contains(r#"storage_errors_total{op="get"} 1"#), "{text}");
        assert!(text.contains(r#"storage_errors_total{op="put_part"} 0"#), "{text}");
        assert!(text.contains(r#"storage_request_duration_seconds_count{op="get"} 1"#), "{text}");
        assert!(text.contains(r#"storage_backend{backend="s3"} 1"#), "{text}");

        let snapshot = stats.snapshot();
        assert_eq!(snapshot.ops.keys().collect::<Vec<_>>(), ["get", "put_part"]);
        assert_eq!(snapshot.ops["put_part"].mean_ms, 4.0);
        let last = snapshot.last_error.unwrap();
        assert_eq!((last.op.as_str(), last.error.as_str()), ("get", "connection refused"));
        stats.record(StoreOp::Head, Duration::ZERO, Some(&"GET http://key:secret@garage:3900/files/x failed"));
        assert_eq!(stats.snapshot().last_error.unwrap().error, "GET http://garage:3900/files/x failed");
    }
}
