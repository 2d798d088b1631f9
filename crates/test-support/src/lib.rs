//! Test helpers shared by the workspace's integration tests.
//!
//! * [`redis_url`] and [`unique`]: the shared Redis to test against, and unique queue names /
//!   key prefixes that isolate one test from another on it.
//! * [`RedisServer`]: a private, disposable `redis-server` process (AOF on, `appendfsync always`)
//!   that a test may kill, restart, pause and resume.
//! * [`resp_command`]: one raw RESP command over a plain TCP socket, without async or a Redis
//!   client crate (for `CONFIG SET`, `DEBUG SLEEP`, and readiness checks).
//! * [`fresh_database`]: a new, empty Postgres database per test, on the test server.
//! * [`files_under`]: every file below a directory (what a test left on disk).
//! * [`Garage`]: a private single-node Garage (S3-compatible object storage) for S3 mode.
//! * [`Media`] and [`probe`]: test media made by ffmpeg's `lavfi` sources, and ffprobe's view of
//!   what a worker made.
//! * [`Netns`]: a network namespace behind a veth pair whose latency and loss a test sets, for
//!   Redis and Postgres across a production-like network ([`RedisServer::start_in`],
//!   [`PostgresServer::start_in`]).
//! * [`NodePeer`]: runs the pinned Node Bull 4 peer (`tests/node/bull-peer.js`) for interop tests.
#![warn(missing_docs)]

mod files;
mod garage;
mod media;
mod names;
mod netns;
mod node_peer;
mod postgres;
mod postgres_server;
mod redis_server;
mod resp;

pub use files::files_under;
pub use garage::{BucketCounts, GARAGE_ACCESS_KEY, GARAGE_BUCKET, GARAGE_SECRET_KEY, Garage, garage_binary};
pub use media::{Media, probe};
pub use names::{redis_url, unique};
pub use netns::{LinkCounts, LinkShape, Netns};
pub use node_peer::NodePeer;
pub use postgres::{database_url, fresh_database};
pub use postgres_server::{PostgresServer, StopMode, postgres_available};
pub use redis_server::RedisServer;
pub use resp::{RespConnection, resp_command};
