//! The scripts of workers: taking a job, recording an attempt's outcome, and the background
//! duties (lock renewal, delayed promotion, the stalled check). Every one that touches a job a
//! worker holds checks the lock value first.

use std::time::Duration;

use redis::Value as RedisValue;
use serde_json::{Value, json};

use super::{Invocation, Script, check_code, flag, script};
use crate::bull::keys::{QueueKeys, delayed_score, due_from_score};
use crate::bull::options::KeepJobs;
use crate::clock::now_ms;
use crate::connection::command::CommandConnection;
use crate::error::{Error, Result};

script!(MOVE_TO_ACTIVE, "moveToActive", 6, includes["activate"]);

/// `moveToActive-6.lua`: takes a job for processing.
///
/// KEYS[1] wait, KEYS[2] active, KEYS[3] priority, KEYS[4] stalled, KEYS[5] limiter,
/// KEYS[6] delayed. ARGV[1] base key, ARGV[2] lock value (unique per activation), ARGV[3] lock
/// duration ms, ARGV[4] now ms, ARGV[5] job id already moved to active by a blocking pop
/// (`""` = pop one here), ARGV[6] limiter max jobs (`""` = no limiter), ARGV[7] limiter duration
/// ms, ARGV[8] `"1"` = limit per group, ARGV[9] worker token, ARGV[10] `"1"` = publish drained
/// when nothing is waiting.
///
/// Returns the raw reply, which the worker reads: `{"none"}`, `{"job", id, {field, value...}}`,
/// `{"orphan", id}` or `{"limited", id}`.
pub(crate) struct MoveToActive<'a> {
    /// KEYS[1..=6] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) lock: &'a str,
    /// ARGV[3].
    pub(crate) lock_duration: Duration,
    /// ARGV[4].
    pub(crate) now: u64,
    /// ARGV[5]: `""` pops one here.
    pub(crate) popped: &'a str,
    /// ARGV[6..=8]: `None` sends `""`, `""`, `"0"`.
    pub(crate) limiter: Option<Limiter>,
    /// ARGV[9].
    pub(crate) worker_token: &'a str,
    /// ARGV[10].
    pub(crate) publish_drained: bool,
}

/// The rate limit [`MoveToActive`] applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limiter {
    /// ARGV[6]: jobs per window.
    pub(crate) max: u64,
    /// ARGV[7]: the window.
    pub(crate) duration: Duration,
    /// ARGV[8].
    pub(crate) per_group: bool,
}

impl MoveToActive<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        let (max, duration, per_group) = match self.limiter {
            Some(l) => (l.max.to_string(), l.duration.as_millis().to_string(), flag(l.per_group)),
            None => (String::new(), String::new(), flag(false)),
        };
        Invocation {
            script: &MOVE_TO_ACTIVE,
            keys: vec![k.wait(), k.active(), k.priority(), k.stalled(), k.limiter(), k.delayed()],
            args: vec![
                k.base().to_owned(),
                self.lock.to_owned(),
                self.lock_duration.as_millis().to_string(),
                self.now.to_string(),
                self.popped.to_owned(),
                max,
                duration,
                per_group,
                self.worker_token.to_owned(),
                flag(self.publish_drained),
            ],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<RedisValue> {
        self.invocation().run(conn).await
    }
}

/// What [`CompleteJob`] or [`FailJob`] made of an attempt's outcome.
#[derive(Debug)]
pub(crate) enum Recorded {
    /// Recorded. From a `CompleteJob` asked to fetch, the reply of that fetch, in
    /// `moveToActive`'s shape.
    Done(Option<RedisValue>),
    /// Refused before anything was written: `JobNotFound`, `LockLost` or `WrongState` (not
    /// active).
    Refused(Error),
}

impl Recorded {
    fn from_reply(reply: RedisValue, script: &Script, job_id: &str, queue: &str) -> Self {
        match reply {
            RedisValue::Int(code) => match check_code(script, code, job_id, queue) {
                Ok(_) => Recorded::Done(None),
                Err(e) => Recorded::Refused(e),
            },
            other => Recorded::Done(Some(other)),
        }
    }
}

script!(COMPLETE_JOB, "completeJob", 5, includes["finished", "activate"]);

/// `completeJob-5.lua`: completes an active job and, when asked, takes the next one. The lock
/// is checked before anything is written.
///
/// KEYS[1] active, KEYS[2] completed, KEYS[3] wait, KEYS[4] priority, KEYS[5] stalled.
/// ARGV[1] base key, ARGV[2] job id, ARGV[3] the job's lock value, ARGV[4] now ms, ARGV[5]
/// returnvalue JSON, ARGV[6] keep age seconds (`""` = none), ARGV[7] keep count (-1 all, 0 none,
/// N newest), ARGV[8] completed event JSON, ARGV[9] `"1"` = fetch the next job, ARGV[10] lock
/// duration ms, ARGV[11] `"1"` when the job has a debounce id, ARGV[12] lock value for the next
/// job, ARGV[13] worker token, ARGV[14] keep slice (most old completed jobs the keep policy
/// deletes).
///
/// Returns [`Recorded::Done`], with the next job's reply when it fetched one, or
/// [`Recorded::Refused`].
pub(crate) struct CompleteJob<'a> {
    /// KEYS[1..=5] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) job_id: &'a str,
    /// ARGV[3].
    pub(crate) lock: &'a str,
    /// ARGV[4].
    pub(crate) now: u64,
    /// ARGV[5], and the `val` of the event in ARGV[8].
    pub(crate) returnvalue: &'a Value,
    /// ARGV[6..=7]: the job's `removeOnComplete`.
    pub(crate) keep: Option<&'a KeepJobs>,
    /// ARGV[9].
    pub(crate) fetch_next: bool,
    /// ARGV[10].
    pub(crate) lock_duration: Duration,
    /// ARGV[11].
    pub(crate) debounced: bool,
    /// ARGV[12].
    pub(crate) next_lock: &'a str,
    /// ARGV[13].
    pub(crate) worker_token: &'a str,
    /// ARGV[14].
    pub(crate) keep_slice: usize,
}

impl CompleteJob<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        let returnvalue = self.returnvalue.to_string();
        let (age, count) = KeepJobs::normalized(self.keep);
        let event = json!({"jobId": self.job_id, "val": returnvalue}).to_string();
        Invocation {
            script: &COMPLETE_JOB,
            keys: vec![k.active(), k.completed(), k.wait(), k.priority(), k.stalled()],
            args: vec![
                k.base().to_owned(),
                self.job_id.to_owned(),
                self.lock.to_owned(),
                self.now.to_string(),
                returnvalue,
                age.map(|a| a.to_string()).unwrap_or_default(),
                count.to_string(),
                event,
                flag(self.fetch_next),
                self.lock_duration.as_millis().to_string(),
                flag(self.debounced),
                self.next_lock.to_owned(),
                self.worker_token.to_owned(),
                self.keep_slice.to_string(),
            ],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<Recorded> {
        let reply = self.invocation().run(conn).await?;
        Ok(Recorded::from_reply(reply, &COMPLETE_JOB, self.job_id, self.keys.name()))
    }
}

script!(FAIL_JOB, "failJob", 7, includes["waiting", "finished"]);

/// `failJob-7.lua`: records a failed attempt, then retries now, retries later, or fails the job
/// for good. The lock is checked before anything is written.
///
/// KEYS[1] active, KEYS[2] failed, KEYS[3] wait, KEYS[4] paused, KEYS[5] meta-paused,
/// KEYS[6] priority, KEYS[7] delayed. ARGV[1] base key, ARGV[2] job id, ARGV[3] the job's lock
/// value, ARGV[4] now ms, ARGV[5] failedReason, ARGV[6] stacktrace JSON array, ARGV[7]
/// attemptsMade, ARGV[8] `"retry"`, `"delay"` or `"fail"`, ARGV[9] due ms (delay), ARGV[10] keep
/// age seconds (`""` = none), ARGV[11] keep count, ARGV[12] failed event JSON, ARGV[13] keep
/// slice (most old failed jobs the keep policy deletes).
///
/// Returns [`Recorded::Done`]`(None)` or [`Recorded::Refused`].
pub(crate) struct FailJob<'a> {
    /// KEYS[1..=7] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) job_id: &'a str,
    /// ARGV[3].
    pub(crate) lock: &'a str,
    /// ARGV[4].
    pub(crate) now: u64,
    /// ARGV[5], and the `val` of the event in ARGV[12].
    pub(crate) reason: String,
    /// ARGV[6].
    pub(crate) stacktrace: Vec<String>,
    /// ARGV[7].
    pub(crate) attempts_made: u64,
    /// ARGV[8..=9].
    pub(crate) action: FailAction,
    /// ARGV[10..=11]: the job's `removeOnFail`.
    pub(crate) keep: Option<&'a KeepJobs>,
    /// ARGV[13].
    pub(crate) keep_slice: usize,
}

/// What [`FailJob`] does after recording the attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailAction {
    /// Back to waiting now.
    Retry,
    /// To delayed, due at this time (ms).
    Delay(u64),
    /// Failed for good.
    Fail,
}

impl FailAction {
    /// ARGV[8].
    pub(crate) fn mode(self) -> &'static str {
        match self {
            FailAction::Retry => "retry",
            FailAction::Delay(_) => "delay",
            FailAction::Fail => "fail",
        }
    }
}

impl FailJob<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        let due = match self.action {
            FailAction::Delay(due) => due,
            FailAction::Retry | FailAction::Fail => 0,
        };
        let (age, count) = KeepJobs::normalized(self.keep);
        let event = json!({"jobId": self.job_id, "val": self.reason}).to_string();
        Invocation {
            script: &FAIL_JOB,
            keys: vec![k.active(), k.failed(), k.wait(), k.paused(), k.meta_paused(), k.priority(), k.delayed()],
            args: vec![
                k.base().to_owned(),
                self.job_id.to_owned(),
                self.lock.to_owned(),
                self.now.to_string(),
                self.reason.clone(),
                serde_json::to_string(&self.stacktrace).unwrap_or_else(|_| "[]".into()),
                self.attempts_made.to_string(),
                self.action.mode().to_owned(),
                due.to_string(),
                age.map(|a| a.to_string()).unwrap_or_default(),
                count.to_string(),
                event,
                self.keep_slice.to_string(),
            ],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<Recorded> {
        let reply = self.invocation().run(conn).await?;
        Ok(Recorded::from_reply(reply, &FAIL_JOB, self.job_id, self.keys.name()))
    }
}

script!(EXTEND_LOCKS, "extendLocks", 1);

/// `extendLocks-1.lua`: renews the locks of this worker's active jobs, each with the lock value
/// of its own activation.
///
/// KEYS[1] stalled. ARGV[1] base key, ARGV[2] lock duration ms, ARGV[3..] pairs of job id and
/// lock value.
///
/// Returns the ids whose lock is gone or held by someone else: their results must be discarded.
pub(crate) struct ExtendLocks<'a> {
    /// KEYS[1] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2].
    pub(crate) lock_duration: Duration,
    /// ARGV[3..]: (job id, lock value).
    pub(crate) held: &'a [(String, String)],
}

impl ExtendLocks<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        let mut args = vec![k.base().to_owned(), self.lock_duration.as_millis().to_string()];
        for (id, lock) in self.held {
            args.push(id.clone());
            args.push(lock.clone());
        }
        Invocation { script: &EXTEND_LOCKS, keys: vec![k.stalled()], args }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<Vec<String>> {
        self.invocation().run(conn).await
    }
}

script!(PROMOTE_DELAYED, "promoteDelayed", 5, includes["waiting"]);

/// `promoteDelayed-5.lua`: moves delayed jobs that are due (or all of them) to waiting, at most
/// a slice per call.
///
/// KEYS[1] delayed, KEYS[2] wait, KEYS[3] paused, KEYS[4] meta-paused, KEYS[5] priority.
/// ARGV[1] base key, ARGV[2] highest score to promote, ARGV[3] token, ARGV[4] slice.
pub(crate) struct PromoteDelayed<'a> {
    /// KEYS[1..=5] and ARGV[1].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[2]: `Some(now)` promotes the jobs due by `now` (score `now * 4096`), `None` every
    /// delayed job (`+inf`).
    pub(crate) due_by: Option<u64>,
    /// ARGV[3].
    pub(crate) token: &'a str,
    /// ARGV[4].
    pub(crate) slice: usize,
}

/// What one call of [`PromoteDelayed`] did.
#[derive(Debug)]
pub(crate) struct Promoted {
    pub(crate) count: usize,
    /// When the next delayed job is due (ms; `now` if its score is unreadable), `None` when no
    /// job is delayed.
    pub(crate) next_due: Option<u64>,
}

impl PromoteDelayed<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        let highest = match self.due_by {
            Some(now) => delayed_score(now, 0).to_string(),
            None => "+inf".to_owned(),
        };
        Invocation {
            script: &PROMOTE_DELAYED,
            keys: vec![k.delayed(), k.wait(), k.paused(), k.meta_paused(), k.priority()],
            args: vec![k.base().to_owned(), highest, self.token.to_owned(), self.slice.to_string()],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<Promoted> {
        let (count, score): (usize, Option<String>) = self.invocation().run(conn).await?;
        let now = self.due_by.unwrap_or_else(now_ms);
        Ok(Promoted { count, next_due: score.map(|score| score.parse::<f64>().map_or(now, due_from_score)) })
    }
}

script!(MOVE_STALLED, "moveStalledJobsToWait", 7, includes["waiting", "finished", "slice"]);

/// `moveStalledJobsToWait-7.lua`: recovers jobs whose worker stopped renewing their lock, one
/// slice of `active` per call: a `Start` call, then calls in the phase each call returns, until
/// it is `Done`.
///
/// KEYS[1] stalled, KEYS[2] wait, KEYS[3] active, KEYS[4] failed, KEYS[5] stalled-check,
/// KEYS[6] meta-paused, KEYS[7] paused. ARGV[1] max stalled count, ARGV[2] base key, ARGV[3] now
/// ms, ARGV[4] stalled interval ms, ARGV[5] phase, ARGV[6] slice, ARGV[7] skip, ARGV[8] cursor,
/// ARGV[9] keep slice.
pub(crate) struct MoveStalledJobsToWait<'a> {
    /// KEYS[1..=7] and ARGV[2].
    pub(crate) keys: &'a QueueKeys,
    /// ARGV[1].
    pub(crate) max_stalled_count: u64,
    /// ARGV[3].
    pub(crate) now: u64,
    /// ARGV[4].
    pub(crate) stalled_interval: Duration,
    /// ARGV[5], ARGV[7] and ARGV[8].
    pub(crate) step: &'a StalledStep,
    /// ARGV[6].
    pub(crate) slice: usize,
    /// ARGV[9].
    pub(crate) keep_slice: usize,
}

/// Where a stalled check stands between its calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StalledStep {
    pub(crate) phase: StalledPhase,
    /// Entries at the tail of `active` already looked at in this phase.
    pub(crate) skip: u64,
    /// The one of them nearest the head.
    pub(crate) cursor: String,
}

impl StalledStep {
    /// The first call of a check.
    pub(crate) fn start() -> Self {
        StalledStep { phase: StalledPhase::Start, skip: 0, cursor: String::new() }
    }
}

/// The phases of a stalled check (see the script's header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StalledPhase {
    /// Take the throttle (`stalled-check`), or find it taken and be done.
    Start,
    /// Recover the marked jobs without a lock.
    Recover,
    /// Mark the active jobs for the next check.
    Mark,
    Done,
}

impl StalledPhase {
    fn as_str(self) -> &'static str {
        match self {
            StalledPhase::Start => "start",
            StalledPhase::Recover => "recover",
            StalledPhase::Mark => "mark",
            StalledPhase::Done => "done",
        }
    }
}

/// The jobs one call of a stalled check handled, and where the check stands.
#[derive(Debug)]
pub(crate) struct Stalled {
    /// Stalled too often: failed.
    pub(crate) failed: Vec<String>,
    /// Back in waiting.
    pub(crate) recovered: Vec<String>,
    /// Pass to the next call, unless its phase is `Done`.
    pub(crate) next: StalledStep,
}

impl MoveStalledJobsToWait<'_> {
    pub(super) fn invocation(&self) -> Invocation {
        let k = self.keys;
        Invocation {
            script: &MOVE_STALLED,
            keys: vec![k.stalled(), k.wait(), k.active(), k.failed(), k.stalled_check(), k.meta_paused(), k.paused()],
            args: vec![
                self.max_stalled_count.to_string(),
                k.base().to_owned(),
                self.now.to_string(),
                self.stalled_interval.as_millis().to_string(),
                self.step.phase.as_str().to_owned(),
                self.slice.to_string(),
                self.step.skip.to_string(),
                self.step.cursor.clone(),
                self.keep_slice.to_string(),
            ],
        }
    }

    pub(crate) async fn run(&self, conn: &CommandConnection) -> Result<Stalled> {
        let (failed, recovered, phase, skip, cursor): (Vec<String>, Vec<String>, String, u64, String) =
            self.invocation().run(conn).await?;
        let phase = match phase.as_str() {
            "recover" => StalledPhase::Recover,
            "mark" => StalledPhase::Mark,
            "done" => StalledPhase::Done,
            other => {
                return Err(Error::Protocol { script: "moveStalledJobsToWait", detail: format!("phase {other:?}") });
            }
        };
        Ok(Stalled { failed, recovered, next: StalledStep { phase, skip, cursor } })
    }
}
