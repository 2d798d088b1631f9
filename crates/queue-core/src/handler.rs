//! What a job handler receives and returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bull::job::Job;
use crate::error::{Error, Result};
use crate::queue::Queue;

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Success: the value is stored as the job's `returnvalue`.
    Completed(Value),
    /// A failed attempt, retried according to the job's `attempts` and `backoff`.
    Retry(String),
    /// A failed attempt, retried after this long if attempts are left (the job's backoff is
    /// ignored).
    RetryAfter(Duration, String),
    /// A failure that no retry can fix: the job fails now, whatever attempts are left.
    Unrecoverable(String),
}

impl Outcome {
    /// `Ok(v)` completes with `v` serialized; `Err(e)` is [`Outcome::Retry`] with `e`'s message
    /// and its causes: formatted with `{:#}`, which an `anyhow::Error` prints as its whole chain
    /// (`reading x: permission denied`).
    pub fn from_result<T: serde::Serialize, E: std::fmt::Display>(result: std::result::Result<T, E>) -> Self {
        match result {
            Ok(value) => match serde_json::to_value(value) {
                Ok(value) => Outcome::Completed(value),
                Err(e) => Outcome::Unrecoverable(format!("return value is not JSON-serialisable: {e}")),
            },
            Err(e) => Outcome::Retry(format!("{e:#}")),
        }
    }
}

/// The boxed future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// A job handler: called once per attempt, on the worker's handler threads.
pub type Handler = Arc<dyn Fn(ActiveJob) -> HandlerFuture + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(ActiveJob) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Arc::new(move |job| Box::pin(f(job)))
}

/// Wraps an async closure that takes the job's data decoded as `T`. Data that does not decode
/// (written by another producer, or by an older version) fails the job for good with serde's
/// message, without calling `f`; the worker goes on with the next job.
pub fn typed_handler<T, F, Fut>(f: F) -> Handler
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(ActiveJob, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Arc::new(move |job: ActiveJob| -> HandlerFuture {
        match job.data_as::<T>() {
            Ok(data) => Box::pin(f(job, data)),
            Err(e) => {
                tracing::warn!(error = %e, "failing a job whose data does not decode");
                Box::pin(std::future::ready(Outcome::Unrecoverable(e.to_string())))
            }
        }
    })
}

/// A job being processed, handed to the handler: its data plus progress and log calls.
#[derive(Clone)]
pub struct ActiveJob {
    job: Arc<Job>,
    queue: Queue,
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for ActiveJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveJob").field("queue", &self.queue.name()).field("id", &self.job.id).finish()
    }
}

impl ActiveJob {
    pub(crate) fn new(job: Arc<Job>, queue: Queue, lost: Arc<AtomicBool>) -> Self {
        ActiveJob { job, queue, lost }
    }

    /// The job as read when it was taken.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.job.id
    }

    /// The job name.
    pub fn name(&self) -> &str {
        &self.job.name
    }

    /// The job data.
    pub fn data(&self) -> &Value {
        &self.job.data
    }

    /// The job data decoded as `T`; [`Error::JobData`] (never worth a retry) when it does not
    /// decode.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.job.data).map_err(|source| Error::JobData {
            id: self.job.id.clone(),
            expected: std::any::type_name::<T>(),
            source,
        })
    }

    /// Which attempt this is, 1 on the first.
    pub fn attempt(&self) -> u64 {
        self.job.attempts_made + 1
    }

    /// The queue the job belongs to.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Whether this worker lost the job's lock (another worker may be running it now). A long
    /// handler may check this and stop early: its result will be discarded anyway.
    pub fn lock_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Reports progress (any JSON); stored in the job and published on `progress`.
    pub async fn progress(&self, progress: Value) -> Result<()> {
        self.queue.update_progress(&self.job.id, &progress).await
    }

    /// Appends a line to the job's log.
    pub async fn log(&self, line: &str) -> Result<u64> {
        self.queue.add_log(&self.job.id, line).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reason_keeps_the_whole_cause_chain() {
        let err = anyhow::anyhow!("permission denied").context("reading /data/a.mp4");
        let outcome = Outcome::from_result::<(), _>(Err(err));
        assert_eq!(outcome, Outcome::Retry("reading /data/a.mp4: permission denied".into()));
        assert_eq!(Outcome::from_result::<_, String>(Ok(3)), Outcome::Completed(serde_json::json!(3)));
    }
}
