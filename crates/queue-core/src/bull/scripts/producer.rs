//! The scripts of the producer and operator side: adding jobs, reading a job's state, and
//! changing jobs and the queue from outside a worker.

use serde_json::Value;

use super::{Invocation, check_code, flag, script};
use crate::bull::job::JobState;
use crate::bull::keys::QueueKeys;
use crate::connection::command::CommandConnection;
use crate::error::{Error, Result};

script!(ADD_JOBS, "addJobs", 6, includes["waiting"]);

/// `addJobs-6.lua`: adds one or more jobs atomically.
///
/// KEYS[1] wait, KEYS[2] paused, KEYS[3] meta-paused, KEYS[4] id, KEYS[5] delayed,
/// KEYS[6] priority. ARGV[1] base key, ARGV[2] producer token, ARGV[3] number of jobs, then the
/// 11 ARGV of each [`JobToAdd`].
///
/// Returns the job ids, one per job, in order: an existing id for a duplicate custom id, `""`
/// for a `next` iteration of a repeatable that was removed.
pub(crate) struct AddJobs<'a> {
    /// KEYS[1..=6] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) token: &'a str,
    /// ARGV[3] is their number, followed by 11 ARGV per job.
    pub(crate) jobs: Vec<JobToAdd>,
}

/// One job of [`AddJobs`]: its 11 ARGV, in the header's order.
pub(crate) struct JobToAdd {
    /// The custom id; `None` (sent as `""`) generates one.
    pub(crate) custom_id: Option<String>,
    pub(crate) name: String,
    /// Data JSON.
    pub(crate) data: String,
    /// Opts JSON.
    pub(crate) opts: String,
    /// Timestamp ms.
    pub(crate) timestamp: u64,
    /// Delay ms.
    pub(crate) delay: u64,
    pub(crate) priority: u64,
    pub(crate) lifo: bool,
    /// Repeat key, next millis and mode; `None` is sent as three `""`.
    pub(crate) repeat: Option<Repeat>,
}

/// The repeatable a job is an iteration of.
pub(crate) struct Repeat {
    pub(crate) key: String,
    pub(crate) next_millis: u64,
    pub(crate) mode: RepeatMode,
}

/// How `addJobs` treats a repeatable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RepeatMode {
    /// `"new"`: registers the repeatable.
    New,
    /// `"next"`: adds the iteration only while the repeatable is still registered.
    Next,
}

impl AddJobs<'_> {
    pub(super) fn invocation(self) -> Invocation {
        let k = self.keys;
        let mut args = vec![k.base().to_owned(), self.token.to_owned(), self.jobs.len().to_string()];
        for job in self.jobs {
            let (repeat_key, next_millis, mode) = match job.repeat {
                Some(Repeat { key, next_millis, mode }) => {
                    let mode = match mode {
                        RepeatMode::New => "new",
                        RepeatMode::Next => "next",
                    };
                    (key, next_millis.to_string(), mode.to_owned())
                }
                None => Default::default(),
            };
            args.extend([
                job.custom_id.unwrap_or_default(),
                job.name,
                job.data,
                job.opts,
                job.timestamp.to_string(),
                job.delay.to_string(),
                job.priority.to_string(),
                flag(job.lifo),
                repeat_key,
                next_millis,
                mode,
            ]);
        }
        Invocation {
            script: &ADD_JOBS,
            keys: vec![k.wait(), k.paused(), k.meta_paused(), k.id(), k.delayed(), k.priority()],
            args,
        }
    }

    pub(crate) async fn run(self, conn: &CommandConnection) -> Result<Vec<String>> {
        self.invocation().run(conn).await
    }
}

script!(GET_STATE, "getState", 1);

/// `getState-1.lua`: a job's state, read atomically.
///
/// KEYS[1] job hash. ARGV[1] base key, ARGV[2] job id.
///
/// Returns the state, `None` when the job has no hash (`stuck` when it has one but is in no
/// list or set).
pub(crate) struct GetState<'a> {
    /// KEYS[1] (with `job_id`) and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) job_id: &'a str,
}

impl GetState<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &GET_STATE,
            keys: vec![k.job(self.job_id)],
            args: vec![k.base().to_owned(), self.job_id.to_owned()],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<Option<JobState>> {
        let state: String = self.invocation().run(conn).await?;
        match state.as_str() {
            "missing" => Ok(None),
            other => JobState::parse(other).map(Some),
        }
    }
}

script!(PAUSE, "pause", 5);

/// `pause-5.lua`: pauses or resumes a queue globally.
///
/// KEYS[1] source list (wait to pause, paused to resume), KEYS[2] destination list,
/// KEYS[3] meta-paused, KEYS[4] event channel (paused or resumed), KEYS[5] meta.
/// ARGV[1] `"paused"` or `"resumed"`.
pub(crate) struct Pause<'a> {
    /// KEYS[1..=5].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[1], which also picks the direction of KEYS[1] and KEYS[2] and the channel.
    pub(crate) event: PauseEvent,
}

/// What [`Pause`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PauseEvent {
    Paused,
    Resumed,
}

impl Pause<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        let (keys, event) = match self.event {
            PauseEvent::Paused => ([k.wait(), k.paused(), k.meta_paused(), k.paused_channel(), k.meta()], "paused"),
            PauseEvent::Resumed => ([k.paused(), k.wait(), k.meta_paused(), k.resumed_channel(), k.meta()], "resumed"),
        };
        Invocation { script: &PAUSE, keys: keys.into(), args: vec![event.to_owned()] }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<()> {
        self.invocation().run::<i64>(conn).await.map(drop)
    }
}

script!(REMOVE_JOB, "removeJob", 1);

/// `removeJob-1.lua`: removes a job and every trace of it, unless a worker holds its lock. An id
/// left in a list or set without its hash (an orphan) is removed too.
///
/// KEYS[1] job hash. ARGV[1] base key, ARGV[2] job id.
///
/// Fails with `JobLocked` or `JobNotFound`.
pub(crate) struct RemoveJob<'a> {
    /// KEYS[1] (with `job_id`) and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) job_id: &'a str,
}

impl RemoveJob<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &REMOVE_JOB,
            keys: vec![k.job(self.job_id)],
            args: vec![k.base().to_owned(), self.job_id.to_owned()],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<()> {
        let code = self.invocation().run(conn).await?;
        check_code(&REMOVE_JOB, code, self.job_id, self.keys.name()).map(drop)
    }
}

script!(RETRY_JOB, "retryJob", 2, includes["waiting"]);

/// `retryJob-2.lua`: moves one failed job back to waiting (Bull's `job.retry()`).
///
/// KEYS[1] job hash, KEYS[2] meta-paused. ARGV[1] base key, ARGV[2] job id, ARGV[3] now ms,
/// ARGV[4] token.
///
/// Fails with `JobNotFound`, `JobLocked` or `WrongState` (not failed).
pub(crate) struct RetryJob<'a> {
    /// KEYS[1] (with `job_id`), KEYS[2] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) job_id: &'a str,
    /// ARGV[3].
    pub(crate) now: u64,
    /// ARGV[4].
    pub(crate) token: &'a str,
}

impl RetryJob<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &RETRY_JOB,
            keys: vec![k.job(self.job_id), k.meta_paused()],
            args: vec![k.base().to_owned(), self.job_id.to_owned(), self.now.to_string(), self.token.to_owned()],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<()> {
        let code = self.invocation().run(conn).await?;
        check_code(&RETRY_JOB, code, self.job_id, self.keys.name()).map(drop)
    }
}

script!(RETRY_JOBS, "retryJobs", 2, includes["waiting"]);

/// `retryJobs-2.lua`: moves up to a slice of failed jobs back to waiting.
///
/// KEYS[1] failed, KEYS[2] meta-paused. ARGV[1] base key, ARGV[2] slice, ARGV[3] token.
///
/// Returns the jobs moved and the failed jobs still left.
pub(crate) struct RetryJobs<'a> {
    /// KEYS[1..=2] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) slice: usize,
    /// ARGV[3].
    pub(crate) token: &'a str,
}

impl RetryJobs<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &RETRY_JOBS,
            keys: vec![k.failed(), k.meta_paused()],
            args: vec![k.base().to_owned(), self.slice.to_string(), self.token.to_owned()],
        }
    }

    /// (moved, left).
    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<(u64, u64)> {
        self.invocation().run(conn).await
    }
}

script!(PROMOTE, "promote", 3, includes["waiting"]);

/// `promote-3.lua`: moves a delayed job to waiting now.
///
/// KEYS[1] delayed, KEYS[2] meta-paused, KEYS[3] priority. ARGV[1] base key, ARGV[2] job id,
/// ARGV[3] token.
///
/// Fails with `WrongState` when the job is not delayed.
pub(crate) struct Promote<'a> {
    /// KEYS[1..=3] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) job_id: &'a str,
    /// ARGV[3].
    pub(crate) token: &'a str,
}

impl Promote<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &PROMOTE,
            keys: vec![k.delayed(), k.meta_paused(), k.priority()],
            args: vec![k.base().to_owned(), self.job_id.to_owned(), self.token.to_owned()],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<()> {
        let code = self.invocation().run(conn).await?;
        check_code(&PROMOTE, code, self.job_id, self.keys.name()).map(drop)
    }
}

script!(CLEAN_JOBS, "cleanJobs", 1, includes["slice"]);

/// `cleanJobs-1.lua`: removes jobs of one state older than a cutoff, skipping locked jobs,
/// looking at one slice of the state per call. A job's age is its first present field of
/// finishedOn, processedOn, timestamp, compared as numbers.
///
/// KEYS[1] the state's list or zset. ARGV[1] base key, ARGV[2] cutoff ms, ARGV[3] most jobs to
/// remove in this call, ARGV[4] `"list"` or `"zset"`, ARGV[5] `"1"` when the state is completed
/// or failed (a zset scored by finishedOn), ARGV[6] slice, ARGV[7..=8] the [`CleanCursor`].
///
/// Returns a [`CleanSlice`]. Fails with `InvalidOptions` for `stuck`, which is in no list.
pub(crate) struct CleanJobs<'a> {
    /// KEYS[1] (with `state`) and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// KEYS[1], ARGV[4] and ARGV[5].
    pub(crate) state: JobState,
    /// ARGV[2].
    pub(crate) cutoff: u64,
    /// ARGV[3]: at least 1.
    pub(crate) limit: usize,
    /// ARGV[6].
    pub(crate) slice: usize,
    /// ARGV[7..=8].
    pub(crate) cursor: &'a CleanCursor,
}

/// Where a clean stands between calls: the last entry looked at and kept (`""` at the start),
/// and for a list the number of entries at its tail looked at and kept, for a zset that
/// entry's score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CleanCursor {
    pub(crate) id: String,
    pub(crate) at: String,
}

impl Default for CleanCursor {
    fn default() -> Self {
        CleanCursor { id: String::new(), at: "0".to_owned() }
    }
}

/// What one call of [`CleanJobs`] did.
#[derive(Debug)]
pub(crate) struct CleanSlice {
    pub(crate) removed: Vec<String>,
    /// Pass to the next call.
    pub(crate) cursor: CleanCursor,
    /// The whole state has been looked at.
    pub(crate) done: bool,
    pub(crate) looked_at: u64,
}

impl CleanJobs<'_> {
    pub(super) fn invocation(&self) -> Result<Invocation> {
        let Some(suffix) = self.state.key_suffix() else {
            return Err(Error::InvalidOptions("cannot clean stuck jobs: they are in no list".into()));
        };
        let k = self.keys;
        let kind = if self.state.is_list() { "list" } else { "zset" };
        let finished = matches!(self.state, JobState::Completed | JobState::Failed);
        Ok(Invocation {
            script: &CLEAN_JOBS,
            keys: vec![k.key(suffix)],
            args: vec![
                k.base().to_owned(),
                self.cutoff.to_string(),
                self.limit.to_string(),
                kind.to_owned(),
                flag(finished),
                self.slice.to_string(),
                self.cursor.id.clone(),
                self.cursor.at.clone(),
            ],
        })
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<CleanSlice> {
        let (removed, id, at, done, looked_at): (Vec<String>, String, String, i64, u64) =
            self.invocation()?.run(conn).await?;
        Ok(CleanSlice { removed, cursor: CleanCursor { id, at }, done: done == 1, looked_at })
    }
}

script!(OBLITERATE, "obliterate", 2);

/// `obliterate-2.lua`: deletes a paused queue and all its jobs, at most a slice of jobs per
/// call; the queue's own keys go with the last call.
///
/// KEYS[1] meta-paused, KEYS[2] active. ARGV[1] base key, ARGV[2] slice, ARGV[3] `"1"` to
/// delete active jobs too.
///
/// Returns the jobs deleted and whether to call again. Fails with `WrongState` when the queue
/// is not paused, and with `ActiveJobs` when it has active jobs and `force` is off.
pub(crate) struct Obliterate<'a> {
    /// KEYS[1..=2] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) slice: usize,
    /// ARGV[3].
    pub(crate) force: bool,
}

/// Where a call that works in slices stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Remaining {
    Done,
    /// Call again.
    More,
}

impl Obliterate<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &OBLITERATE,
            keys: vec![k.meta_paused(), k.active()],
            args: vec![k.base().to_owned(), self.slice.to_string(), flag(self.force)],
        }
    }

    /// (jobs deleted, whether to call again).
    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<(u64, Remaining)> {
        match self.invocation().run(conn).await? {
            redis::Value::Int(code) => {
                check_code(&OBLITERATE, code, "", self.keys.name())?;
                Err(Error::Protocol { script: "obliterate", detail: format!("return code {code}") })
            }
            reply => {
                let (deleted, more): (u64, i64) = redis::FromRedisValue::from_redis_value(reply)
                    .map_err(|e| Error::Protocol { script: "obliterate", detail: e.to_string() })?;
                Ok((deleted, if more == 1 { Remaining::More } else { Remaining::Done }))
            }
        }
    }
}

script!(ADD_LOG, "addLog", 1);

/// `addLog-1.lua`: appends a log line to a job.
///
/// KEYS[1] job hash. ARGV[1] the job's log key, ARGV[2] line.
///
/// Returns the new number of lines. Fails with `JobNotFound`.
pub(crate) struct AddLog<'a> {
    /// KEYS[1] and ARGV[1] (with `job_id`).
    pub(crate) keys: &'a QueueKeys,
    pub(crate) job_id: &'a str,
    /// ARGV[2].
    pub(crate) line: &'a str,
}

impl AddLog<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &ADD_LOG,
            keys: vec![k.job(self.job_id)],
            args: vec![k.logs(self.job_id), self.line.to_owned()],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<u64> {
        let code = self.invocation().run(conn).await?;
        check_code(&ADD_LOG, code, self.job_id, self.keys.name()).map(|n| n as u64)
    }
}

script!(UPDATE_PROGRESS, "updateProgress", 1);

/// `updateProgress-1.lua`: sets a job's progress and publishes it.
///
/// KEYS[1] job hash. ARGV[1] progress channel, ARGV[2] job id, ARGV[3] progress JSON.
///
/// Fails with `JobNotFound`.
pub(crate) struct UpdateProgress<'a> {
    /// KEYS[1] (with `job_id`) and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) job_id: &'a str,
    /// ARGV[3].
    pub(crate) progress: &'a Value,
}

impl UpdateProgress<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &UPDATE_PROGRESS,
            keys: vec![k.job(self.job_id)],
            args: vec![k.progress_channel(), self.job_id.to_owned(), self.progress.to_string()],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<()> {
        let code = self.invocation().run(conn).await?;
        check_code(&UPDATE_PROGRESS, code, self.job_id, self.keys.name()).map(drop)
    }
}

script!(UPDATE_DATA, "updateData", 1);

/// `updateData-1.lua`: replaces a job's data.
///
/// KEYS[1] job hash. ARGV[1] data JSON.
///
/// Fails with `JobNotFound`.
pub(crate) struct UpdateData<'a> {
    /// KEYS[1] (with `job_id`).
    pub(crate) keys: &'a QueueKeys,
    pub(crate) job_id: &'a str,
    /// ARGV[1].
    pub(crate) data: &'a str,
}

impl UpdateData<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        Invocation { script: &UPDATE_DATA, keys: vec![self.keys.job(self.job_id)], args: vec![self.data.to_owned()] }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<()> {
        let code = self.invocation().run(conn).await?;
        check_code(&UPDATE_DATA, code, self.job_id, self.keys.name()).map(drop)
    }
}
