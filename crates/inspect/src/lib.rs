//! What an operator reads about the Redis server and the services on it, computed once for
//! every tool that shows it (`queuectl connections` and `doctor`, health-svc's `/ops`): read
//! only, through the process's own command connection.
//!
//! * [`clients`]: `CLIENT LIST` parsed, and grouped by service and role against the budgets the
//!   services declare in their heartbeats.
//! * [`server`]: `INFO`, a few `CONFIG GET`s, and a `PING` latency sample.
#![warn(missing_docs)]

pub mod clients;
pub mod server;
