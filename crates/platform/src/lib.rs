//! What every service of the product stands on, written once so that api-svc, worker-svc and
//! health-svc cannot drift apart:
//!
//! - [`callback`]: which callback URLs may be called (SSRF guard);
//! - [`env`]: typed configuration from the environment; a bad or unknown-but-ours variable stops
//!   start-up naming it;
//! - [`telemetry`]: `tracing` with `LOG_FORMAT=json|pretty`;
//! - [`shutdown`]: the SIGTERM/Ctrl-C future a `main` awaits;
//! - [`healthcheck`]: `<service> --healthcheck`, a container's `HEALTHCHECK` without curl;
//! - [`redis`]: the process's Redis connections through queue-core, endpoint logged once,
//!   password redacted, never rewritten;
//! - [`jobs`]: the job contract (queues and versioned payloads);
//! - [`metrics`]: the HTTP request series and their middleware, and the Prometheus collectors of
//!   the Redis connections and the Postgres pool;
//! - [`records`]: the system of record in Postgres, with its migrations;
//! - [`storage`]: files, through `object_store`.
#![warn(missing_docs)]

pub mod callback;
pub mod env;
pub mod healthcheck;
pub mod jobs;
pub mod metrics;
pub mod records;
pub mod redis;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
