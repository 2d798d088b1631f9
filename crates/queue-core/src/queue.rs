//! A Bull queue, producer and operator side: add, read, pause, repair.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::bull::job::{DEFAULT_JOB_NAME, Job, JobState};
use crate::bull::keys::validate_existing_job_id;
use crate::bull::options::JobOptions;
use crate::bull::repeat;
use crate::bull::scripts::{self, check_code};

use crate::clock::now_ms;
use crate::connection::command::CommandConnection;
use crate::connections::Connections;
use crate::error::{Error, Result};

mod view;

pub use view::{JobCounts, JobLogs, QueueView};

/// Jobs moved per script call by `retry_all_failed`, `obliterate`.
pub const DEFAULT_BATCH: usize = 1000;

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
    repeat: Option<(String, u64, &'static str)>,
}

/// A queue, producer side: adds jobs, and reads as its [`QueueView`] does (it derefs to one).
/// Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    view: QueueView,
    token: String,
}

impl std::ops::Deref for Queue {
    type Target = QueueView;

    fn deref(&self) -> &QueueView {
        &self.view
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("keys", &self.view.keys).field("token", &self.token).finish()
    }
}

impl Queue {
    /// Queue `name` with the prefix from the connections' configuration.
    pub fn new(connections: &Connections, name: &str) -> Result<Self> {
        Self::with_prefix(connections, &connections.config().prefix, name)
    }

    /// Queue `name` under an explicit prefix.
    pub fn with_prefix(connections: &Connections, prefix: &str, name: &str) -> Result<Self> {
        Ok(Queue { view: QueueView::with_prefix(connections, prefix, name)?, token: uuid::Uuid::new_v4().to_string() })
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

    /// Adds jobs atomically, in one round trip: all or none.
    pub async fn add_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<String>> {
        let now = now_ms();
        let mut prepared = Vec::with_capacity(jobs.len());
        for job in jobs {
            let name = if job.name.is_empty() { DEFAULT_JOB_NAME.to_owned() } else { job.name };
            let data = serde_json::to_string(&job.data).map_err(|source| Error::Json { what: "job data", source })?;
            let (opts, repeat) = match job.opts.repeat.is_some() {
                true => {
                    let first = repeat::first_iteration(&name, job.opts, now)?;
                    (first.opts, Some((first.key, first.next_millis, "new")))
                }
                false => (job.opts.normalize(now)?, None),
            };
            prepared.push(Prepared { name, data, opts, repeat });
        }
        self.add_prepared(prepared, now).await
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
            repeat: Some((next.key, next.next_millis, "next")),
        };
        let mut ids = self.add_prepared(vec![prepared], now).await?;
        Ok(ids.pop().filter(|id| !id.is_empty()))
    }

    async fn add_prepared(&self, jobs: Vec<Prepared>, now: u64) -> Result<Vec<String>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<String> = vec![self.keys.base().to_owned(), self.token.clone(), jobs.len().to_string()];
        for Prepared { name, data, opts, repeat } in jobs {
            args.extend([
                opts.job_id.clone().unwrap_or_default(),
                name,
                data,
                opts.to_json(),
                opts.timestamp.unwrap_or(now).to_string(),
                opts.delay.unwrap_or(0).to_string(),
                opts.priority.unwrap_or(0).to_string(),
                if opts.lifo == Some(true) { "1" } else { "0" }.to_owned(),
                repeat.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
                repeat.as_ref().map(|r| r.1.to_string()).unwrap_or_default(),
                repeat.as_ref().map(|r| r.2).unwrap_or_default().to_owned(),
            ]);
        }
        let k = &self.keys;
        let keys = [k.wait(), k.paused(), k.meta_paused(), k.id(), k.delayed(), k.priority()];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        scripts::ADD_JOBS.run(&self.conn, &keys, args).await
    }

    /// The job's state, read atomically; `None` when the job does not exist.
    pub async fn get_job_state(&self, id: &str) -> Result<Option<JobState>> {
        let state: String = scripts::GET_STATE.run(&self.conn, &[&self.keys.job(id)], (self.keys.base(), id)).await?;
        match state.as_str() {
            "missing" => Ok(None),
            other => JobState::parse(other).map(Some),
        }
    }

    /// Appends a log line to a job; returns the number of lines.
    pub async fn add_log(&self, id: &str, line: &str) -> Result<u64> {
        validate_existing_job_id(id)?;
        let code: i64 = scripts::ADD_LOG.run(&self.conn, &[&self.keys.job(id)], (self.keys.logs(id), line)).await?;
        check_code(&scripts::ADD_LOG, code, id, self.name()).map(|n| n as u64)
    }

    /// Sets a job's progress (any JSON) and publishes it on the `progress` channel.
    pub async fn update_progress(&self, id: &str, progress: &Value) -> Result<()> {
        validate_existing_job_id(id)?;
        let args = (self.keys.progress_channel(), id, progress.to_string());
        let code: i64 = scripts::UPDATE_PROGRESS.run(&self.conn, &[&self.keys.job(id)], args).await?;
        check_code(&scripts::UPDATE_PROGRESS, code, id, self.name()).map(drop)
    }

    /// Replaces a job's data.
    pub async fn update_data(&self, id: &str, data: impl Serialize) -> Result<()> {
        validate_existing_job_id(id)?;
        let data = serde_json::to_string(&data).map_err(|source| Error::Json { what: "job data", source })?;
        let code: i64 = scripts::UPDATE_DATA.run(&self.conn, &[&self.keys.job(id)], data).await?;
        check_code(&scripts::UPDATE_DATA, code, id, self.name()).map(drop)
    }

    /// Pauses the queue for every worker (Bull's global pause). Active jobs finish.
    pub async fn pause(&self) -> Result<()> {
        let k = &self.keys;
        let keys = [k.wait(), k.paused(), k.meta_paused(), k.paused_channel(), k.meta()];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        scripts::PAUSE.run::<i64>(&self.conn, &keys, "paused").await.map(drop)
    }

    /// Resumes a globally paused queue.
    pub async fn resume(&self) -> Result<()> {
        let k = &self.keys;
        let keys = [k.paused(), k.wait(), k.meta_paused(), k.resumed_channel(), k.meta()];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        scripts::PAUSE.run::<i64>(&self.conn, &keys, "resumed").await.map(drop)
    }

    /// Removes a job and its logs from every list and set. Refused while a worker holds its lock.
    pub async fn remove(&self, id: &str) -> Result<()> {
        validate_existing_job_id(id)?;
        let code: i64 = scripts::REMOVE_JOB.run(&self.conn, &[&self.keys.job(id)], (self.keys.base(), id)).await?;
        check_code(&scripts::REMOVE_JOB, code, id, self.name()).map(drop)
    }

    /// Moves one failed job back to waiting (Bull's `job.retry()`).
    pub async fn retry_job(&self, id: &str) -> Result<()> {
        validate_existing_job_id(id)?;
        let keys = [self.keys.job(id), self.keys.meta_paused()];
        let code: i64 = scripts::RETRY_JOB
            .run(&self.conn, &[&keys[0], &keys[1]], (self.keys.base(), id, now_ms(), &self.token))
            .await?;
        check_code(&scripts::RETRY_JOB, code, id, self.name()).map(drop)
    }

    /// Moves every failed job back to waiting, `batch` per script call; returns how many moved.
    /// `progress` is called after each batch with the number moved so far.
    pub async fn retry_all_failed(&self, batch: usize, mut progress: impl FnMut(u64)) -> Result<u64> {
        let batch = batch.max(1);
        let keys = [self.keys.failed(), self.keys.meta_paused()];
        let mut moved = 0u64;
        loop {
            let before: u64 = self.conn.query(redis::cmd("ZCARD").arg(&keys[0])).await?;
            let left: u64 = scripts::RETRY_JOBS
                .run(&self.conn, &[&keys[0], &keys[1]], (self.keys.base(), batch, &self.token))
                .await?;
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
        let k = &self.keys;
        let keys = [k.delayed(), k.meta_paused(), k.priority()];
        let code: i64 =
            scripts::PROMOTE.run(&self.conn, &[&keys[0], &keys[1], &keys[2]], (k.base(), id, &self.token)).await?;
        check_code(&scripts::PROMOTE, code, id, self.name()).map(drop)
    }

    /// Removes up to `limit` (0 = all) jobs in `state` older than `grace`, skipping locked ones;
    /// returns their ids.
    pub async fn clean(&self, grace: Duration, state: JobState, limit: usize) -> Result<Vec<String>> {
        let Some(suffix) = state.key_suffix() else {
            return Err(Error::InvalidOptions("cannot clean stuck jobs: they are in no list".into()));
        };
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        let kind = if state.is_list() { "list" } else { "zset" };
        let finished = matches!(state, JobState::Completed | JobState::Failed);
        let key = self.keys.key(suffix);
        scripts::CLEAN_JOBS
            .run(&self.conn, &[&key], (self.keys.base(), cutoff, limit, kind, if finished { "1" } else { "0" }))
            .await
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
        let keys = [self.keys.meta_paused(), self.keys.active()];
        let mut batches = 0;
        loop {
            let code: i64 = scripts::OBLITERATE
                .run(
                    &self.conn,
                    &[&keys[0], &keys[1]],
                    (self.keys.base(), DEFAULT_BATCH, if force { "1" } else { "0" }),
                )
                .await?;
            batches += 1;
            progress(batches);
            if check_code(&scripts::OBLITERATE, code, "", self.name())? == 0 {
                return Ok(());
            }
        }
    }
}
