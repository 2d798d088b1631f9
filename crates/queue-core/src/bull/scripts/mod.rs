//! Our Lua scripts, one typed call each, run with `EVALSHA` and an `EVAL` fallback, and the one
//! mapping from their negative return codes to errors.
//!
//! Each script is declared with `script!` beside its typed call: a struct whose fields are the
//! script's KEYS and ARGV in the order of its Lua header, and whose `run` returns a typed result.
//! Keys come from [`QueueKeys`](crate::bull::keys::QueueKeys) inside the call, so no caller fills
//! KEYS or ARGV by position. `producer.rs` holds the calls of the producer and operator side,
//! `worker.rs` those of workers.

use redis::FromRedisValue;

use crate::connection::command::CommandConnection;
use crate::error::{Error, Result};

mod producer;
mod worker;

pub(crate) use producer::{
    AddJobs, AddLog, CleanCursor, CleanJobs, GetState, JobToAdd, Obliterate, Pause, PauseEvent, Promote, Remaining,
    RemoveJob, Repeat, RepeatMode, RetryJob, RetryJobs, UpdateData, UpdateProgress,
};
pub(crate) use worker::{
    CompleteJob, ExtendLocks, FailAction, FailJob, Limiter, MoveStalledJobsToWait, MoveToActive, PromoteDelayed,
    Recorded, StalledPhase, StalledStep,
};

/// One script: its source, embedded at build time, and its SHA1.
struct Script {
    name: &'static str,
    num_keys: usize,
    source: &'static str,
    sha: String,
}

impl Script {
    fn new(name: &'static str, num_keys: usize, source: &'static str) -> Self {
        Script { name, num_keys, source, sha: redis::Script::new(source).get_hash().to_owned() }
    }
}

/// A script with its keys and arguments, as a typed call fills them.
struct Invocation {
    script: &'static Script,
    keys: Vec<String>,
    args: Vec<String>,
}

impl Invocation {
    /// Runs the script on the command connection. `EVALSHA` first; on `NOSCRIPT` (a fresh or
    /// flushed server) `EVAL`, which also caches it for the next call.
    async fn run<T: FromRedisValue + Send>(&self, conn: &CommandConnection) -> Result<T> {
        let script = self.script;
        assert_eq!(self.keys.len(), script.num_keys, "script {} takes {} keys", script.name, script.num_keys);
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&script.sha).arg(script.num_keys).arg(&self.keys).arg(&self.args);
        match conn.query::<T>(&evalsha).await {
            Err(Error::Redis { source, .. })
                if source.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                let mut eval = redis::cmd("EVAL");
                eval.arg(script.source).arg(script.num_keys).arg(&self.keys).arg(&self.args);
                conn.query::<T>(&eval).await
            }
            other => other,
        }
    }
}

/// A Lua flag: `"1"` or `"0"`.
fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_owned()
}

/// Declares a script: `scripts/<file>-<keys>.lua`, preceded by the listed
/// `scripts/includes/<name>.lua` files (shared local functions, as Bull's `@include`) and by a
/// first line `-- queue-core:<file>` that names it where Redis shows the start of an `EVAL`
/// (the slow log).
macro_rules! script {
    ($ident:ident, $file:literal, $keys:literal $(, includes [$($include:literal),*])?) => {
        pub(super) static $ident: std::sync::LazyLock<$crate::bull::scripts::Script> =
            std::sync::LazyLock::new(|| {
                $crate::bull::scripts::Script::new($file, $keys, concat!(
                    "-- queue-core:", $file, "\n",
                    $($(include_str!(concat!("../../../scripts/includes/", $include, ".lua")), "\n",)*)?
                    include_str!(concat!("../../../scripts/", $file, "-", $keys, ".lua"))
                ))
            });
    };
}
use script;

/// The first line of every script's source, before its name.
const NAME_LINE: &str = "-- queue-core:";

/// Every script of ours.
fn every_script() -> [&'static Script; 18] {
    use producer::*;
    use worker::*;
    [
        &ADD_JOBS,
        &GET_STATE,
        &PAUSE,
        &REMOVE_JOB,
        &RETRY_JOB,
        &RETRY_JOBS,
        &PROMOTE,
        &CLEAN_JOBS,
        &OBLITERATE,
        &ADD_LOG,
        &UPDATE_PROGRESS,
        &UPDATE_DATA,
        &MOVE_TO_ACTIVE,
        &COMPLETE_JOB,
        &FAIL_JOB,
        &EXTEND_LOCKS,
        &PROMOTE_DELAYED,
        &MOVE_STALLED,
    ]
}

/// The name of our script that a call runs, from what Redis shows of it (`SLOWLOG GET`,
/// `MONITOR`): `EVALSHA <sha> ...` is looked up by SHA1; `EVAL <source> ...` by the source's
/// first line, which names the script (the slow log keeps only its first 128 bytes). `None` for
/// any other command, and for scripts that are not ours (Node Bull's).
pub(crate) fn script_of_call(command: &str, first_arg: &str) -> Option<&'static str> {
    if command.eq_ignore_ascii_case("EVALSHA") {
        return every_script().into_iter().find(|s| s.sha.eq_ignore_ascii_case(first_arg)).map(|s| s.name);
    }
    if command.eq_ignore_ascii_case("EVAL") {
        let name = first_arg.strip_prefix(NAME_LINE)?.split(['\n', '.']).next()?;
        return every_script().into_iter().find(|s| s.name == name).map(|s| s.name);
    }
    None
}

/// Turns a script's integer reply into `Ok(code)` for success codes or the error it stands for.
/// Every script's codes are listed in its header; this is the only place that interprets them.
fn check_code(script: &Script, code: i64, job_id: &str, queue: &str) -> Result<i64> {
    let missing = || Error::JobNotFound(job_id.to_owned());
    let err = match (script.name, code) {
        ("removeJob", 1) | ("retryJob", 1) => return Ok(code),
        ("removeJob", 0) | ("retryJob", -1) => Error::JobLocked(job_id.to_owned()),
        ("removeJob", -1) | ("retryJob", 0) => missing(),
        ("retryJob", -2) => Error::WrongState { id: job_id.to_owned(), expected: "failed" },
        (_, c) if c >= 0 => return Ok(c),
        ("promote", -1) => Error::WrongState { id: job_id.to_owned(), expected: "delayed" },
        ("obliterate", -1) => Error::WrongState { id: queue.to_owned(), expected: "paused" },
        ("obliterate", -2) => Error::ActiveJobs(queue.to_owned()),
        ("addLog" | "updateProgress" | "updateData" | "completeJob" | "failJob", -1) => missing(),
        ("completeJob" | "failJob", -2) => Error::LockLost { id: job_id.to_owned(), reason: "missing" },
        ("completeJob" | "failJob", -6) => Error::LockLost { id: job_id.to_owned(), reason: "taken" },
        ("completeJob" | "failJob", -3) => Error::WrongState { id: job_id.to_owned(), expected: "active" },
        (name, code) => Error::Protocol { script: name, detail: format!("return code {code}") },
    };
    Err(err)
}

#[cfg(test)]
mod tests;
