//! The stack as it is deployed, for end-to-end tests: the `api-svc` and `worker-svc` binaries
//! run as child processes with nothing but their environment, against real Redis, Postgres and
//! ffmpeg, and are driven only from outside (HTTP, signals, Redis, the database).
//!
//! * [`Service`]: one binary as a child process, its log in a file, stopped on drop.
//! * [`ChaosProxy`]: a TCP proxy that cuts and restores links (an outage of a shared server),
//!   and [`through`], a Postgres URL rewritten to go through it.
//! * [`receiver`]: a callback receiver that records requests and answers from a script, and
//!   [`receiver::verify`], the Standard Webhooks reference library's verdict on a request.
//! * [`exposition`]: a service's `/metrics` read by the Prometheus reference parser
//!   ([`scrape`]), with the values a test compares.
//! * [`Stack`]: both services on one place (a Redis prefix, a fresh database, one storage
//!   directory), with the requests a client makes and the ledger a test checks.
//!
//! The binaries are taken from the target directory this test was built in; `scripts/test`
//! (a workspace run) builds them. A binary older than its sources is refused rather than tested.
#![warn(missing_docs)]

pub mod exposition;
mod proxy;
pub mod receiver;
mod service;
mod stack;

pub use exposition::{Exposition, scrape};
pub use proxy::{ChaosProxy, through};
pub use service::{Service, binary, free_addr};
pub use stack::{Stack, StackOptions, TOKEN, WEBHOOK_SECRET, eventually};
