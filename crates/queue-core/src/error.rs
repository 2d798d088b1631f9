//! The one error type of `queue-core`, with classification methods so callers never match on
//! variants to decide whether to retry.

use std::time::Duration;

use crate::connection::role::Role;

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `queue-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; `var` names the variable or setting.
    #[error("invalid {var}: {message}")]
    Config {
        /// The environment variable or setting at fault.
        var: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// The connections a configuration needs exceed `REDIS_MAX_CONNECTIONS`.
    #[error("connection budget exceeded: {needed} connections needed ({detail}) but REDIS_MAX_CONNECTIONS is {budget}")]
    BudgetTooSmall {
        /// Sum over roles.
        needed: usize,
        /// The budget.
        budget: usize,
        /// Each role and its count, e.g. `command 1, subscriber 1, blocking 3`.
        detail: String,
    },

    /// Opening one more connection would exceed the budget; nothing was opened.
    #[error("no connection permit left for role {role} (budget {budget})")]
    BudgetExhausted {
        /// The role that asked.
        role: Role,
        /// The budget.
        budget: usize,
    },

    /// A call did not complete within its limit. The connection may still be healthy.
    #[error("redis {role} {what} timed out after {}ms", after.as_millis())]
    Timeout {
        /// The role whose call timed out.
        role: Role,
        /// `connect`, `command`, or `wait` (waiting for a job to finish).
        what: &'static str,
        /// The limit that was exceeded.
        after: Duration,
    },

    /// The server accepted the connection only to refuse it, saying why (`max number of
    /// clients reached` when `maxclients` is full). The next attempt may succeed.
    #[error("redis {role} connection refused by the server: {reason}")]
    Refused {
        /// The role whose connection was refused.
        role: Role,
        /// What the server said, and what to do about it.
        reason: String,
    },

    /// Redis answered with an error, or the connection failed.
    #[error("redis {role} error: {source}")]
    Redis {
        /// The role of the connection.
        role: Role,
        /// The driver's error (never carries a password).
        #[source]
        source: redis::RedisError,
    },

    /// A queue name Bull would break on.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A custom job id Bull would break on.
    #[error("invalid job id {id:?}: {reason}")]
    InvalidJobId {
        /// The id given.
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Job options Bull rejects or cannot store.
    #[error("invalid job options: {0}")]
    InvalidOptions(String),

    /// Data that cannot be stored as JSON, or a stored value that is not the JSON it should be.
    #[error("invalid json in {what}: {source}")]
    Json {
        /// Which value.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// No job with this id.
    #[error("job {0} not found")]
    JobNotFound(String),

    /// The job holds a lock (a worker is running it), so it cannot be removed or retried.
    #[error("job {0} is locked by a worker")]
    JobLocked(String),

    /// The job is not in the state the operation needs.
    #[error("job {id} is not {expected}")]
    WrongState {
        /// The job id.
        id: String,
        /// The state the operation needed, e.g. `failed` or `delayed`.
        expected: &'static str,
    },

    /// This worker no longer holds the job's lock: another worker may own it now, so the
    /// result was not written.
    #[error("lock of job {id} lost: {reason}")]
    LockLost {
        /// The job id.
        id: String,
        /// `missing` (expired) or `taken` (another worker holds it).
        reason: &'static str,
    },

    /// Obliterate refused because jobs are active and `force` was not given.
    #[error("queue {0} has active jobs; obliterate needs force")]
    ActiveJobs(String),

    /// The process closed its connections ([`Connections::close`](crate::Connections::close));
    /// nothing is opened any more.
    #[error("redis connections of this process are closed")]
    Closed,

    /// A job's data does not decode into the type its handler expects. Retrying cannot fix
    /// that, so a worker fails the job for good with this message.
    #[error("job {id}: data does not decode as {expected}: {source}")]
    JobData {
        /// The job id.
        id: String,
        /// The Rust type the data should have decoded into.
        expected: &'static str,
        /// What serde said.
        source: serde_json::Error,
    },

    /// A command that a tool asked to run on the command connection is refused there: it
    /// would block the one shared connection or change its state for every other caller.
    #[error("command {0} is refused on the shared command connection")]
    RefusedCommand(String),

    /// A bulk add failed after some of its slices were added: `added` holds their ids, in order
    /// (the first `added.len()` of the `of` jobs). Retrying the whole call would add those
    /// again, unless they have custom ids; retry the jobs after them. After a timeout, the slice
    /// that timed out may have been added as well.
    #[error("added {} of {of} jobs, then: {source}", added.len())]
    PartlyAdded {
        /// Ids of the jobs added, in order.
        added: Vec<String>,
        /// How many jobs the call had.
        of: usize,
        /// Why the next slice failed.
        #[source]
        source: Box<Error>,
    },

    /// A script returned something this crate does not understand.
    #[error("unexpected reply from script {script}: {detail}")]
    Protocol {
        /// The script.
        script: &'static str,
        /// What was unexpected.
        detail: String,
    },
}

impl Error {
    pub(crate) fn config(var: &'static str, message: impl Into<String>) -> Self {
        Error::Config { var, message: message.into() }
    }

    pub(crate) fn redis(role: Role, source: redis::RedisError) -> Self {
        if source.is_timeout() {
            // The driver's own timeouts are classified like ours.
            return Error::Timeout { role, what: "command", after: Duration::ZERO };
        }
        Error::Redis { role, source }
    }

    /// The call ran out of time (connect or command); retrying later may succeed.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::PartlyAdded { source, .. } => source.is_timeout(),
            other => matches!(other, Error::Timeout { .. }),
        }
    }

    /// The connection failed or was refused or dropped; the next call reconnects.
    pub fn is_connection_error(&self) -> bool {
        match self {
            Error::PartlyAdded { source, .. } => source.is_connection_error(),
            Error::Refused { .. } => true,
            Error::Redis { source, .. } => {
                source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || source.is_unrecoverable_error()
            }
            _ => false,
        }
    }

    /// Redis answered, but refused to run the command until later and says to wait: `LOADING`
    /// (it is loading its dataset after a restart), `BUSY` (a script runs too long),
    /// `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`. Nothing ran.
    pub fn is_server_busy(&self) -> bool {
        match self {
            Error::PartlyAdded { source, .. } => source.is_server_busy(),
            Error::Redis { source, .. } => {
                matches!(source.retry_method(), redis::RetryMethod::WaitAndRetry) || source.code() == Some("BUSY")
            }
            _ => false,
        }
    }

    /// Worth retrying as is: a timeout, a connection error, a server that says to wait, or a
    /// full budget. Never [`Error::PartlyAdded`]: retrying that call as is would add its first
    /// jobs twice.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::PartlyAdded { .. })
            && (self.is_timeout()
                || self.is_connection_error()
                || self.is_server_busy()
                || matches!(self, Error::BudgetExhausted { .. }))
    }
}
