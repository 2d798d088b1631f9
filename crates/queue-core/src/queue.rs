//! A Bull queue, producer and operator side: add, read, pause, repair.

use serde::Serialize;
use serde_json::Value;

use crate::bull::job::{DEFAULT_JOB_NAME, Job};
use crate::bull::keys::validate_existing_job_id;
use crate::bull::options::JobOptions;
use crate::bull::repeat;
use crate::bull::scripts::{self, Repeat, RepeatMode};
use crate::bull::slices::Slices;
use crate::clock::now_ms;
use crate::connection::command::CommandConnection;
use crate::connections::Connections;
use crate::error::{Error, Result};

mod admin;
mod view;

pub use admin::{CleanProgress, QueueAdmin};
pub use view::{JobCounts, JobLogs, QueueView};

/// One job for [`Queue::add_bulk`].
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Job name (Bull's `__default__` when processed by `process(fn)`).
    pub name: String,
    /// Job data, as JSON.
    pub data: Value,
    /// Job options.
    pub opts: JobOptions,
}

impl NewJob {
    /// A job named `name` with `data` and `opts`.
    pub fn new(name: &str, data: impl Serialize, opts: JobOptions) -> Result<Self> {
        let data = serde_json::to_value(data).map_err(|source| Error::Json { what: "job data", source })?;
        Ok(NewJob { name: name.to_owned(), data, opts })
    }
}

struct Prepared {
    name: String,
    data: String,
    opts: JobOptions,
    repeat: Option<Repeat>,
}

/// A queue, producer side: adds jobs, and reads as its [`QueueView`] does (it derefs to one).
/// Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    view: QueueView,
    token: String,
    slices: Slices,
}

impl std::ops::Deref for Queue {
    type Target = QueueView;

    fn deref(&self) -> &QueueView {
        &self.view
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("keys", &self.view.keys)
            .field("token", &self.token)
            .field("slices", &self.slices)
            .finish()
    }
}

impl Queue {
    /// Queue `name` with the prefix from the connections' configuration.
    pub fn new(connections: &Connections, name: &str) -> Result<Self> {
        Self::with_prefix(connections, &connections.config().prefix, name)
    }

    /// Queue `name` under an explicit prefix.
    pub fn with_prefix(connections: &Connections, prefix: &str, name: &str) -> Result<Self> {
        Ok(Queue {
            view: QueueView::with_prefix(connections, prefix, name)?,
            token: uuid::Uuid::new_v4().to_string(),
            slices: Slices::default(),
        })
    }

    /// The same queue, with other slice sizes (see [`Slices`]; values are kept within
    /// 1..=[`MAX_SLICE`](crate::MAX_SLICE)). A `Queue` uses `add`; a
    /// [`QueueAdmin`](crate::QueueAdmin) also `clean`, `obliterate`, `retry` and `promote`.
    pub fn with_slices(mut self, slices: Slices) -> Self {
        self.slices = slices.bounded();
        self
    }

    /// The slice sizes of this handle's operations.
    pub fn slices(&self) -> Slices {
        self.slices
    }

    /// This instance's token (the `@token` of its events).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn connection(&self) -> &CommandConnection {
        &self.conn
    }

    /// Adds a job; returns its id (for a custom id that already exists, that id, unchanged).
    pub async fn add(&self, name: &str, data: impl Serialize, opts: JobOptions) -> Result<String> {
        let mut ids = self.add_bulk(vec![NewJob::new(name, data, opts)?]).await?;
        Ok(ids.pop().expect("one id per job"))
    }

    /// Adds jobs, [`Slices::add`] per script call; returns their ids in order.
    ///
    /// Every job is checked before anything is written, so invalid options add nothing. Each
    /// slice is added atomically (all of its jobs or none), but the call as a whole is not:
    /// Redis runs one command at a time, and one script adding 100,000 jobs would stall every
    /// other client of the server for the whole add (about 6 ms per 1,000 jobs on a quiet
    /// machine, 15 ms seen in production). Bull's `addBulk` is not atomic either (a `MULTI` of
    /// one `addJob` script per job). If a slice fails, the error
    /// is [`Error::PartlyAdded`] with the ids of the jobs already added (after a timeout, the
    /// slice that timed out may have been added too). Dropping the future between slices leaves
    /// the jobs of the slices already sent, each whole. Custom job ids make a retry of the whole
    /// call safe: duplicates are not added again.
    pub async fn add_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<String>> {
        self.add_bulk_with_progress(jobs, |_| {}).await
    }

    /// [`Queue::add_bulk`], calling `progress` with the number of jobs added after each slice.
    pub async fn add_bulk_with_progress(&self, jobs: Vec<NewJob>, progress: impl FnMut(usize)) -> Result<Vec<String>> {
        let now = now_ms();
        let mut prepared = Vec::with_capacity(jobs.len());
        for job in jobs {
            let name = if job.name.is_empty() { DEFAULT_JOB_NAME.to_owned() } else { job.name };
            let data = serde_json::to_string(&job.data).map_err(|source| Error::Json { what: "job data", source })?;
            let (opts, repeat) = match job.opts.repeat.is_some() {
                true => {
                    let first = repeat::first_iteration(&name, job.opts, now)?;
                    (first.opts, Some(Repeat { key: first.key, next_millis: first.next_millis, mode: RepeatMode::New }))
                }
                false => (job.opts.normalize(now)?, None),
            };
            prepared.push(Prepared { name, data, opts, repeat });
        }
        self.add_prepared(prepared, now, progress).await
    }

    /// Adds the iteration after the one in `job` of a repeatable job, unless the repeatable was
    /// removed or has no run left. Returns the new id, if one was added.
    pub(crate) async fn add_next_iteration(&self, job: &Job) -> Result<Option<String>> {
        let now = now_ms();
        let Some(next) = repeat::next_iteration(&job.name, &job.opts, now)? else { return Ok(None) };
        let data = match (&job.data, job.opts.prevent_parsing_data) {
            (Value::String(raw), Some(true)) => raw.clone(),
            (data, _) => data.to_string(),
        };
        let prepared = Prepared {
            name: job.name.clone(),
            data,
            opts: next.opts,
            repeat: Some(Repeat { key: next.key, next_millis: next.next_millis, mode: RepeatMode::Next }),
        };
        let mut ids = self.add_prepared(vec![prepared], now, |_| {}).await?;
        Ok(ids.pop().filter(|id| !id.is_empty()))
    }

    /// Adds prepared jobs, a slice per `addJobs` call.
    async fn add_prepared(
        &self,
        jobs: Vec<Prepared>,
        now: u64,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<String>> {
        let total = jobs.len();
        let mut ids = Vec::with_capacity(total);
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let slice: Vec<scripts::JobToAdd> = jobs
                .by_ref()
                .take(self.slices.add)
                .map(|Prepared { name, data, opts, repeat }| scripts::JobToAdd {
                    custom_id: opts.job_id.clone(),
                    name,
                    data,
                    opts: opts.to_json(),
                    timestamp: opts.timestamp.unwrap_or(now),
                    delay: opts.delay.unwrap_or(0),
                    priority: opts.priority.unwrap_or(0),
                    lifo: opts.lifo == Some(true),
                    repeat,
                })
                .collect();
            match (scripts::AddJobs { keys: &self.keys, token: &self.token, jobs: slice }).run(&self.conn).await {
                Ok(added) => ids.extend(added),
                Err(source) if !ids.is_empty() => {
                    return Err(Error::PartlyAdded { added: ids, of: total, source: Box::new(source) });
                }
                Err(e) => return Err(e),
            }
            progress(ids.len());
        }
        Ok(ids)
    }

    /// Appends a log line to a job; returns the number of lines.
    pub async fn add_log(&self, id: &str, line: &str) -> Result<u64> {
        validate_existing_job_id(id)?;
        scripts::AddLog { keys: &self.keys, job_id: id, line }.run(&self.conn).await
    }

    /// Sets a job's progress (any JSON) and publishes it on the `progress` channel.
    pub async fn update_progress(&self, id: &str, progress: &Value) -> Result<()> {
        validate_existing_job_id(id)?;
        scripts::UpdateProgress { keys: &self.keys, job_id: id, progress }.run(&self.conn).await
    }

    /// Replaces a job's data.
    pub async fn update_data(&self, id: &str, data: impl Serialize) -> Result<()> {
        validate_existing_job_id(id)?;
        let data = serde_json::to_string(&data).map_err(|source| Error::Json { what: "job data", source })?;
        scripts::UpdateData { keys: &self.keys, job_id: id, data: &data }.run(&self.conn).await
    }

    /// Removes a job and its logs from every list and set, as Bull's `job.remove()` does: a
    /// producer withdrawing a job it added. Refused while a worker holds its lock.
    pub async fn remove(&self, id: &str) -> Result<()> {
        validate_existing_job_id(id)?;
        scripts::RemoveJob { keys: &self.keys, job_id: id }.run(&self.conn).await
    }
}
