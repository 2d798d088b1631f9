//! What every handler and the reconciler share: the process's handles to Postgres, storage,
//! Redis queues and tools, and its shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use platform::callback::CallbackPolicy;
use platform::records::Database;
use platform::storage::Storage;
use queue_core::Queue;
use tokio::sync::watch;

use crate::drain::Drain;
use crate::ffmpeg::Tools;
use crate::metrics::Metrics;
use crate::scratch::ScratchRoot;
use crate::signature::WebhookSecret;

/// The process's shared state. Handlers hold it in an `Arc`.
#[derive(Debug)]
pub(crate) struct Context {
    /// The system of record.
    pub db: Database,
    /// Uploads and artifacts.
    pub storage: Storage,
    /// The `files` queue (the reconciler adds to it).
    pub files: Queue,
    /// The `webhooks` queue (finished files add their callback to it).
    pub webhooks: Queue,
    /// ffmpeg and ffprobe.
    pub tools: Tools,
    /// This process's scratch root.
    pub scratch: ScratchRoot,
    /// Which callback URLs may be called.
    pub callbacks: CallbackPolicy,
    /// The callback signing key.
    pub secret: Option<WebhookSecret>,
    /// Limit of one callback POST.
    pub webhook_timeout: Duration,
    /// Limit of one file job.
    pub job_timeout: Duration,
    /// This process in the executions ledger: `worker-svc/<host>/<pid>`.
    pub instance: String,
    /// Becomes true when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// Per-job metrics.
    pub metrics: Arc<Metrics>,
    /// Running and parked handlers.
    pub drain: Arc<Drain>,
}

/// `worker-svc/<host>/<pid>`.
pub(crate) fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("worker-svc/{host}/{}", std::process::id())
}
