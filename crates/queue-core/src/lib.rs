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

mod blocking;
mod budget;
mod command;
mod config;
mod connections;
mod connector;
mod error;
mod events;
mod handler;
mod heartbeat;
mod job;
mod keys;
mod options;
mod queue;
mod repeat;
mod role;
mod scripts;
mod subscriber;
mod worker;

pub use blocking::{BLOCK_MARGIN, BlockingPool};
pub use budget::{BudgetStats, ConnectionBudget, ConnectionPlan, RoleStats};
pub use command::CommandConnection;
pub use config::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_PREFIX, DEFAULT_REDIS_URL,
    RedisConfig, RedisUrl,
};
pub use connections::{Connections, ConnectionsBuilder};
pub use error::{Error, Result};
pub use events::{FINISHED_WATCHDOG, QueueEvent, QueueEvents, wait_until_finished};
pub use handler::{ActiveJob, Handler, HandlerFuture, Outcome, handler};
pub use heartbeat::{
    DEFAULT_HEARTBEAT_INTERVAL, HEARTBEAT_NAMESPACE, HeartbeatRecord, beat as heartbeat, live as live_heartbeats,
    spawn as spawn_heartbeat,
};
pub use job::{DEFAULT_JOB_NAME, Job, JobState};
pub use keys::{
    DELAYED_TIEBREAK_MASK, QueueKeys, RESERVED_SUFFIXES, delayed_score, due_from_score, escape_glob,
    validate_existing_job_id, validate_job_id, validate_prefix, validate_queue_name,
};
pub use options::{Backoff, JobOptions, KeepJobs, RepeatOptions};
pub use queue::{DEFAULT_BATCH, JobCounts, JobLogs, NewJob, Queue, now_ms};
pub use repeat::{iteration_id, next_millis, repeat_key};
pub use role::Role;
pub use subscriber::{PubSubMessage, Subscriber, SubscriberEvent};
pub use worker::{
    BackoffStrategy, DEFAULT_DRAIN_DELAY, DEFAULT_ERROR_BACKOFF, DEFAULT_GUARD_INTERVAL, DEFAULT_LOCK_DURATION,
    DEFAULT_MAX_STALLED_COUNT, DEFAULT_STALLED_INTERVAL, QueueSpec, RateLimit, Worker, WorkerSettings, WorkerStats,
};
