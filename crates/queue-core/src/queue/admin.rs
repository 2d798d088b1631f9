//! The operator's handle: the repairs `queuectl` and bull-board make.

use std::time::Duration;

use crate::bull::job::JobState;
use crate::bull::keys::validate_existing_job_id;
use crate::bull::scripts::{self, CleanCursor, PauseEvent, Remaining};
use crate::bull::slices::Slices;
use crate::clock::now_ms;
use crate::connections::Connections;
use crate::error::{Error, Result};
use crate::queue::Queue;

/// A queue, operator side: everything a [`Queue`] does (it derefs to one) plus the repairs:
/// global pause and resume, retry, promote, clean, obliterate. Services hold a `Queue` or a
/// [`QueueView`](crate::QueueView); only tools need this.
///
/// The repairs that can touch many jobs (`retry_all_failed`, `promote_all`, `clean`,
/// `obliterate`) work in slices of [`Slices`] jobs, one script call each, so no call holds
/// Redis for much more than a millisecond; other clients' commands run between the calls. They
/// report progress after each slice, and dropping their future between two slices (a Ctrl-C)
/// leaves a consistent queue: every job is either done or untouched. None of them is atomic as
/// a whole: jobs that other clients add, take or finish meanwhile may or may not be included.
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

    /// The same queue, with other slice sizes (see [`Queue::with_slices`]).
    pub fn with_slices(self, slices: Slices) -> Self {
        QueueAdmin { queue: self.queue.with_slices(slices) }
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

    /// Moves every failed job back to waiting, [`Slices::retry`] per script call; returns how
    /// many moved. `progress` is called after each slice with the number moved so far.
    pub async fn retry_all_failed(&self, mut progress: impl FnMut(u64)) -> Result<u64> {
        let mut moved = 0u64;
        loop {
            let slice = scripts::RetryJobs { keys: &self.keys, slice: self.slices().retry, token: &self.token };
            let (now_moved, left) = slice.run(&self.conn).await?;
            moved += now_moved;
            progress(moved);
            if now_moved == 0 || left == 0 {
                return Ok(moved);
            }
        }
    }

    /// Moves a delayed job to waiting now.
    pub async fn promote(&self, id: &str) -> Result<()> {
        validate_existing_job_id(id)?;
        scripts::Promote { keys: &self.keys, job_id: id, token: &self.token }.run(&self.conn).await
    }

    /// Moves every delayed job to waiting now, due or not, [`Slices::promote`] per script call;
    /// returns how many moved (bull-board's "promote all"). `progress` is called after each
    /// slice with the number moved so far.
    pub async fn promote_all(&self, mut progress: impl FnMut(u64)) -> Result<u64> {
        let mut moved = 0u64;
        loop {
            let slice = scripts::PromoteDelayed {
                keys: &self.keys,
                due_by: None,
                token: &self.token,
                slice: self.slices().promote,
            };
            let promoted = slice.run(&self.conn).await?;
            moved += promoted.count as u64;
            progress(moved);
            if promoted.count == 0 || promoted.next_due.is_none() {
                return Ok(moved);
            }
        }
    }

    /// Removes up to `limit` (0 = all) jobs in `state` older than `grace`, skipping locked ones;
    /// returns their ids. Each script call looks at [`Slices::clean`] jobs, walking the state from
    /// its oldest end; `progress` is called after each call.
    pub async fn clean(
        &self,
        grace: Duration,
        state: JobState,
        limit: usize,
        mut progress: impl FnMut(CleanProgress),
    ) -> Result<Vec<String>> {
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut removed = Vec::new();
        let mut cursor = CleanCursor::default();
        let mut looked_at = 0u64;
        while removed.len() < limit {
            let slice = scripts::CleanJobs {
                keys: &self.keys,
                state,
                cutoff,
                limit: (limit - removed.len()).min(self.slices().clean),
                slice: self.slices().clean,
                cursor: &cursor,
            }
            .run(&self.conn)
            .await?;
            looked_at += slice.looked_at;
            removed.extend(slice.removed);
            progress(CleanProgress { looked_at, removed: removed.len() as u64 });
            if slice.done {
                break;
            }
            cursor = slice.cursor;
        }
        Ok(removed)
    }

    /// Deletes the queue and every job in it. Refuses while jobs are active unless `force`;
    /// otherwise pauses it first (as Bull does) and deletes [`Slices::obliterate`] jobs per
    /// script call, the queue's own keys last. `progress` is called after each slice with the
    /// number of jobs deleted so far. Interrupted, the queue stays paused with fewer jobs;
    /// obliterating it again finishes the work.
    pub async fn obliterate(&self, force: bool, mut progress: impl FnMut(u64)) -> Result<()> {
        // Refuse before pausing, so a refused call leaves the queue running. The script checks
        // again atomically, in case a job became active in between.
        if !force && self.conn.query::<u64>(redis::cmd("LLEN").arg(self.keys.active())).await? > 0 {
            return Err(Error::ActiveJobs(self.name().to_owned()));
        }
        self.pause().await?;
        let mut deleted = 0;
        loop {
            let slice = scripts::Obliterate { keys: &self.keys, slice: self.slices().obliterate, force };
            let (now_deleted, remaining) = slice.run(&self.conn).await?;
            deleted += now_deleted;
            progress(deleted);
            if remaining == Remaining::Done {
                return Ok(());
            }
        }
    }
}

/// How far a [`QueueAdmin::clean`] has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanProgress {
    /// Jobs of the state looked at so far (removed or kept).
    pub looked_at: u64,
    /// Jobs removed so far.
    pub removed: u64,
}
