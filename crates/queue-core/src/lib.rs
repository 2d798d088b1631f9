//! A Redis job queue that speaks Bull 4's protocol, with explicit connection roles and a hard
//! connection budget.
//!
//! A process builds one [`Connections`] (its budget, one connection per role, its heartbeat)
//! and takes the handles it needs from it, no more:
//!
//! | Handle | For | Can |
//! |---|---|---|
//! | [`QueueView`] | health checks, dashboards | read counts, jobs, states, logs; never write |
//! | [`Queue`] | producers (an API) | add jobs, report progress; reads as a view does |
//! | [`QueueAdmin`] | operator tools | pause, resume, retry, promote, clean, obliterate |
//! | [`Worker`] | consumers | process jobs with [`handler`]/[`typed_handler`], until a shutdown |
//! | [`QueueEvents`] | listeners | Bull's global events, over the one subscriber |
//!
//! Raw Redis access, the blocking pool and key helpers are in [`tooling`], for tools and tests.
//!
//! ```no_run
//! use queue_core::{Connections, JobOptions, Queue, RedisConfig};
//!
//! # async fn example() -> queue_core::Result<()> {
//! let config = RedisConfig::from_env()?;
//! let connections = Connections::builder(config, "api-svc").build()?;
//! let files = Queue::new(&connections, "files")?;
//! let id = files.add("__default__", &serde_json::json!({"path": "/data/a.mp4"}), JobOptions::default()).await?;
//! println!("added job {id}, now {:?}", files.get_job_state(&id).await?);
//! connections.close().await;
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
pub mod tooling;
mod worker;

// A process's connections: one per role, a hard budget, a heartbeat.
pub use connection::budget::{BudgetStats, ConnectionPlan, RoleStats};
pub use connection::config::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_REDIS_URL, RedisConfig, RedisUrl,
};
pub use connection::role::Role;
pub use connections::{Connections, ConnectionsBuilder};
pub use heartbeat::{DEFAULT_HEARTBEAT_INTERVAL, HeartbeatRecord};

// Jobs and queues, in Bull's shapes.
pub use bull::job::{DEFAULT_JOB_NAME, Job, JobState};
pub use bull::options::{Backoff, JobOptions, KeepJobs, RepeatOptions};
pub use queue::{CleanProgress, JobCounts, JobLogs, NewJob, Queue, QueueAdmin, QueueView};

// How much one script call may touch: every operation on many jobs works in slices.
pub use bull::slices::{
    DEFAULT_ADD_SLICE, DEFAULT_CLEAN_SLICE, DEFAULT_KEEP_SLICE, DEFAULT_OBLITERATE_SLICE, DEFAULT_PROMOTE_SLICE,
    DEFAULT_RENEW_SLICE, DEFAULT_RETRY_SLICE, DEFAULT_STALLED_SLICE, MAX_SLICE, Slices,
};

// Processing.
pub use handler::{ActiveJob, Handler, HandlerFuture, Outcome, handler, typed_handler};
pub use worker::{
    BackoffStrategy, DEFAULT_DRAIN_DELAY, DEFAULT_ERROR_BACKOFF, DEFAULT_GUARD_INTERVAL, DEFAULT_LOCK_DURATION,
    DEFAULT_MAX_STALLED_COUNT, DEFAULT_STALLED_INTERVAL, QueueSpec, RateLimit, StopWhen, Worker, WorkerSettings,
    WorkerStats, WorkerStatsHandle,
};

// Bull's global events.
pub use events::{FINISHED_WATCHDOG, QueueEvent, QueueEvents, wait_until_finished};

pub use error::{Error, Result};
