//! A Redis job queue that speaks Bull 4's protocol, with explicit connection roles and a hard
//! connection budget.
//!
//! ```no_run
//! use queue_core::{Connections, JobOptions, Queue, RedisConfig};
//!
//! # async fn example() -> queue_core::Result<()> {
//! let config = RedisConfig::from_env()?;
//! let connections = Connections::builder(config, "api-svc").build()?;
//! let files = Queue::new(&connections, "files")?;
//! let id = files.add("__default__", &serde_json::json!({"path": "/data/a.mp4"}), JobOptions::default()).await?;
//! println!("added job {id}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod bull;
mod clock;
mod connection;
mod connections;
mod error;
mod events;
mod handler;
mod heartbeat;
mod queue;
mod worker;

pub use bull::job::{DEFAULT_JOB_NAME, Job, JobState};
pub use bull::keys::{
    DELAYED_TIEBREAK_MASK, HEARTBEAT_NAMESPACE, QueueKeys, RESERVED_SUFFIXES, delayed_score, due_from_score,
    escape_glob, validate_existing_job_id, validate_job_id, validate_queue_name,
};
pub use bull::options::{Backoff, JobOptions, KeepJobs, RepeatOptions};
pub use bull::repeat::{iteration_id, next_millis, repeat_key};
pub use clock::now_ms;
pub use connection::blocking::{BLOCK_MARGIN, BlockingPool};
pub use connection::budget::{BudgetStats, ConnectionBudget, ConnectionPlan, RoleStats};
pub use connection::command::CommandConnection;
pub use connection::config::validate_prefix;
pub use connection::config::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_PREFIX, DEFAULT_REDIS_URL,
    RedisConfig, RedisUrl,
};
pub use connection::role::Role;
pub use connection::subscriber::{PubSubMessage, Subscriber, SubscriberEvent};
pub use connections::{Connections, ConnectionsBuilder};
pub use error::{Error, Result};
pub use events::{FINISHED_WATCHDOG, QueueEvent, QueueEvents, wait_until_finished};
pub use handler::{ActiveJob, Handler, HandlerFuture, Outcome, handler};
pub use heartbeat::{
    DEFAULT_HEARTBEAT_INTERVAL, HeartbeatRecord, beat as heartbeat, live as live_heartbeats, spawn as spawn_heartbeat,
};
pub use queue::{DEFAULT_BATCH, JobCounts, JobLogs, NewJob, Queue};
pub use worker::{
    BackoffStrategy, DEFAULT_DRAIN_DELAY, DEFAULT_ERROR_BACKOFF, DEFAULT_GUARD_INTERVAL, DEFAULT_LOCK_DURATION,
    DEFAULT_MAX_STALLED_COUNT, DEFAULT_STALLED_INTERVAL, QueueSpec, RateLimit, StopWhen, Worker, WorkerSettings,
    WorkerStats,
};
