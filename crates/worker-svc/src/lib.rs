//! worker-svc: processes the files api-svc stores and delivers their callbacks.
//!
//! It consumes two queues with queue-core's worker, in zero-blocking mode by default (one
//! command and one subscriber connection for both queues):
//! - `files`: verify the upload's sha256, detect its type from its content, and for images,
//!   audio and video read their metadata with ffprobe and make derivatives with ffmpeg
//!   (thumbnail, preview, waveform), reporting progress; Postgres is updated before the job
//!   completes in Redis;
//! - `webhooks`: POST a finished file's result to its `callback_url`, signed per Standard
//!   Webhooks, retried with backoff, every attempt recorded.
//!
//! A reconciler re-enqueues what Postgres knows and Redis lost. `/livez` and `/metrics` are
//! served on `METRICS_ADDR`. `main.rs` only reads the configuration and calls [`run`]; tests
//! call [`App::build`] in-process.
//!
//! Layers, each importing only from those before it in this list: `signature`, `config`,
//! `detect`, `scratch`, `interrupt`, `media` (pure pieces); `ffmpeg` (running the tools);
//! `metrics`, `drain`, `context` (shared state); `callback`; `files`, `webhooks` (the
//! handlers); `reconciler`; `app` (wiring and shutdown).
#![warn(missing_docs)]

mod app;
mod callback;
mod config;
mod context;
mod detect;
mod drain;
mod ffmpeg;
mod files;
mod interrupt;
mod media;
mod metrics;
mod reconciler;
mod scratch;
mod signature;
mod webhooks;

pub use app::{App, SERVICE, run};
pub use config::{
    Config, DEFAULT_DRAIN_DEADLINE, DEFAULT_FFMPEG_THREADS, DEFAULT_FILES_CONCURRENCY, DEFAULT_JOB_TIMEOUT,
    DEFAULT_METRICS_ADDR, DEFAULT_NICE, DEFAULT_PREVIEW_SECONDS, DEFAULT_RECONCILE_INTERVAL, DEFAULT_RECONCILE_MIN_AGE,
    DEFAULT_WEBHOOK_CONCURRENCY, DEFAULT_WEBHOOK_TIMEOUT, KNOWN_VARS, MediaConfig,
};
pub use reconciler::LOCK_KEY as RECONCILER_LOCK_KEY;
pub use signature::WebhookSecret;
