//! Runs the pinned Node Bull 4 peer (`tests/node/bull-peer.js`) as a child process.
//!
//! The peer prints exactly one JSON value on stdout when its command is done and logs to stderr.
//! Long-running commands (`process`, `events`) print a `READY` line on stderr once they are
//! subscribed / polling; [`NodePeer::wait_ready`] waits for it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Namespace for running the Node Bull peer. See the crate's `tests/node/bull-peer.js` for the
/// commands and their argument / output shapes.
///
/// ```no_run
/// use serde_json::json;
/// use test_support::{NodePeer, redis_url, unique};
///
/// let base = json!({"redis": redis_url(), "prefix": unique("p"), "queue": "q"});
/// let mut args = base.clone();
/// args["jobs"] = json!([{"data": {"x": 1}}]);
/// let ids = NodePeer::run("add", args);
/// assert_eq!(ids, json!(["1"]));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct NodePeer;

/// The stderr of one spawned peer, collected by a background thread.
struct StderrLog {
    /// Human-readable `command args` for error messages.
    label: String,
    state: Mutex<StderrState>,
    changed: Condvar,
}

#[derive(Default)]
struct StderrState {
    text: String,
    eof: bool,
}

/// Spawned peers by process id (a `Child` cannot carry extra state).
fn registry() -> &'static Mutex<HashMap<u32, Arc<StderrLog>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u32, Arc<StderrLog>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn log_of(child: &Child) -> Arc<StderrLog> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&child.id())
        .cloned()
        .unwrap_or_else(|| panic!("process {} was not started by NodePeer::spawn", child.id()))
}

impl NodePeer {
    /// The timeout [`run`](Self::run) and [`finish`](Self::finish) use.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// Path of `tests/node/bull-peer.js` in this workspace.
    pub fn script() -> PathBuf {
        peer_dir().join("bull-peer.js")
    }

    /// Runs `node tests/node/bull-peer.js <command> '<args as JSON>'` to completion (at most
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT)) and returns the JSON value it printed.
    ///
    /// # Panics
    ///
    /// With the peer's stdout and stderr if it times out (it is killed), exits non-zero, or does
    /// not print JSON; or if `node` or the peer's `node_modules` are missing.
    pub fn run(command: &str, args: Value) -> Value {
        NodePeer::run_with_timeout(command, args, NodePeer::DEFAULT_TIMEOUT)
    }

    /// [`run`](Self::run) with an explicit timeout.
    ///
    /// # Panics
    ///
    /// As [`run`](Self::run).
    pub fn run_with_timeout(command: &str, args: Value, timeout: Duration) -> Value {
        NodePeer::finish_with_timeout(NodePeer::spawn(command, args), timeout)
    }

    /// Starts the peer without waiting for it, e.g. a `process` worker that runs while the test
    /// drives Rust code. Its stdout is piped (read it with [`finish`](Self::finish)); its stderr
    /// is collected in the background (see [`wait_ready`](Self::wait_ready) and
    /// [`stderr`](Self::stderr)), so `child.stderr` is `None`.
    ///
    /// Dropping the `Child` does not stop the process: call [`finish`](Self::finish), or kill it
    /// (`child.kill()` sends SIGKILL, a crash; `kill -TERM` makes `process` stop and print its
    /// results).
    ///
    /// # Panics
    ///
    /// If `node` cannot be started or `tests/node/node_modules` is missing.
    pub fn spawn(command: &str, args: Value) -> Child {
        let dir = peer_dir();
        assert!(
            dir.join("node_modules").join("bull").is_dir(),
            "the Node Bull peer is not installed: run `npm ci` in {} (scripts/test does this)",
            dir.display()
        );
        let json = args.to_string();
        let mut child = Command::new("node")
            .arg(NodePeer::script())
            .arg(command)
            .arg(&json)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                if err.kind() == io::ErrorKind::NotFound {
                    panic!("`node` is not installed (not found on PATH); the Bull interop tests need Node 18+")
                }
                panic!("cannot start node: {err}")
            });
        let log = Arc::new(StderrLog {
            label: format!("bull-peer {command} {json}"),
            state: Mutex::new(StderrState::default()),
            changed: Condvar::new(),
        });
        registry().lock().unwrap_or_else(PoisonError::into_inner).insert(child.id(), Arc::clone(&log));
        let stderr = child.stderr.take().expect("stderr is piped");
        thread::spawn(move || collect_stderr(stderr, &log));
        child
    }

    /// Blocks until the spawned peer prints its `READY` line on stderr.
    ///
    /// # Panics
    ///
    /// With the peer's stderr if it exits first or `timeout` passes.
    pub fn wait_ready(child: &Child, timeout: Duration) {
        let log = log_of(child);
        let deadline = Instant::now() + timeout;
        let mut state = log.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.text.lines().any(|line| line.trim_end().ends_with("READY")) {
                return;
            }
            assert!(!state.eof, "{} exited before it was READY; stderr:\n{}", log.label, state.text);
            let now = Instant::now();
            assert!(now < deadline, "{} was not READY within {timeout:?}; stderr:\n{}", log.label, state.text);
            state = log.changed.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// What the spawned peer has written to stderr so far.
    pub fn stderr(child: &Child) -> String {
        log_of(child).state.lock().unwrap_or_else(PoisonError::into_inner).text.clone()
    }

    /// Waits (at most [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT)) for a spawned peer to exit and
    /// returns the JSON value of the last non-empty line of its stdout.
    ///
    /// # Panics
    ///
    /// As [`run`](Self::run).
    pub fn finish(child: Child) -> Value {
        NodePeer::finish_with_timeout(child, NodePeer::DEFAULT_TIMEOUT)
    }

    /// [`finish`](Self::finish) with an explicit timeout; on timeout the peer is killed.
    ///
    /// # Panics
    ///
    /// As [`run`](Self::run).
    pub fn finish_with_timeout(mut child: Child, timeout: Duration) -> Value {
        let log = log_of(&child);
        // Read stdout while waiting, so a large reply cannot fill the pipe and block the peer.
        let stdout_reader = child.stdout.take().map(|mut stdout| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = stdout.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        });
        let deadline = Instant::now() + timeout;
        let status: Option<ExitStatus> = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Err(err) => panic!("{}: cannot wait for node: {err}", log.label),
            }
        };
        let stdout = stdout_reader.map(|reader| reader.join().unwrap_or_default()).unwrap_or_default();
        let stderr = wait_stderr_eof(&log, Duration::from_secs(5));
        registry().lock().unwrap_or_else(PoisonError::into_inner).remove(&child.id());

        let report =
            |what: String| -> ! { panic!("{}: {what}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}", log.label) };
        match status {
            None => report(format!("timed out after {timeout:?} and was killed")),
            Some(status) if !status.success() => report(format!("failed ({status})")),
            Some(_) => {}
        }
        let last_line = stdout.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("");
        serde_json::from_str(last_line).unwrap_or_else(|err| report(format!("did not print JSON ({err})")))
    }
}

/// `<workspace>/tests/node`.
fn peer_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    root.canonicalize().unwrap_or(root).join("tests").join("node")
}

fn collect_stderr(stderr: ChildStderr, log: &StderrLog) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).unwrap_or(0);
        let mut state = log.state.lock().unwrap_or_else(PoisonError::into_inner);
        if n == 0 {
            state.eof = true;
            log.changed.notify_all();
            return;
        }
        state.text.push_str(&String::from_utf8_lossy(&line));
        log.changed.notify_all();
    }
}

/// The whole stderr, once the collector has seen EOF (or what is there after `timeout`).
fn wait_stderr_eof(log: &StderrLog, timeout: Duration) -> String {
    let state = log.state.lock().unwrap_or_else(PoisonError::into_inner);
    let (state, _) =
        log.changed.wait_timeout_while(state, timeout, |state| !state.eof).unwrap_or_else(PoisonError::into_inner);
    state.text.clone()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{RedisServer, unique};

    fn base(redis: &RedisServer) -> Value {
        json!({"redis": redis.url(), "prefix": unique("tsp"), "queue": "q"})
    }

    fn with(mut args: Value, extra: Value) -> Value {
        for (key, value) in extra.as_object().unwrap() {
            args[key] = value.clone();
        }
        args
    }

    #[test]
    fn script_is_in_the_workspace() {
        assert!(NodePeer::script().is_file(), "{}", NodePeer::script().display());
    }

    #[test]
    fn adds_processes_and_reads_back_jobs() {
        let redis = RedisServer::start();
        let args = base(&redis);
        let ids = NodePeer::run(
            "add",
            with(args.clone(), json!({"jobs": [{"data": {"ret": 7}}, {"name": "n", "data": {}}]})),
        );
        assert_eq!(ids, json!(["1", "2"]));

        let worker = NodePeer::spawn("process", with(args.clone(), json!({"expect": 2, "timeoutMs": 20000})));
        NodePeer::wait_ready(&worker, Duration::from_secs(20));
        let result = NodePeer::finish(worker);
        assert_eq!(result["completed"], json!(["1", "2"]), "{result}");
        assert_eq!(result["timedOut"], json!(false));
        assert_eq!(result["starts"][1]["name"], json!("n"));

        let job = NodePeer::run("get", with(args.clone(), json!({"id": "1"})));
        assert_eq!(job["state"], json!("completed"));
        assert_eq!(job["returnvalue"], json!(7));
        assert_eq!(NodePeer::run("get", with(args.clone(), json!({"id": "99"}))), Value::Null);
        let counts = NodePeer::run("counts", args);
        assert_eq!(counts["completed"], json!(2), "{counts}");
    }

    #[test]
    #[should_panic(expected = "failed (exit status: 1)")]
    fn errors_panic_with_the_output() {
        NodePeer::run("no-such-command", json!({}));
    }
}
