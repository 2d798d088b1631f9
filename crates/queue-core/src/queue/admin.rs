//! The operator's handle: the repairs `queuectl` and bull-board make.

use std::time::Duration;

use crate::bull::job::JobState;
use crate::bull::keys::validate_existing_job_id;
use crate::bull::scripts::{self, Batches, PauseEvent};
use crate::clock::now_ms;
use crate::connections::Connections;
use crate::error::{Error, Result};
use crate::queue::{DEFAULT_BATCH, Queue};

/// A queue, operator side: everything a [`Queue`] does (it derefs to one) plus the repairs:
/// global pause and resume, retry, promote, clean, obliterate. Services hold a `Queue` or a
/// [`QueueView`](crate::QueueView); only tools need this.
#[derive(Clone, Debug)]
pub struct QueueAdmin {
    queue: Queue,
}

impl std::ops::Deref for QueueAdmin {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        &self.queue
    }
}

impl From<QueueAdmin> for Queue {
    fn from(admin: QueueAdmin) -> Queue {
        admin.queue
    }
}

impl From<&QueueAdmin> for Queue {
    fn from(admin: &QueueAdmin) -> Queue {
        admin.queue.clone()
    }
}

impl QueueAdmin {
    /// Queue `name` with the prefix from the connections' configuration.
    pub fn new(connections: &Connections, name: &str) -> Result<Self> {
        Ok(QueueAdmin { queue: Queue::new(connections, name)? })
    }

    /// Queue `name` under an explicit prefix.
    pub fn with_prefix(connections: &Connections, prefix: &str, name: &str) -> Result<Self> {
        Ok(QueueAdmin { queue: Queue::with_prefix(connections, prefix, name)? })
    }

    /// The operator's handle on a queue a tool already holds.
    pub fn from_queue(queue: Queue) -> Self {
        QueueAdmin { queue }
    }

    /// Pauses the queue for every worker (Bull's global pause). Active jobs finish.
    pub async fn pause(&self) -> Result<()> {
        scripts::Pause { keys: &self.keys, event: PauseEvent::Paused }.run(&self.conn).await
    }

    /// Resumes a globally paused queue.
    pub async fn resume(&self) -> Result<()> {
        scripts::Pause { keys: &self.keys, event: PauseEvent::Resumed }.run(&self.conn).await
    }

    /// Moves one failed job back to waiting (Bull's `job.retry()`).
    pub async fn retry_job(&self, id: &str) -> Result<()> {
        validate_existing_job_id(id)?;
        scripts::RetryJob { keys: &self.keys, job_id: id, now: now_ms(), token: &self.token }.run(&self.conn).await
    }

    /// Moves every failed job back to waiting, `batch` per script call; returns how many moved.
    /// `progress` is called after each batch with the number moved so far.
    pub async fn retry_all_failed(&self, batch: usize, mut progress: impl FnMut(u64)) -> Result<u64> {
        let batch = batch.max(1);
        let mut moved = 0u64;
        loop {
            let before: u64 = self.conn.query(redis::cmd("ZCARD").arg(self.keys.failed())).await?;
            let left = scripts::RetryJobs { keys: &self.keys, batch, token: &self.token }.run(&self.conn).await?;
            moved += before.saturating_sub(left).min(batch as u64);
            progress(moved);
            if left == 0 || before == 0 {
                return Ok(moved);
            }
        }
    }

    /// Moves a delayed job to waiting now.
    pub async fn promote(&self, id: &str) -> Result<()> {
        validate_existing_job_id(id)?;
        scripts::Promote { keys: &self.keys, job_id: id, token: &self.token }.run(&self.conn).await
    }

    /// Removes up to `limit` (0 = all) jobs in `state` older than `grace`, skipping locked ones;
    /// returns their ids.
    pub async fn clean(&self, grace: Duration, state: JobState, limit: usize) -> Result<Vec<String>> {
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        scripts::CleanJobs { keys: &self.keys, state, cutoff, limit }.run(&self.conn).await
    }

    /// Deletes the queue and every job in it. Refuses while jobs are active unless `force`;
    /// otherwise pauses it first (as Bull does) and deletes in batches. `progress` is called after each batch.
    pub async fn obliterate(&self, force: bool, mut progress: impl FnMut(usize)) -> Result<()> {
        // Refuse before pausing, so a refused call leaves the queue running. The script checks
        // again atomically, in case a job became active in between.
        if !force && self.conn.query::<u64>(redis::cmd("LLEN").arg(self.keys.active())).await? > 0 {
            return Err(Error::ActiveJobs(self.name().to_owned()));
        }
        self.pause().await?;
        let mut batches = 0;
        loop {
            let done = scripts::Obliterate { keys: &self.keys, batch: DEFAULT_BATCH, force }.run(&self.conn).await?;
            batches += 1;
            progress(batches);
            if done == Batches::Done {
                return Ok(());
            }
        }
    }
}
