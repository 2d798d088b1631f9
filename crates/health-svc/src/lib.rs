//! health-svc: where an operator, a load balancer and Prometheus look first.
//!
//! - `/livez`: the process is up.
//! - `/readyz`: Redis `PING` and Postgres `SELECT 1`, cached ([`readiness`]); `?deep=1` also
//!   needs the canary ([`canary`]) to have come back recently.
//! - `/ops/queue` (JSON) and `/ops` (a page): queues, live processes, Redis connections by
//!   service and role against budgets, the server's settings, the canary, and what is wrong
//!   ([`ops`], [`page`]).
//! - `/metrics`: Prometheus text format ([`metrics`]).
//!
//! One Redis connection (command role) and a one-connection Postgres pool, whatever the request
//! rate. Read-only on Redis but for the canary's jobs.

mod app;
pub mod canary;
mod config;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod readiness;

pub use app::App;
pub use config::{CHECKED_PREFIXES, Config};
