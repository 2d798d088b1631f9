//! Tests of `queuectl doctor`: a clean private Redis has only `ok` findings, and each fault
//! injected into a fresh server gives the expected finding and exit code.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use test_support::{RedisServer, unique};

use crate::support::{json, queuectl};

/// `queuectl doctor --json --sample-seconds <seconds>`: the report and the exit code.
fn doctor(redis: &RedisServer, prefix: &str, seconds: u64) -> (Value, i32) {
    let output = queuectl(&redis.url(), prefix, &["doctor", "--json", "--sample-seconds", &seconds.to_string()]);
    let code = output.status.code().expect("doctor exited normally");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (report, code)
}

/// Every finding of `check`.
fn findings<'r>(report: &'r Value, check: &str) -> Vec<&'r Value> {
    report["findings"].as_array().expect("findings is an array").iter().filter(|f| f["check"] == check).collect()
}

/// The one finding of `check`; panics with the report when there is not exactly one.
fn finding<'r>(report: &'r Value, check: &str) -> &'r Value {
    match findings(report, check).as_slice() {
        [one] => one,
        other => panic!("expected one {check:?} finding, got {}: {report:#}", other.len()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// A minimal job hash, as Bull writes it.
fn write_job(redis: &RedisServer, prefix: &str, queue: &str, id: &str) {
    let key = format!("{prefix}:{queue}:{id}");
    let reply = redis.command(&[
        "HSET",
        &key,
        "name",
        "__default__",
        "data",
        "{}",
        "opts",
        "{\"attempts\":1}",
        "timestamp",
        &now_ms().to_string(),
    ]);
    assert!(reply.starts_with(':'), "{reply}");
}

/// A connection held open, named `name` with `CLIENT SETNAME` in raw RESP.
fn named_connection(redis: &RedisServer, name: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", redis.port())).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    let command = format!("*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n${}\r\n{name}\r\n", name.len());
    stream.write_all(command.as_bytes()).expect("send CLIENT SETNAME");
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).expect("reply");
    assert_eq!(reply, "+OK\r\n");
    stream
}

#[test]
fn a_clean_server_has_only_ok_findings() {
    let redis = RedisServer::start();
    let prefix = unique("doc");
    // One healthy queue, so the queue checks run too.
    let added = queuectl(&redis.url(), &prefix, &["add", "files", "--data", "{}", "--delay", "600000", "--json"]);
    assert!(json(&added)["id"].is_string());
    let (report, code) = doctor(&redis, &prefix, 1);
    let not_ok: Vec<&Value> = report["findings"].as_array().unwrap().iter().filter(|f| f["severity"] != "ok").collect();
    assert!(not_ok.is_empty(), "a clean server should have no warning: {not_ok:#?}");
    assert_eq!((report["verdict"].as_str(), code), (Some("ok"), 0));
    assert_eq!(report["endpoint"], redis.url());
    for check in [
        "latency",
        "rdb-save",
        "aof",
        "appendfsync",
        "maxmemory-policy",
        "clients",
        "unnamed-clients",
        "slowlog",
        "slow-scripts",
    ] {
        finding(&report, check);
    }
    let queue = finding(&report, "queue");
    assert!(queue["measured"].as_str().unwrap().starts_with("files: waiting 0, active 0, delayed 1"), "{queue}");
    for f in report["findings"].as_array().unwrap() {
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["check", "severity", "measured", "advice"]);
    }
}

#[test]
fn our_scripts_in_the_slow_log_are_named_with_what_to_do() {
    let redis = RedisServer::start();
    let prefix = unique("doc");
    // Every command is "slow": the add's script lands in the slow log, as a slow one would.
    assert_eq!(redis.command(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]), "+OK\r\n");
    let added = queuectl(&redis.url(), &prefix, &["add", "files", "--data", "{}", "--json"]);
    assert!(json(&added)["id"].is_string());
    let (report, _) = doctor(&redis, &prefix, 1);
    let slow = finding(&report, "slow-scripts");
    assert_eq!(slow["severity"], "warn", "{slow}");
    let measured = slow["measured"].as_str().unwrap();
    assert!(measured.contains("addJobs: "), "named from its SHA or its source: {slow}");
    assert!(slow["advice"].as_str().unwrap().contains("Slices::add"), "{slow}");
}

#[test]
fn rdb_save_points_warn() {
    let redis = RedisServer::start();
    assert_eq!(redis.command(&["CONFIG", "SET", "save", "900 1"]), "+OK\r\n");
    let (report, code) = doctor(&redis, &unique("doc"), 1);
    let rdb = finding(&report, "rdb-save");
    assert_eq!(rdb["severity"], "warn", "{rdb}");
    assert!(rdb["measured"].as_str().unwrap().contains("900 1"), "{rdb}");
    assert_eq!((report["verdict"].as_str(), code), (Some("warn"), 0));
}

#[test]
fn an_eviction_policy_is_critical() {
    let redis = RedisServer::start();
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]), "+OK\r\n");
    let (report, code) = doctor(&redis, &unique("doc"), 1);
    let policy = finding(&report, "maxmemory-policy");
    assert_eq!(policy["severity"], "critical", "{policy}");
    assert!(policy["measured"].as_str().unwrap().contains("allkeys-lru"));
    assert_eq!((report["verdict"].as_str(), code), (Some("critical"), 1));
}

#[test]
fn a_service_over_its_declared_budget_is_critical() {
    let redis = RedisServer::start();
    let prefix = unique("doc");
    let beat = serde_json::json!({
        "service": "svc", "instance": "host-1", "queues": [], "budget": 1,
        "planned": [1, 0, 0], "open": 1, "at_ms": now_ms(), "interval_ms": 5000
    });
    let key = format!("{prefix}:__hb__:svc:host-1");
    assert_eq!(redis.command(&["SET", &key, &beat.to_string(), "PX", "60000"]), "+OK\r\n");
    let _command = named_connection(&redis, "svc:command:0");
    let _blocking = named_connection(&redis, "svc:blocking:0");
    let (report, code) = doctor(&redis, &prefix, 1);
    let budget = finding(&report, "budget");
    assert_eq!(budget["severity"], "critical", "{budget}");
    assert!(budget["measured"].as_str().unwrap().starts_with("svc: 2 connections"), "{budget}");
    let connections = finding(&report, "connections");
    assert!(connections["measured"].as_str().unwrap().contains("svc: blocking 1, command 1"), "{connections}");
    assert_eq!(code, 1);
}

#[test]
fn a_stall_during_sampling_shows_in_latency() {
    let redis = RedisServer::start();
    let port = redis.port();
    let pings = move || {
        let stats = test_support::resp_command(port, &["INFO", "commandstats"]);
        stats.lines().find_map(|l| l.strip_prefix("cmdstat_ping:calls=")?.split(',').next()?.parse().ok()).unwrap_or(0)
    };
    let before: u64 = pings();
    // Stall once the doctor is sampling: a few of its PINGs (one checks the server answers at all,
    // the rest are the sample) have reached this private server.
    let staller = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while pings() < before + 3 {
            if Instant::now() > deadline {
                return "the doctor never started sampling".to_owned();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        test_support::resp_command(port, &["DEBUG", "SLEEP", "0.5"])
    });
    let (report, _) = doctor(&redis, &unique("doc"), 2);
    assert_eq!(staller.join().expect("staller thread"), "+OK\r\n");
    let latency = finding(&report, "latency");
    assert_ne!(latency["severity"], "ok", "{latency}");
    let measured = latency["measured"].as_str().unwrap();
    let max: f64 = measured
        .split("max ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max in {measured:?}"));
    assert!(max >= 400.0, "the 500 ms stall should show as the max: {measured}");
}

#[test]
fn an_active_job_without_a_lock_and_no_worker_is_critical() {
    let redis = RedisServer::start();
    let prefix = unique("doc");
    write_job(&redis, &prefix, "q", "7");
    assert_eq!(redis.command(&["LPUSH", &format!("{prefix}:q:active"), "7"]), ":1\r\n");
    let (report, code) = doctor(&redis, &prefix, 1);
    let stuck = finding(&report, "stuck-jobs");
    assert_eq!(stuck["severity"], "critical", "{stuck}");
    assert!(stuck["measured"].as_str().unwrap().contains("1 active job without a lock (7)"), "{stuck}");
    assert_eq!(code, 1);
}

#[test]
fn overdue_delayed_jobs_without_a_worker_are_critical() {
    let redis = RedisServer::start();
    let prefix = unique("doc");
    write_job(&redis, &prefix, "q", "9");
    let score = ((now_ms() - 60_000) * 4096).to_string();
    assert_eq!(redis.command(&["ZADD", &format!("{prefix}:q:delayed"), &score, "9"]), ":1\r\n");
    let (report, code) = doctor(&redis, &prefix, 1);
    let overdue = finding(&report, "overdue-delayed");
    assert_eq!(overdue["severity"], "critical", "{overdue}");
    assert!(overdue["measured"].as_str().unwrap().contains("no live worker"), "{overdue}");
    assert_eq!(code, 1);
}

#[test]
fn a_paused_queue_warns_in_json_and_in_the_table() {
    let redis = RedisServer::start();
    let prefix = unique("doc");
    let paused = queuectl(&redis.url(), &prefix, &["pause", "files", "--json"]);
    assert_eq!(json(&paused)["paused"], true);
    let (report, code) = doctor(&redis, &prefix, 1);
    let finding = finding(&report, "queue-paused");
    assert_eq!(finding["severity"], "warn", "{finding}");
    assert!(finding["measured"].as_str().unwrap().starts_with("files: paused"), "{finding}");
    assert_eq!((report["verdict"].as_str(), code), (Some("warn"), 0));

    let table = queuectl(&redis.url(), &prefix, &["doctor", "--sample-seconds", "1"]);
    assert_eq!(table.status.code(), Some(0));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("CHECK") && text.contains("SEVERITY") && text.contains("ADVICE"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("queue-paused") && l.contains("warn")), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("verdict: warn")), "{text}");
    assert!(!text.contains("\x1b["), "no colour when stdout is not a terminal: {text}");
}

#[test]
fn refused_commands_become_warnings_not_aborts() {
    let redis = RedisServer::start_with(&[
        "--rename-command",
        "CONFIG",
        "",
        "--rename-command",
        "CLIENT",
        "",
        "--rename-command",
        "LATENCY",
        "",
        "--rename-command",
        "SLOWLOG",
        "",
    ]);
    let (report, code) = doctor(&redis, &unique("doc"), 1);
    for check in ["client-commands", "rdb-save", "appendfsync", "latency-monitor", "slowlog"] {
        let f = finding(&report, check);
        assert_eq!(f["severity"], "warn", "{f}");
        assert!(f["measured"].as_str().unwrap().contains("unknown command"), "{f}");
    }
    // The other checks still ran (latency depends on the machine's load, so only its presence).
    let latency = finding(&report, "latency");
    assert!(latency["measured"].as_str().unwrap().contains("PINGs"), "{latency}");
    assert_eq!((report["verdict"].as_str(), code), (Some("warn"), 0));
}

#[test]
fn the_endpoint_is_reported_without_its_password() {
    let redis = RedisServer::start_with(&["--user", "ops", "on", ">s3cret-pw", "~*", "&*", "+@all"]);
    let url = redis.url().replace("redis://", "redis://ops:s3cret-pw@");
    let output = queuectl(&url, &unique("doc"), &["doctor", "--json", "--sample-seconds", "1"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("s3cret-pw"), "{text}");
    let report: Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(report["endpoint"], redis.url().replace("redis://", "redis://ops:***@"));
    let endpoint = finding(&report, "endpoint");
    assert!(endpoint["measured"].as_str().unwrap().contains("TLS off"), "{endpoint}");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn an_unreachable_endpoint_is_one_critical_finding() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = queuectl(&format!("redis://127.0.0.1:{port}"), "bull", &["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(finding(&report, "endpoint")["severity"], "critical");
    assert_eq!(output.status.code(), Some(1));
}
