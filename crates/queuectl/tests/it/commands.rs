//! Tests of the one-shot commands, events and work: the built binary against the shared Redis,
//! each test under a key prefix of its own, with the pinned Node Bull peer on the other side
//! wherever what Bull sees is the point.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{NodePeer, redis_url, unique};

use crate::support::{json, queuectl};

/// Upper bound for anything a test waits for; never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// One test's view of the shared Redis: its URL and a key prefix no other test uses.
struct Ctx {
    url: String,
    prefix: String,
}

impl Ctx {
    fn new() -> Self {
        Ctx { url: redis_url(), prefix: unique("qctl") }
    }

    fn run(&self, args: &[&str]) -> Output {
        queuectl(&self.url, &self.prefix, args)
    }

    /// `args` (which should include `--json`) must succeed and print one JSON value.
    fn json(&self, args: &[&str]) -> Value {
        json(&self.run(args))
    }

    /// `queuectl job QUEUE ID --json`.
    fn job(&self, queue: &str, id: &str) -> Value {
        self.json(&["job", queue, id, "--json"])
    }

    /// `queuectl counts QUEUE --json`, exactly as printed.
    fn counts(&self, queue: &str) -> String {
        let output = self.run(&["counts", queue, "--json"]);
        assert!(output.status.success(), "counts failed: {}", stderr(&output));
        String::from_utf8(output.stdout).expect("counts prints UTF-8")
    }

    /// `queuectl add QUEUE --data DATA EXTRA... --json`, returning the id.
    fn add(&self, queue: &str, data: &str, extra: &[&str]) -> String {
        let mut args = vec!["add", queue, "--data", data, "--json"];
        args.extend_from_slice(extra);
        let id = self.json(&args)["id"].clone();
        id.as_str().unwrap_or_else(|| panic!("add printed no string id: {id}")).to_owned()
    }

    /// Arguments for the Node peer on `queue`, with `extra`'s fields added.
    fn peer(&self, queue: &str, extra: Value) -> Value {
        let mut args = json!({"redis": self.url, "prefix": self.prefix, "queue": queue});
        for (key, value) in extra.as_object().expect("extra peer arguments are an object") {
            args[key] = value.clone();
        }
        args
    }

    /// Starts `queuectl` with stdout piped and stderr read line by line in the background.
    fn spawn(&self, args: &[&str]) -> Spawned {
        let mut child = Command::new(env!("CARGO_BIN_EXE_queuectl"))
            .args(["--redis-url", &self.url, "--prefix", &self.prefix])
            .args(args)
            .env_remove("REDIS_MAX_CONNECTIONS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("queuectl starts");
        let (lines, stderr_lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Spawned { child, stderr_lines }
    }
}

/// A `queuectl` child process and its stderr lines.
struct Spawned {
    child: Child,
    stderr_lines: Receiver<String>,
}

impl Spawned {
    /// Blocks until a stderr line contains `needle`.
    fn wait_for_stderr(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("queuectl never printed {needle:?} on stderr; it printed:\n{}", seen.join("\n"));
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The command failed with `code`, said something containing `needle` on stderr, and printed
/// nothing on stdout.
#[track_caller]
fn assert_fails(output: &Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "stderr does not mention {needle:?}: {err}");
    assert!(output.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&output.stdout));
}

/// The counts line for a queue holding exactly these jobs.
fn counts_line(waiting: u64, active: u64, completed: u64, failed: u64, delayed: u64, paused: u64) -> String {
    format!(
        "{{\"waiting\":{waiting},\"active\":{active},\"completed\":{completed},\"failed\":{failed},\
         \"delayed\":{delayed},\"paused\":{paused}}}\n"
    )
}

fn ids(jobs: &Value) -> Vec<&str> {
    jobs.as_array()
        .unwrap_or_else(|| panic!("not an array: {jobs}"))
        .iter()
        .map(|job| job["id"].as_str().unwrap_or_else(|| panic!("job without a string id: {job}")))
        .collect()
}

fn keys(value: &Value) -> Vec<&str> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().map(String::as_str).collect()
}

/// Processes whose command line contains `marker` (zombies have none, so they do not count).
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc is readable").flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn add_stores_every_flag_as_bull_reads_it() {
    let t = Ctx::new();
    assert_eq!(t.add("q", r#"{"a":1}"#, &[]), "1");
    let plain = t.job("q", "1");
    assert_eq!(plain["state"], "waiting");
    assert_eq!(plain["name"], "__default__");
    assert_eq!(plain["data"], json!({"a": 1}));
    assert_eq!(plain["opts"], json!({"attempts": 1, "delay": 0, "timestamp": plain["timestamp"]}));

    let full = t.add(
        "q",
        r#"{"b":[1,2]}"#,
        &[
            "--name",
            "resize",
            "--delay",
            "600000",
            "--priority",
            "3",
            "--attempts",
            "4",
            "--backoff",
            "exponential:250",
            "--job-id",
            "order-17",
            "--lifo",
            "--remove-on-complete",
        ],
    );
    assert_eq!(full, "order-17");
    let job = t.job("q", "order-17");
    assert_eq!(job["state"], "delayed");
    assert_eq!((&job["name"], &job["data"], &job["delay"]), (&json!("resize"), &json!({"b": [1, 2]}), &json!(600000)));
    assert_eq!(
        job["opts"],
        json!({
            "attempts": 4, "backoff": {"type": "exponential", "delay": 250}, "delay": 600000, "priority": 3,
            "lifo": true, "jobId": "order-17", "removeOnComplete": true, "timestamp": job["timestamp"]
        })
    );
    // Bull reads the job queuectl wrote field for field, in the same order.
    let bull = NodePeer::run("get", t.peer("q", json!({"id": "order-17"})));
    assert_eq!(job, bull);
    assert_eq!(keys(&job), keys(&bull));

    // A duplicate custom id is not an error: Bull returns the existing job, unchanged.
    assert_eq!(t.add("q", r#"{"other":true}"#, &["--job-id", "order-17"]), "order-17");
    assert_eq!(t.job("q", "order-17")["data"], json!({"b": [1, 2]}));

    let priority = t.add("q", "{}", &["--priority", "1", "--attempts", "2", "--backoff", "fixed:100"]);
    assert_eq!(priority, "4", "as in Bull, every add counts, custom ids and duplicates too");
    let job = t.job("q", "4");
    assert_eq!(job["state"], "waiting");
    assert_eq!(job["opts"]["priority"], 1);
    assert_eq!(job["opts"]["backoff"], json!({"type": "fixed", "delay": 100}));

    // Without --json the id alone, for shell scripts.
    let human = t.run(&["add", "q", "--data", "{}"]);
    assert!(human.status.success(), "{}", stderr(&human));
    assert_eq!(String::from_utf8_lossy(&human.stdout), "5\n");
}

#[test]
fn counts_prints_six_states_in_a_fixed_order() {
    let t = Ctx::new();
    assert_eq!(t.counts("q"), counts_line(0, 0, 0, 0, 0, 0));
    t.add("q", "{}", &[]);
    t.add("q", "{}", &[]);
    t.add("q", "{}", &["--delay", "600000"]);
    assert_eq!(
        t.counts("q"),
        r#"{"waiting":2,"active":0,"completed":0,"failed":0,"delayed":1,"paused":0}"#.to_owned() + "\n"
    );
    t.json(&["pause", "q", "--json"]);
    assert_eq!(t.counts("q"), counts_line(0, 0, 0, 0, 1, 2));

    let table = t.run(&["counts", "q"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let table = String::from_utf8_lossy(&table.stdout);
    let rows: Vec<Vec<&str>> = table.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            ["STATE", "JOBS"],
            ["waiting", "0"],
            ["active", "0"],
            ["completed", "0"],
            ["failed", "0"],
            ["delayed", "1"],
            ["paused", "2"]
        ],
        "{table}"
    );
}

#[test]
fn pause_and_resume_are_what_bull_sees() {
    let t = Ctx::new();
    t.add("q", "{}", &[]);
    assert_eq!(t.json(&["pause", "q", "--json"]), json!({"queue": "q", "paused": true}));
    assert_eq!(NodePeer::run("isPaused", t.peer("q", json!({}))), json!(true));
    assert_eq!(t.counts("q"), counts_line(0, 0, 0, 0, 0, 1));

    let resumed = t.run(&["resume", "q"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(String::from_utf8_lossy(&resumed.stdout), "q resumed\n");
    assert_eq!(NodePeer::run("isPaused", t.peer("q", json!({}))), json!(false));
    assert_eq!(t.counts("q"), counts_line(1, 0, 0, 0, 0, 0));
}

#[test]
fn jobs_lists_next_to_run_first_up_to_the_limit() {
    let t = Ctx::new();
    for extra in [&[][..], &[], &["--lifo"], &["--priority", "1"], &["--delay", "600000"], &["--delay", "300000"]] {
        t.add("q", "{}", extra);
    }
    let waiting = t.json(&["jobs", "q", "--state", "waiting", "--json"]);
    assert_eq!(ids(&waiting), ["4", "3", "1", "2"], "priority, then lifo, then first in first out");
    assert!(waiting.as_array().unwrap().iter().all(|job| job["state"] == "waiting"), "{waiting}");
    let bull = NodePeer::run("getJobs", t.peer("q", json!({"types": ["waiting"], "asc": true})));
    assert_eq!(ids(&waiting), ids(&bull), "the order Bull lists them in");

    let first_two = t.json(&["jobs", "q", "--state", "waiting", "--limit", "2", "--json"]);
    assert_eq!(ids(&first_two), ["4", "3"]);
    let delayed = t.json(&["jobs", "q", "--state", "delayed", "--json"]);
    assert_eq!(ids(&delayed), ["6", "5"], "soonest due first");
    assert_eq!(t.json(&["jobs", "q", "--state", "failed", "--json"]), json!([]));

    let table = t.run(&["jobs", "q", "--state", "delayed"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let first_column: Vec<String> = String::from_utf8_lossy(&table.stdout)
        .lines()
        .map(|line| line.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(first_column, ["ID", "6", "5"]);
}

#[test]
fn job_prints_bulls_to_json_plus_state_and_retry_moves_failed_jobs_back() {
    let t = Ctx::new();
    let jobs = json!([{"data": {"failAlways": true}}, {"data": {"failAlways": true}}, {"data": {"failAlways": true}}]);
    assert_eq!(NodePeer::run("add", t.peer("q", json!({"jobs": jobs}))), json!(["1", "2", "3"]));
    let worked = NodePeer::run("process", t.peer("q", json!({"expect": 3, "timeoutMs": 20000})));
    assert_eq!(worked["failed"], json!(["1", "2", "3"]), "{worked}");

    let job = t.job("q", "1");
    assert_eq!(
        keys(&job),
        [
            "id",
            "name",
            "data",
            "opts",
            "progress",
            "delay",
            "timestamp",
            "attemptsMade",
            "failedReason",
            "stacktrace",
            "returnvalue",
            "debounceId",
            "finishedOn",
            "processedOn",
            "state"
        ]
    );
    assert_eq!(
        (&job["state"], &job["failedReason"], &job["attemptsMade"]),
        (&json!("failed"), &json!("always"), &json!(1))
    );
    let bull = NodePeer::run("get", t.peer("q", json!({"id": "1"})));
    assert_eq!(job, bull, "what Bull's Job#toJSON and getState say");

    let missing = t.run(&["job", "q", "404", "--json"]);
    assert_fails(&missing, 1, "404");

    let failed = t.json(&["jobs", "q", "--state", "failed", "--json"]);
    assert_eq!(ids(&failed), ["3", "2", "1"], "newest failure first");
    assert_eq!(ids(&t.json(&["jobs", "q", "--state", "failed", "--limit", "2", "--json"])), ["3", "2"]);

    assert_eq!(t.json(&["retry", "q", "1", "--json"]), json!({"retried": ["1"]}));
    assert_eq!(t.job("q", "1")["state"], "waiting");
    assert_fails(&t.run(&["retry", "q", "1"]), 1, "not failed");
    assert_fails(&t.run(&["retry", "q", "404"]), 1, "404");
    assert_eq!(t.counts("q"), counts_line(1, 0, 0, 2, 0, 0));

    assert_eq!(t.json(&["retry", "q", "--all", "--json"]), json!({"retried": 2}));
    assert_eq!(t.counts("q"), counts_line(3, 0, 0, 0, 0, 0));
    assert_eq!(t.json(&["retry", "q", "--all", "--json"]), json!({"retried": 0}));
    assert_fails(&t.run(&["retry", "q"]), 2, "<ID>");
}

#[test]
fn remove_needs_force_and_then_removes() {
    let t = Ctx::new();
    t.add("q", r#"{"keep":"me"}"#, &[]);

    let refused = t.run(&["remove", "q", "1", "--json"]);
    assert_fails(&refused, 1, "--force");
    assert_eq!(t.job("q", "1")["data"], json!({"keep": "me"}), "a refused remove changes nothing");

    assert_eq!(t.json(&["remove", "q", "1", "--force", "--json"]), json!({"removed": "1"}));
    assert_fails(&t.run(&["job", "q", "1"]), 1, "not found");
    assert_eq!(t.counts("q"), counts_line(0, 0, 0, 0, 0, 0));
    assert_fails(&t.run(&["remove", "q", "1", "-f"]), 1, "not found");
}

#[test]
fn clean_needs_force_and_keeps_jobs_within_the_grace_or_over_the_limit() {
    let t = Ctx::new();
    for i in 1..=3 {
        t.add("q", &format!(r#"{{"i":{i}}}"#), &[]);
    }
    assert_fails(&t.run(&["clean", "q", "--state", "waiting"]), 1, "--force");
    assert_eq!(t.counts("q"), counts_line(3, 0, 0, 0, 0, 0), "a refused clean changes nothing");

    let young = t.json(&["clean", "q", "--state", "waiting", "--grace", "3600000", "--force", "--json"]);
    assert_eq!(young, json!({"removed": []}), "every job is younger than an hour");
    let two = t.json(&["clean", "q", "--state", "waiting", "--limit", "2", "--force", "--json"]);
    let removed: Vec<&str> = two["removed"].as_array().expect("removed ids").iter().filter_map(Value::as_str).collect();
    assert_eq!(removed.len(), 2, "{two}");
    assert_eq!(t.counts("q"), counts_line(1, 0, 0, 0, 0, 0));
    for id in ["1", "2", "3"] {
        let found = t.run(&["job", "q", id, "--json"]).status.success();
        assert_eq!(found, !removed.contains(&id), "job {id} after removing {removed:?}");
    }

    // Completed jobs, the default state: a sorted set rather than a list.
    let worked = t.json(&["work", "q", "--exec", "cat", "--max-jobs", "1", "--json"]);
    assert_eq!(worked["stats"]["completed"], 1, "{worked}");
    for i in 4..=5 {
        t.add("q", &format!(r#"{{"i":{i}}}"#), &[]);
    }
    let worked = t.json(&["work", "q", "--exec", "cat", "--max-jobs", "2", "--json"]);
    assert_eq!(worked["stats"]["completed"], 2, "{worked}");
    assert_eq!(t.counts("q"), counts_line(0, 0, 3, 0, 0, 0));
    assert_fails(&t.run(&["clean", "q"]), 1, "--force");
    assert_eq!(t.json(&["clean", "q", "--grace", "3600000", "--force", "--json"]), json!({"removed": []}));
    let one = t.json(&["clean", "q", "--limit", "1", "--force", "--json"]);
    assert_eq!(one["removed"].as_array().map(Vec::len), Some(1), "{one}");
    let rest = t.json(&["clean", "q", "--force", "--json"]);
    assert_eq!(rest["removed"].as_array().map(Vec::len), Some(2), "{rest}");
    assert_eq!(t.counts("q"), counts_line(0, 0, 0, 0, 0, 0));
}

#[test]
fn obliterate_needs_force_and_include_active_for_jobs_in_hand() {
    let t = Ctx::new();
    t.add("q", r#"{"sleepMs":30000}"#, &[]);
    t.add("q", "{}", &["--delay", "600000"]);
    t.add("q", "{}", &[]);
    let before = t.counts("q");
    assert_eq!(before, counts_line(2, 0, 0, 0, 1, 0));
    assert_fails(&t.run(&["obliterate", "q"]), 1, "--force");
    assert_eq!(t.counts("q"), before, "a refused obliterate changes nothing, and does not pause");

    let worker = NodePeer::spawn("process", t.peer("q", json!({"expect": 1, "timeoutMs": 60000})));
    NodePeer::wait_ready(&worker, PATIENCE);
    let deadline = Instant::now() + PATIENCE;
    while t.counts("q") != counts_line(1, 1, 0, 0, 1, 0) {
        assert!(Instant::now() < deadline, "Bull never took job 1: {}", t.counts("q"));
        sleep(Duration::from_millis(50));
    }
    assert_fails(&t.run(&["remove", "q", "1", "--force"]), 1, "locked");

    let refused = t.run(&["obliterate", "q", "--force"]);
    assert_fails(&refused, 1, "--include-active");
    assert_eq!(t.counts("q"), counts_line(1, 1, 0, 0, 1, 0), "refused with a job in hand, the queue is untouched");

    let done = t.json(&["obliterate", "q", "--force", "--include-active", "--json"]);
    assert_eq!(done, json!({"obliterated": "q"}));
    assert_eq!(t.counts("q"), counts_line(0, 0, 0, 0, 0, 0));
    for id in ["1", "2", "3"] {
        assert_fails(&t.run(&["job", "q", id]), 1, "not found");
    }
    let mut worker = worker;
    worker.kill().expect("the Node worker can be killed");
    worker.wait().expect("the Node worker is reaped");
}

#[test]
fn promote_moves_a_delayed_job_to_waiting() {
    let t = Ctx::new();
    t.add("q", "{}", &["--delay", "600000"]);
    assert_eq!(t.job("q", "1")["state"], "delayed");
    assert_eq!(t.json(&["promote", "q", "1", "--json"]), json!({"promoted": "1"}));
    assert_eq!(t.job("q", "1")["state"], "waiting");
    assert_eq!(t.counts("q"), counts_line(1, 0, 0, 0, 0, 0));
    assert_fails(&t.run(&["promote", "q", "1"]), 1, "not delayed");
    assert_fails(&t.run(&["promote", "q", "404"]), 1, "404");

    for _ in 0..3 {
        t.add("q", "{}", &["--delay", "600000"]);
    }
    assert_eq!(t.json(&["promote", "q", "--all", "--slice", "2", "--json"]), json!({"promoted": 3}));
    assert_eq!(t.counts("q"), counts_line(4, 0, 0, 0, 0, 0));
    assert_eq!(t.json(&["promote", "q", "--all", "--json"]), json!({"promoted": 0}));
    assert_fails(&t.run(&["promote", "q"]), 2, "<ID>");
    assert_fails(&t.run(&["promote", "q", "1", "--slice", "2"]), 2, "--slice");
}

#[test]
fn ctrl_c_stops_a_clean_between_two_slices_and_leaves_a_consistent_queue() {
    const JOBS: usize = 20_000;
    let redis = test_support::RedisServer::start();
    let prefix = unique("qctl");
    // 20,000 waiting jobs in one go: a stall of the test's own, on a private server.
    let make = format!(
        "for i = 1, {JOBS} do redis.call('HSET', ARGV[1] .. i, 'name', '__default__', 'data', '{{}}', 'opts', \
         '{{}}', 'timestamp', 1) redis.call('LPUSH', ARGV[1] .. 'wait', i) end"
    );
    redis.command(&["EVAL", &make, "0", &format!("{prefix}:q:")]);
    let waiting = || {
        let counts = json(&queuectl(&redis.url(), &prefix, &["counts", "q", "--json"]));
        counts["waiting"].as_u64().unwrap() as usize
    };
    let clean = Command::new(env!("CARGO_BIN_EXE_queuectl"))
        .args(["--redis-url", &redis.url(), "--prefix", &prefix])
        .args(["clean", "q", "--state", "waiting", "--slice", "1", "--force", "--json"])
        .env_remove("REDIS_MAX_CONNECTIONS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("queuectl starts");
    let deadline = Instant::now() + PATIENCE;
    while waiting() == JOBS {
        assert!(Instant::now() < deadline, "the clean never started");
        sleep(Duration::from_millis(20));
    }
    Command::new("kill").args(["-INT", &clean.id().to_string()]).status().expect("kill runs");
    let output = clean.wait_with_output().expect("queuectl exits");
    let left = waiting();
    assert!(left > 0, "the clean was interrupted before the end");
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    let said = stderr(&output);
    let removed: usize = said
        .split("interrupted: removed ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("stderr says how far it got: {said}"));
    // A slice already sent when Ctrl-C came still ran whole: at most one job more than reported.
    assert!(JOBS - left == removed || JOBS - left == removed + 1, "{removed} reported, {} gone", JOBS - left);
    // Every job left is whole: its hash is there.
    let jobs = json(&queuectl(&redis.url(), &prefix, &["jobs", "q", "--state", "waiting", "--limit", "0", "--json"]));
    assert_eq!(jobs.as_array().unwrap().len(), left);
    // Running it again finishes the work.
    let rest = json(&queuectl(&redis.url(), &prefix, &["clean", "q", "--state", "waiting", "--force", "--json"]));
    assert_eq!(rest["removed"].as_array().unwrap().len(), left);
}

#[test]
fn events_prints_the_jobs_a_node_worker_processes() {
    let t = Ctx::new();
    let events = t.spawn(&["events", "q", "--seconds", "20", "--count", "6"]);
    events.wait_for_stderr("listening");

    let jobs = json!([{"data": {"failAlways": true}}, {"data": {"ret": {"x": [1, 2], "s": "two words"}}}]);
    assert_eq!(NodePeer::run("add", t.peer("q", json!({"jobs": jobs}))), json!(["1", "2"]));
    let worked = NodePeer::run("process", t.peer("q", json!({"expect": 2, "timeoutMs": 20000})));
    assert_eq!((&worked["failed"], &worked["completed"]), (&json!(["1"]), &json!(["2"])), "{worked}");

    // --count 6 ends it; --seconds 20 bounds the wait if an event went missing.
    let output = events.child.wait_with_output().expect("events exits");
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    assert_eq!(
        lines,
        [
            json!({"queue": "q", "event": "waiting", "jobId": "1"}),
            json!({"queue": "q", "event": "waiting", "jobId": "2"}),
            json!({"queue": "q", "event": "active", "jobId": "1"}),
            json!({"queue": "q", "event": "failed", "jobId": "1", "failedReason": "always"}),
            json!({"queue": "q", "event": "active", "jobId": "2"}),
            json!({"queue": "q", "event": "completed", "jobId": "2", "returnvalue": {"x": [1, 2], "s": "two words"}}),
        ]
    );
}

#[test]
fn events_stops_after_seconds_without_printing() {
    let t = Ctx::new();
    let output = t.run(&["events", "q", "other", "--seconds", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr(&output).contains("listening"), "{}", stderr(&output));
}

#[test]
fn connections_shows_queuectl_by_role_with_its_declared_budget() {
    let t = Ctx::new();
    let mut worker = t.spawn(&["work", "files", "--exec", "cat"]);
    // The blocking connection waiting on `files` (base64 "ZmlsZXM=") carries this test's prefix.
    let blocking_name = format!("{}:ZmlsZXM=:queuectl:blocking:0", t.prefix);
    let deadline = Instant::now() + PATIENCE;
    let doc = loop {
        let doc = t.json(&["connections", "--json"]);
        let ready = doc["clients"].as_array().is_some_and(|c| c.iter().any(|c| c["name"] == blocking_name.as_str()))
            && doc["services"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["service"] == "queuectl" && s["declared_budget"].is_number()));
        if ready {
            break doc;
        }
        assert!(Instant::now() < deadline, "the worker's connections never showed: {doc}");
        sleep(Duration::from_millis(100));
    };
    worker.child.kill().expect("the worker can be killed");
    worker.child.wait().expect("the worker is reaped");

    let clients = doc["clients"].as_array().expect("clients");
    assert_eq!(doc["total"], clients.len(), "{doc}");
    assert_eq!(doc["unnamed"], clients.iter().filter(|c| c["name"] == "").count(), "{doc}");
    let blocking = clients.iter().find(|c| c["name"] == blocking_name.as_str()).expect("found above");
    assert_eq!((&blocking["service"], &blocking["role"]), (&json!("queuectl"), &json!("blocking")), "{blocking}");
    assert!(
        clients.iter().any(|c| c["name"] == "queuectl:command:0"
            && c["role"] == "command"
            && c["cmd"].as_str().is_some_and(|cmd| cmd.starts_with("client"))),
        "the connections command's own connection is listed: {doc}"
    );

    let queuectl = doc["services"].as_array().unwrap().iter().find(|s| s["service"] == "queuectl").unwrap();
    let by_role = queuectl["by_role"].as_object().expect("by_role");
    for role in ["command", "subscriber", "blocking"] {
        assert!(by_role.get(role).and_then(Value::as_u64).is_some_and(|n| n >= 1), "{role}: {queuectl}");
    }
    assert_eq!(queuectl["total"], by_role.values().filter_map(Value::as_u64).sum::<u64>(), "{queuectl}");
    // Heartbeats are read under this test's prefix: only its one worker (command, subscriber,
    // blocking) declares a budget there.
    assert_eq!((&queuectl["declared_budget"], &queuectl["instances"]), (&json!(3), &json!(1)), "{queuectl}");

    let table = t.run(&["connections"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().any(|line| line.starts_with("queuectl ")), "{table}");
    assert!(table.lines().last().is_some_and(|line| line.contains("clients in all")), "{table}");
}

#[test]
fn bad_input_fails_with_a_clear_message_and_the_right_exit_code() {
    let t = Ctx::new();
    assert_fails(&t.run(&["add", "q", "--data", "{bad"]), 1, "--data is not valid JSON");
    assert_fails(&t.run(&["add", "q", "--data", "{}", "--backoff", "linear:5"]), 1, "backoff");
    assert_fails(&t.run(&["jobs", "q", "--state", "sleeping"]), 1, "sleeping");
    assert_eq!(t.counts("q"), counts_line(0, 0, 0, 0, 0, 0), "nothing was added");

    assert_fails(&t.run(&["frobnicate", "q"]), 2, "frobnicate");
    assert_fails(&t.run(&["counts", "q", "--frobnicate"]), 2, "--frobnicate");
    assert_fails(&t.run(&["add", "q"]), 2, "--data");
    assert_fails(&t.run(&["add", "q", "--data", "{}", "--delay", "soon"]), 2, "--delay");

    let flag = queuectl("http://127.0.0.1:6379", &t.prefix, &["counts", "q"]);
    assert_fails(&flag, 1, "REDIS_URL");
    let env = Command::new(env!("CARGO_BIN_EXE_queuectl"))
        .args(["counts", "q"])
        .env("REDIS_URL", "localhost:6379")
        .stdin(Stdio::null())
        .output()
        .expect("queuectl runs");
    assert_fails(&env, 1, "REDIS_URL");
}

/// The processor of the `work` test: fails `boom` jobs always and `flaky` ones on their first
/// attempt, prints text for `text` jobs, and otherwise echoes what it was given as JSON.
const WORK_EXEC: &str = r#"in=$(cat)
case "$JOB_NAME" in
  boom) echo "warming up" >&2; echo "boom on attempt $JOB_ATTEMPT" >&2; exit 3 ;;
  flaky) if [ "$JOB_ATTEMPT" = 1 ]; then echo "flaky first try" >&2; exit 4; fi ;;
  text) echo "plain text"; exit 0 ;;
esac
printf '{"id":"%s","name":"%s","attempt":%s,"queue":"%s","in":%s}' "$JOB_ID" "$JOB_NAME" "$JOB_ATTEMPT" "$JOB_QUEUE" "$in""#;

#[test]
fn work_runs_a_command_for_node_jobs_with_retries_and_backoff() {
    let t = Ctx::new();
    let retried = json!({"attempts": 3, "backoff": {"type": "fixed", "delay": 200}});
    let jobs = json!([
        {"name": "first", "data": {"a": 1, "s": "x y"}},
        {"name": "boom", "data": {}, "opts": retried},
        {"name": "flaky", "data": {"b": 2}, "opts": retried},
        {"name": "text", "data": {}},
    ]);
    assert_eq!(NodePeer::run("add", t.peer("q", json!({"jobs": jobs}))), json!(["1", "2", "3", "4"]));
    // Bull's job.finished(), waiting before the work starts: it must see the final outcome,
    // not the flaky job's first failed attempt.
    let finished_first = NodePeer::spawn("finished", t.peer("q", json!({"id": "1", "timeoutMs": 30000})));
    let finished_flaky = NodePeer::spawn("finished", t.peer("q", json!({"id": "3", "timeoutMs": 30000})));
    NodePeer::wait_ready(&finished_first, PATIENCE);
    NodePeer::wait_ready(&finished_flaky, PATIENCE);

    // 1 + 3 + 2 + 1 attempts.
    let worked = t.json(&["work", "q", "--exec", WORK_EXEC, "--max-jobs", "7", "--json"]);
    assert_eq!(worked["queue"], "q");
    let stats = &worked["stats"];
    assert_eq!(
        (&stats["completed"], &stats["failed"], &stats["retried"]),
        (&json!(3), &json!(1), &json!(3)),
        "{worked}"
    );

    let first = t.job("q", "1");
    let value = json!({"id": "1", "name": "first", "attempt": 1, "queue": "q", "in": {"a": 1, "s": "x y"}});
    assert_eq!(
        (&first["state"], &first["returnvalue"], &first["attemptsMade"]),
        (&json!("completed"), &value, &json!(0))
    );
    assert_eq!(NodePeer::finish(finished_first), json!({"value": value}));

    let boom = t.job("q", "2");
    assert_eq!(boom["state"], "failed");
    assert_eq!(boom["attemptsMade"], 3);
    assert_eq!(boom["failedReason"], "warming up\nboom on attempt 3", "the tail of stderr");

    let flaky = t.job("q", "3");
    let value = json!({"id": "3", "name": "flaky", "attempt": 2, "queue": "q", "in": {"b": 2}});
    assert_eq!(
        (&flaky["state"], &flaky["returnvalue"], &flaky["attemptsMade"]),
        (&json!("completed"), &value, &json!(1))
    );
    assert_eq!(NodePeer::finish(finished_flaky), json!({"value": value}));

    assert_eq!(t.job("q", "4")["returnvalue"], "plain text", "stdout that is not JSON is a string");

    assert_eq!(
        NodePeer::run("finished", t.peer("q", json!({"id": "2", "timeoutMs": 10000}))),
        json!({"error": "warming up\nboom on attempt 3"})
    );
    assert_eq!(
        NodePeer::run("counts", t.peer("q", json!({}))),
        json!({"waiting": 0, "active": 0, "completed": 3, "failed": 1, "delayed": 0, "paused": 0})
    );
}

#[test]
fn work_timeout_kills_the_whole_process_group() {
    let t = Ctx::new();
    t.add("q", "{}", &["--attempts", "2", "--backoff", "fixed:600000"]);
    // A duration no other process uses, so the search below finds only this test's sleeps.
    let nanos = std::time::UNIX_EPOCH.elapsed().expect("the clock is past 1970").subsec_nanos();
    let marker = format!("sleep 31.{}{nanos}", std::process::id());
    let exec = format!("{marker} & {marker}; echo done");

    let worked = t.json(&["work", "q", "--exec", &exec, "--timeout-ms", "300", "--max-jobs", "1", "--json"]);
    assert_eq!((&worked["stats"]["completed"], &worked["stats"]["retried"]), (&json!(0), &json!(1)), "{worked}");

    let job = t.job("q", "1");
    assert_eq!(
        (&job["state"], &job["attemptsMade"]),
        (&json!("delayed"), &json!(1)),
        "retried after the backoff: {job}"
    );
    let reason = job["failedReason"].as_str().expect("a failed reason");
    assert!(reason.contains("timed out"), "{reason}");
    assert_eq!(job["returnvalue"], Value::Null, "the command never printed done");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_with(&marker), Vec::<String>::new(), "the command's children outlived the timeout");
}

#[test]
fn work_until_drained_processes_what_waits_and_exits() {
    let t = Ctx::new();
    for i in 1..=4 {
        t.add("q", &format!(r#"{{"i":{i}}}"#), &[]);
    }
    t.add("q", r#"{"later":true}"#, &["--delay", "600000"]);
    let worked = t.json(&["work", "q", "--exec", "cat", "--until-drained", "--json"]);
    assert_eq!(worked["stats"]["completed"], json!(4), "{worked}");
    assert_eq!(t.counts("q"), counts_line(0, 0, 4, 0, 1, 0), "the delayed job is not waited for");
}

#[test]
fn work_stops_taking_jobs_at_max_jobs() {
    let t = Ctx::new();
    for i in 1..=5 {
        t.add("q", &format!(r#"{{"i":{i}}}"#), &[]);
    }
    let worked = t.json(&["work", "q", "--exec", "cat", "--max-jobs", "2", "--json"]);
    assert_eq!((&worked["stats"]["completed"], &worked["stats"]["active"]), (&json!(2), &json!(0)), "{worked}");
    assert_eq!(t.counts("q"), counts_line(3, 0, 2, 0, 0, 0), "the stats are what happened, and nothing more ran");
    assert_eq!(ids(&t.json(&["jobs", "q", "--state", "completed", "--json"])), ["2", "1"]);
    assert_eq!(t.job("q", "1")["returnvalue"], json!({"i": 1}), "stdout that is JSON is parsed");
}

#[test]
fn work_stops_gracefully_on_ctrl_c_after_the_job_in_hand() {
    work_stops_gracefully_on("-INT");
}

/// A service manager's stop.
#[test]
fn work_stops_gracefully_on_sigterm_after_the_job_in_hand() {
    work_stops_gracefully_on("-TERM");
}

fn work_stops_gracefully_on(signal: &str) {
    let ctx = Ctx::new();
    let id = ctx.add("files", "{}", &[]);
    let mut work = ctx.spawn(&["work", "files", "--exec", "sleep 1; echo '{\"slept\":true}'", "--json"]);
    work.wait_for_stderr("working on files");
    let deadline = Instant::now() + PATIENCE;
    while ctx.job("files", &id)["state"] != "active" {
        assert!(Instant::now() < deadline, "the job never became active");
        sleep(Duration::from_millis(20));
    }
    let interrupted = Command::new("kill").args([signal, &work.child.id().to_string()]).status().expect("kill runs");
    assert!(interrupted.success());
    work.wait_for_stderr("stopping");
    let status = work.child.wait().expect("queuectl exits");
    assert!(status.success(), "queuectl work exited with {status}");
    let job = ctx.job("files", &id);
    assert_eq!((job["state"].as_str(), &job["returnvalue"]), (Some("completed"), &json!({"slept": true})));
    let mut stdout = String::new();
    std::io::Read::read_to_string(work.child.stdout.as_mut().expect("stdout is piped"), &mut stdout).unwrap();
    let printed: Value = serde_json::from_str(stdout.trim()).expect("work prints its stats as JSON");
    assert_eq!(printed["stats"]["completed"], 1);
}
