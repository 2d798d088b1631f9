//! `queuectl doctor`: the post-mortem's checklist, automated.
//!
//! The doctor samples latency first (so its own reads do not disturb the sample), then reads the
//! server once (`INFO`, a few `CONFIG GET`s, `CLIENT LIST`, `CLIENT INFO`, heartbeats, the slow
//! log, `LATENCY LATEST`) and judges what it read with pure functions, then looks at every Bull
//! queue under the prefix. Each finding has a `check`, a `severity` (`ok`, `warn`, `critical`),
//! what was `measured` and `advice`. The verdict is the worst severity; the exit code is 1 when
//! it is `critical`. A check that cannot run (a command refused by a managed Redis or an ACL)
//! is a `warn` finding that says so, never an abort. Only an endpoint that does not answer `PING`
//! at all ends the run early, with one `critical` finding.
//!
//! `--json` prints `{"verdict", "endpoint", "findings": [{"check", "severity", "measured",
//! "advice"}]}`; otherwise an aligned table and a verdict line.
//!
//! The checks, and the decisions behind their severities:
//!
//! | check | ok | warn | critical |
//! |---|---|---|---|
//! | `endpoint` | answers, is a primary | | unreachable, or a replica (writes fail) |
//! | `redis-version` | >= 6.2 | version unreadable | < 6.2 (scripts need `BLMOVE`, `LPOS`; RESP3 needs 6.0) |
//! | `client-commands` | `CLIENT` allowed | refused (managed Redis): client checks skipped | |
//! | `latency` | below the thresholds | p99 >= [`LATENCY_P99_WARN`] or max >= [`LATENCY_MAX_WARN`], or not sampled | max >= [`LATENCY_CRITICAL`] or the command timeout, or a PING failed |
//! | `latency-monitor` | off, or no event >= [`LATENCY_MAX_WARN`] | an event's max >= [`LATENCY_MAX_WARN`] (history, so never critical) | |
//! | `slowlog` | empty | any entry (until `SLOWLOG RESET`) | |
//! | `rdb-save` | `save ""` | save points configured: every snapshot forks and stalls Redis | |
//! | `fork` | latest fork < [`LATENCY_MAX_WARN`] | >= [`LATENCY_MAX_WARN`] | >= the critical stall |
//! | `aof` | on | off: acknowledged jobs can be lost on a crash | |
//! | `appendfsync` | `always`; `everysec` (ok, with a note: ~1-2 s can be lost) | `no` | |
//! | `rewrite` | none in progress; in progress (ok, with a note: it forks) | | |
//! | `write-status` | last writes ok | a failed rewrite or snapshot that does not stop writes | writes are refused (`MISCONF`) |
//! | `maxmemory-policy` | `noeviction` | | anything else: locks and jobs can be evicted |
//! | `memory-use` | under [`MEMORY_WARN`] of `maxmemory`; `maxmemory 0` (ok, with a note) | >= [`MEMORY_WARN`] | >= [`MEMORY_CRITICAL`] (writes fail at 100%) |
//! | `fragmentation` | otherwise | ratio >= [`FRAGMENTATION_WARN`] wasting >= [`FRAGMENTATION_MIN_BYTES`], or RSS well below used (swap) | |
//! | `clients` | under [`CLIENTS_WARN`] of `maxclients` | >= [`CLIENTS_WARN`], or declared budgets sum above `maxclients` | >= [`CLIENTS_CRITICAL`] |
//! | `connections` | always (by service and role) | | |
//! | `unnamed-clients` | none | any (they fit no service or budget) | |
//! | `budget` (per service with heartbeats) | within its declared budget | | over it |
//! | `subscriber-buffers` | every subscriber's output buffer < [`SUBSCRIBER_OMEM_WARN`] | one at or above it | |
//! | `heartbeats` | (only listed when unreadable) | unreadable: budgets and workers unknown | |
//! | `queues` | none found, or the scan ran | the scan failed | |
//! | `queue` (per queue) | counts and live workers | jobs waiting and no worker seen | |
//! | `queue-paused` | (only listed when paused) | globally paused | |
//! | `stuck-jobs` | (only listed when found) | active jobs without a lock, a worker is live (stall recovery will act) | ... and no live worker |
//! | `overdue-delayed` | (only listed when found) | the oldest delayed job is > [`DELAYED_OVERDUE`] late, a worker is live | ... and no live worker |
//! | `failed-jobs` | (only listed when found) | jobs failed for good in the last [`FAILED_WINDOW`] | |
//!
//! An `ok` finding may still carry advice: a note on a deliberate trade-off (`appendfsync
//! everysec`, no `maxmemory`, plain TCP). A clean server as the README recommends it (AOF on,
//! `save ""`, `noeviction`, every connection named, empty slow log) has only `ok` findings.
//!
//! Queues are found by one `SCAN` pass over `<prefix>:*` (`COUNT` [`SCAN_COUNT`], never `KEYS`)
//! keeping keys `<prefix>:<queue>:<marker>` for Bull's markers (`id`, `wait`, `active`, `delayed`,
//! `paused`, `meta-paused`, `completed`, `failed`) and skipping the heartbeat namespace. A live
//! worker of a queue is a heartbeat listing it, or a connection named like Bull's `getWorkers()`
//! expects (`<prefix>:<base64(queue)>`). "Failed-job growth" is the number of jobs in the failed
//! set whose score (finishedOn) is within the last [`FAILED_WINDOW`]. An active job counts as stuck
//! only when its lock is missing twice, [`STUCK_RECHECK`] apart, so the instant between a worker's
//! `BLMOVE` and its lock does not count.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use queue_core::{Connections, HeartbeatRecord, JobCounts, Queue};
use redis::{FromRedisValue, Value};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::cli::{DoctorArgs, Global};
use crate::clients::{self, Client, ServiceUsage};
use crate::output::{Colour, Printer};

/// Pause between two latency PINGs, as `redis-cli --latency` does.
const PING_INTERVAL: Duration = Duration::from_millis(10);
/// A p99 PING round trip at or above this is a warning: on one host a healthy Redis answers in
/// well under a millisecond, so this means a starved CPU or a busy server.
const LATENCY_P99_WARN: Duration = Duration::from_millis(10);
/// A single stall at or above this (a PING, a fork, a latency event) is a warning: it is a
/// visible pause for every client at once.
const LATENCY_MAX_WARN: Duration = Duration::from_millis(50);
/// A stall at or above this, or at or above the command timeout if that is lower, is critical:
/// callers time out and workers may lose locks.
const LATENCY_CRITICAL: Duration = Duration::from_secs(1);
/// Memory use (of `maxmemory`) that is a warning.
const MEMORY_WARN: f64 = 0.80;
/// Memory use (of `maxmemory`) that is critical: with `noeviction`, writes fail at 100%.
const MEMORY_CRITICAL: f64 = 0.95;
/// Fragmentation ratio (RSS / used) that is a warning, when it also wastes enough bytes.
const FRAGMENTATION_WARN: f64 = 1.5;
/// Below this much waste (RSS - used), fragmentation is noise (a fresh server shows a ratio of 7).
const FRAGMENTATION_MIN_BYTES: u64 = 64 << 20;
/// Below this ratio, with enough data, part of Redis is probably swapped out.
const SWAP_RATIO: f64 = 0.9;
/// Connected clients (of `maxclients`) that is a warning.
const CLIENTS_WARN: f64 = 0.80;
/// Connected clients (of `maxclients`) that is critical: new connections are about to be refused.
const CLIENTS_CRITICAL: f64 = 0.95;
/// A subscriber's output buffer at or above this is a warning: it does not keep up.
const SUBSCRIBER_OMEM_WARN: u64 = 1 << 20;
/// How many unnamed clients, slow-log entries or stuck ids a finding lists.
const LISTED: usize = 5;
/// `SCAN ... COUNT` for queue discovery.
const SCAN_COUNT: usize = 1000;
/// At most this many active ids (the oldest) are checked for a lock, per queue.
const STUCK_SCAN_LIMIT: usize = 1000;
/// Delay before confirming that active jobs without a lock are still without one.
const STUCK_RECHECK: Duration = Duration::from_millis(500);
/// A delayed job this late means nobody promotes it (promoters sleep at most until the next due
/// time, and Bull's `guardInterval` is 5 s).
const DELAYED_OVERDUE: Duration = Duration::from_secs(5);
/// Window for "failed-job growth".
const FAILED_WINDOW: Duration = Duration::from_secs(60);
/// Oldest Redis the scripts run on: `BLMOVE` and `LPOS` are 6.2 (RESP3 is 6.0).
const MIN_VERSION: (u64, u64) = (6, 2);
/// Keys whose presence under `<prefix>:<queue>:` marks a Bull queue.
const QUEUE_MARKERS: &[&str] = &["id", "wait", "active", "delayed", "paused", "meta-paused", "completed", "failed"];
/// The only settings read with `CONFIG GET` (never `*`: that would fetch passwords too).
const CONFIG_KEYS: &[&str] =
    &["save", "appendfsync", "latency-monitor-threshold", "maxclients", "stop-writes-on-bgsave-error"];

/// Runs every check, prints the report, and exits 1 when a finding is critical.
pub(crate) async fn run(c: &Connections, g: &Global, p: &Printer, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = diagnose(c, &g.prefix, Duration::from_secs(args.sample_seconds), p).await;
    print(p, &report);
    Ok(if report.verdict() == Severity::Critical { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

// ---------------------------------------------------------------------------------------------
// Findings and the report

/// How bad a finding is; ordered, so the verdict is the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Ok,
    Warn,
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "warn",
            Severity::Critical => "critical",
        }
    }

    fn colour(self) -> Colour {
        match self {
            Severity::Ok => Colour::Green,
            Severity::Warn => Colour::Yellow,
            Severity::Critical => Colour::Red,
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Finding {
    check: &'static str,
    severity: Severity,
    measured: String,
    advice: String,
}

impl Finding {
    fn new(check: &'static str, severity: Severity, measured: impl Into<String>, advice: impl Into<String>) -> Self {
        Finding { check, severity, measured: measured.into(), advice: advice.into() }
    }

    fn ok(check: &'static str, measured: impl Into<String>) -> Self {
        Self::new(check, Severity::Ok, measured, "")
    }

    /// A check that could not run because `source` was refused or failed.
    fn unavailable(check: &'static str, source: &str, error: &str) -> Self {
        let advice = match source {
            "CONFIG GET" => "managed services often refuse CONFIG: check this setting in the provider's console",
            "CLIENT" => "managed services may refuse CLIENT: connections stay unnamed and cannot be attributed",
            "INFO" => "give the ACL user +info",
            _ => "give the ACL user this command, or check by hand",
        };
        Self::new(check, Severity::Warn, format!("not checked: {source} failed: {error}"), advice)
    }
}

/// Everything the doctor found.
#[derive(Debug, Serialize)]
struct Report {
    /// The URL really used, password redacted.
    endpoint: String,
    findings: Vec<Finding>,
}

impl Report {
    fn verdict(&self) -> Severity {
        self.findings.iter().map(|f| f.severity).max().unwrap_or(Severity::Ok)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({"verdict": self.verdict(), "endpoint": self.endpoint, "findings": self.findings})
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }
}

fn print(p: &Printer, report: &Report) {
    if p.json {
        p.json(&report.to_json());
        return;
    }
    p.line(&format!("endpoint: {}", report.endpoint));
    let rows: Vec<Vec<String>> = report
        .findings
        .iter()
        .map(|f| vec![f.check.to_owned(), f.severity.as_str().to_owned(), f.measured.clone(), f.advice.clone()])
        .collect();
    p.table(&["check", "severity", "measured", "advice"], &rows, |col, cell| {
        let severity = [Severity::Ok, Severity::Warn, Severity::Critical].into_iter().find(|s| s.as_str() == cell);
        if col == 1 { severity.map(Severity::colour) } else { None }
    });
    p.line(&format!(
        "verdict: {} ({} critical, {} warn, {} ok)",
        report.verdict().as_str(),
        report.count(Severity::Critical),
        report.count(Severity::Warn),
        report.count(Severity::Ok)
    ));
}

// ---------------------------------------------------------------------------------------------
// The run

async fn diagnose(c: &Connections, prefix: &str, window: Duration, p: &Printer) -> Report {
    let url = &c.config().url;
    let endpoint = url.redacted();
    if let Err(e) = c.command().ping().await {
        let finding = Finding::new(
            "endpoint",
            Severity::Critical,
            format!("{endpoint} does not answer PING: {e}"),
            "check REDIS_URL / --redis-url, that Redis runs, and the network between",
        );
        return Report { endpoint, findings: vec![finding] };
    }
    let command_timeout = c.config().command_timeout;
    let sample = sample_latency(c, window, p).await;
    let s = Snapshot::read(c, prefix).await;
    let info = s.info.as_ref().map_err(String::as_str);
    let config = s.config.as_ref().map_err(String::as_str);
    let client_list = s.clients.as_ref().ok().map(Vec::as_slice);
    let beats = s.beats.as_deref().unwrap_or_default();

    let mut findings = vec![endpoint_finding(&endpoint, url.is_tls(), s.reached.as_deref(), info)];
    findings.push(version_finding(info));
    findings.push(client_commands_finding(&s.clients));
    findings.push(latency_finding(&sample, command_timeout));
    findings.push(latency_monitor_finding(config, s.latency_events.as_ref()));
    findings.push(slowlog_finding(&s.slowlog));
    findings.extend(persistence_findings(info, config, command_timeout));
    findings.extend(memory_findings(info));
    findings.push(clients_finding(info, config, beats));
    if let Some(list) = client_list {
        findings.push(connections_finding(list, beats));
        findings.push(unnamed_finding(list));
        findings.extend(budget_findings(list, beats));
        findings.push(subscriber_buffers_finding(list));
    }
    if let Err(e) = &s.beats {
        findings.push(Finding::unavailable("heartbeats", "SCAN/MGET", e));
    }
    findings.extend(queue_findings(c, prefix, client_list, beats).await);
    Report { endpoint, findings }
}

/// What the doctor reads from the server in one go, each part with why it could not be read.
struct Snapshot {
    info: Result<Info, String>,
    config: Result<HashMap<String, String>, String>,
    clients: Result<Vec<Client>, String>,
    /// `laddr` of the doctor's own connection (`CLIENT INFO`): the address the server saw.
    reached: Option<String>,
    beats: Result<Vec<HeartbeatRecord>, String>,
    slowlog: Result<SlowLog, String>,
    /// `None` when the latency monitor is known to be off, so `LATENCY LATEST` is not asked.
    latency_events: Option<Result<Vec<LatencyEvent>, String>>,
}

impl Snapshot {
    async fn read(c: &Connections, prefix: &str) -> Snapshot {
        let info = c.command().query::<String>(&redis::cmd("INFO")).await.map(|t| Info::parse(&t)).map_err(describe);
        let config = read_config(c).await;
        let clients = clients::client_list(c).await.map_err(|e| trim_error(&e.to_string()));
        let reached = c
            .command()
            .query::<String>(redis::cmd("CLIENT").arg("INFO"))
            .await
            .ok()
            .and_then(|line| client_field(&line, "laddr"));
        let beats = queue_core::live_heartbeats(c, prefix).await.map_err(describe);
        let slowlog = read_slowlog(c).await;
        let monitor_off =
            config.as_ref().ok().and_then(|cfg| cfg.get("latency-monitor-threshold")).map(String::as_str) == Some("0");
        let latency_events = if monitor_off { None } else { Some(read_latency_latest(c).await) };
        Snapshot { info, config, clients, reached, beats, slowlog, latency_events }
    }
}

fn describe(e: queue_core::Error) -> String {
    trim_error(&e.to_string())
}

fn trim_error(text: &str) -> String {
    text.trim().to_owned()
}

/// Runs `cmd` for a raw value; a server error inside the value counts as a failure.
async fn query_value(c: &Connections, cmd: &redis::Cmd) -> Result<Value, String> {
    match c.command().query::<Value>(cmd).await {
        Ok(Value::ServerError(e)) => Err(trim_error(&e.to_string())),
        Ok(value) => Ok(value),
        Err(e) => Err(describe(e)),
    }
}

/// [`CONFIG_KEYS`], one `CONFIG GET` each (Redis 6.2 takes one parameter per call).
async fn read_config(c: &Connections) -> Result<HashMap<String, String>, String> {
    let mut config = HashMap::new();
    for key in CONFIG_KEYS {
        let pairs: HashMap<String, String> =
            c.command().query(redis::cmd("CONFIG").arg("GET").arg(*key)).await.map_err(describe)?;
        config.extend(pairs);
    }
    Ok(config)
}

/// `key=value` from one `CLIENT INFO` / `CLIENT LIST` line.
fn client_field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// INFO

/// `INFO` as `field → value`, sections flattened (field names are unique across sections).
#[derive(Debug, Default)]
struct Info(HashMap<String, String>);

impl Info {
    fn parse(text: &str) -> Info {
        Info(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.trim().split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.str(key)?.parse().ok()
    }

    fn f64(&self, key: &str) -> Option<f64> {
        self.str(key)?.parse().ok()
    }

    fn flag(&self, key: &str) -> bool {
        self.u64(key).is_some_and(|v| v > 0)
    }
}

/// What a check reads, or why it could not be read.
type Source<'a, T> = Result<&'a T, &'a str>;

/// `1 job`, `2 jobs`.
fn plural(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The stall that is critical: [`LATENCY_CRITICAL`], or the command timeout when lower.
fn critical_stall(command_timeout: Duration) -> Duration {
    LATENCY_CRITICAL.min(command_timeout)
}

/// Judges one stall (a PING, a fork) by [`LATENCY_MAX_WARN`] and [`critical_stall`].
fn stall_severity(stall: Duration, command_timeout: Duration) -> Severity {
    if stall >= critical_stall(command_timeout) {
        Severity::Critical
    } else if stall >= LATENCY_MAX_WARN {
        Severity::Warn
    } else {
        Severity::Ok
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoint, version, CLIENT, slow log

fn endpoint_finding(endpoint: &str, tls: bool, reached: Option<&str>, info: Source<Info>) -> Finding {
    let tls_text = if tls { "TLS on" } else { "TLS off" };
    let mut measured = format!("{endpoint} ({tls_text}");
    if let Some(addr) = reached {
        let _ = write!(measured, ", server address {addr}");
    }
    measured.push(')');
    let role = info.ok().and_then(|i| i.str("role"));
    if let Some(role) = role {
        let _ = write!(measured, ", role {role}");
    }
    if role == Some("slave") {
        return Finding::new(
            "endpoint",
            Severity::Critical,
            measured,
            "this is a replica: every write fails with READONLY; point REDIS_URL at the primary",
        );
    }
    let advice = if tls { "" } else { "plain TCP: keep Redis on loopback or a private network, else use rediss://" };
    Finding::new("endpoint", Severity::Ok, measured, advice)
}

/// `"7.0.15"` → `(7, 0)`.
fn parse_version(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn version_finding(info: Source<Info>) -> Finding {
    let info = match info {
        Ok(info) => info,
        Err(e) => return Finding::unavailable("redis-version", "INFO", e),
    };
    let text = info.str("redis_version").unwrap_or("unknown");
    let mode = info.str("redis_mode").unwrap_or("unknown mode");
    let measured = format!("Redis {text} ({mode}); the scripts need >= {}.{}", MIN_VERSION.0, MIN_VERSION.1);
    match parse_version(text) {
        None => Finding::new("redis-version", Severity::Warn, measured, "could not read redis_version from INFO"),
        Some(v) if v < MIN_VERSION => Finding::new(
            "redis-version",
            Severity::Critical,
            measured,
            "upgrade Redis to 6.2 or newer: BLMOVE, LPOS and RESP3 are missing, so workers and scripts fail",
        ),
        Some(_) => Finding::ok("redis-version", measured),
    }
}

fn client_commands_finding(clients: &Result<Vec<Client>, String>) -> Finding {
    match clients {
        Ok(_) => Finding::ok("client-commands", "CLIENT LIST allowed: connections can be named and attributed"),
        Err(e) => Finding::new(
            "client-commands",
            Severity::Warn,
            format!(
                "CLIENT LIST refused ({e}): connections by role, budgets, unnamed clients and subscriber buffers not checked"
            ),
            "managed Redis may refuse CLIENT; connection names are best effort, so budgets cannot be checked here",
        ),
    }
}

/// The slow log's length and its newest entries.
#[derive(Debug, Default)]
struct SlowLog {
    len: u64,
    recent: Vec<SlowEntry>,
}

#[derive(Debug)]
struct SlowEntry {
    at_s: u64,
    duration: Duration,
    command: String,
}

async fn read_slowlog(c: &Connections) -> Result<SlowLog, String> {
    let len: u64 = c.command().query(redis::cmd("SLOWLOG").arg("LEN")).await.map_err(describe)?;
    if len == 0 {
        return Ok(SlowLog::default());
    }
    let value = query_value(c, redis::cmd("SLOWLOG").arg("GET").arg(LISTED)).await?;
    Ok(SlowLog { len, recent: items(&value).iter().filter_map(slow_entry).collect() })
}

/// `[id, unix time, duration µs, [args...], addr, name]`.
fn slow_entry(value: &Value) -> Option<SlowEntry> {
    let fields = items(value);
    let args = items(fields.get(3)?);
    Some(SlowEntry {
        at_s: as_u64(fields.get(1)?)?,
        duration: Duration::from_micros(as_u64(fields.get(2)?)?),
        command: args.iter().take(2).filter_map(as_string).collect::<Vec<_>>().join(" "),
    })
}

fn slowlog_finding(slowlog: &Result<SlowLog, String>) -> Finding {
    let log = match slowlog {
        Ok(log) => log,
        Err(e) => return Finding::unavailable("slowlog", "SLOWLOG", e),
    };
    if log.len == 0 {
        return Finding::ok("slowlog", "empty");
    }
    let now_s = queue_core::now_ms() / 1000;
    let recent = log
        .recent
        .iter()
        .map(|e| format!("{} {} ({} s ago)", e.command, ms(e.duration), now_s.saturating_sub(e.at_s)))
        .collect::<Vec<_>>()
        .join("; ");
    Finding::new(
        "slowlog",
        Severity::Warn,
        format!("{} {}; newest: {recent}", log.len, if log.len == 1 { "entry" } else { "entries" }),
        "SLOWLOG GET 20 shows them: avoid KEYS and huge ranges, check scripts; SLOWLOG RESET once understood",
    )
}

// Small readers of raw RESP values (RESP2 or RESP3).

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    u64::from_redis_value_ref(value).ok()
}

fn as_string(value: &Value) -> Option<String> {
    String::from_redis_value_ref(value).ok()
}

// ---------------------------------------------------------------------------------------------
// Latency

/// PING round trips over the sampling window.
#[derive(Debug, Default)]
struct LatencySample {
    /// Round trips, sorted ascending. A PING that timed out counts with its elapsed time.
    rtts: Vec<Duration>,
    window: Duration,
    timeouts: usize,
    /// PINGs that failed otherwise (connection errors), and the last error.
    failures: usize,
    last_error: Option<String>,
}

/// PINGs on the command connection every [`PING_INTERVAL`] for `window`, like `redis-cli --latency`.
async fn sample_latency(c: &Connections, window: Duration, p: &Printer) -> LatencySample {
    let start = Instant::now();
    let deadline = start + window;
    let mut sample = LatencySample { window, ..Default::default() };
    let total = window.as_millis() as u64 / 100;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match c.command().query::<String>(&redis::cmd("PING")).await {
            Ok(_) => sample.rtts.push(sent.elapsed()),
            Err(e) if e.is_timeout() => {
                sample.rtts.push(sent.elapsed());
                sample.timeouts += 1;
            }
            Err(e) => {
                sample.failures += 1;
                sample.last_error = Some(describe(e));
            }
        }
        p.progress("sampling latency", (start.elapsed().as_millis() as u64 / 100).min(total), total);
        tokio::time::sleep(PING_INTERVAL).await;
    }
    if total > 0 {
        p.progress("sampling latency", total, total);
    }
    sample.rtts.sort();
    sample
}

/// The `p`-th percentile (0..=1) of sorted durations, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn latency_finding(s: &LatencySample, command_timeout: Duration) -> Finding {
    if s.rtts.is_empty() && s.failures == 0 {
        return Finding::new("latency", Severity::Warn, "not sampled", "run with --sample-seconds 3 or more");
    }
    let (min, max) = (s.rtts.first().copied().unwrap_or_default(), s.rtts.last().copied().unwrap_or_default());
    let avg = if s.rtts.is_empty() { Duration::ZERO } else { s.rtts.iter().sum::<Duration>() / s.rtts.len() as u32 };
    let p99 = percentile(&s.rtts, 0.99);
    let mut measured = format!(
        "min {}, avg {}, p99 {}, max {} over {} PINGs in {} s",
        ms(min),
        ms(avg),
        ms(p99),
        ms(max),
        s.rtts.len(),
        s.window.as_secs()
    );
    if s.timeouts > 0 {
        let _ = write!(measured, "; {} timed out (command timeout {})", s.timeouts, ms(command_timeout));
    }
    if let Some(e) = &s.last_error {
        let _ = write!(measured, "; {} failed: {e}", s.failures);
    }
    let mut severity = stall_severity(max, command_timeout);
    if severity == Severity::Ok && p99 >= LATENCY_P99_WARN {
        severity = Severity::Warn;
    }
    if s.failures > 0 || s.timeouts > 0 {
        severity = Severity::Critical;
    }
    let advice = match severity {
        Severity::Ok => String::new(),
        _ => format!(
            "Redis stalls or is starved: check CPU steal and neighbours (ffmpeg), forks (rdb-save, fork), the slow log, \
             LATENCY DOCTOR; thresholds: p99 {}, max {} warn, {} critical",
            ms(LATENCY_P99_WARN),
            ms(LATENCY_MAX_WARN),
            ms(critical_stall(command_timeout))
        ),
    };
    Finding::new("latency", severity, measured, advice)
}

/// One `LATENCY LATEST` row.
#[derive(Debug)]
struct LatencyEvent {
    event: String,
    at_s: u64,
    latest_ms: u64,
    max_ms: u64,
}

async fn read_latency_latest(c: &Connections) -> Result<Vec<LatencyEvent>, String> {
    let value = query_value(c, redis::cmd("LATENCY").arg("LATEST")).await?;
    Ok(items(&value)
        .iter()
        .filter_map(|row| {
            let f = items(row);
            Some(LatencyEvent {
                event: as_string(f.first()?)?,
                at_s: as_u64(f.get(1)?)?,
                latest_ms: as_u64(f.get(2)?)?,
                max_ms: as_u64(f.get(3)?)?,
            })
        })
        .collect())
}

/// `LATENCY LATEST` is history since the last `LATENCY RESET`, so it warns at most.
fn latency_monitor_finding(
    config: Source<HashMap<String, String>>,
    events: Option<&Result<Vec<LatencyEvent>, String>>,
) -> Finding {
    let threshold = config.ok().and_then(|c| c.get("latency-monitor-threshold")).map(String::as_str);
    let events = match events {
        None => {
            return Finding::new(
                "latency-monitor",
                Severity::Ok,
                "monitor off (latency-monitor-threshold 0)",
                "CONFIG SET latency-monitor-threshold 100 records stalls for LATENCY LATEST and LATENCY DOCTOR",
            );
        }
        Some(Err(e)) => return Finding::unavailable("latency-monitor", "LATENCY LATEST", e),
        Some(Ok(events)) => events,
    };
    let threshold_text = match (threshold, config) {
        (Some(t), _) => format!("threshold {t} ms"),
        (None, Err(_)) => "threshold unknown: CONFIG GET refused".to_owned(),
        (None, Ok(_)) => "threshold unknown".to_owned(),
    };
    if events.is_empty() {
        return Finding::ok("latency-monitor", format!("no events recorded ({threshold_text})"));
    }
    let now_s = queue_core::now_ms() / 1000;
    let listed = events
        .iter()
        .map(|e| {
            format!(
                "{}: latest {} ms, max {} ms, {} s ago",
                e.event,
                e.latest_ms,
                e.max_ms,
                now_s.saturating_sub(e.at_s)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let worst = events.iter().map(|e| e.max_ms).max().unwrap_or(0);
    let severity = if Duration::from_millis(worst) >= LATENCY_MAX_WARN { Severity::Warn } else { Severity::Ok };
    let advice = if severity == Severity::Ok {
        ""
    } else {
        "LATENCY DOCTOR explains the events (fork: disable RDB saves, check huge pages); LATENCY RESET once fixed"
    };
    Finding::new("latency-monitor", severity, format!("{listed} ({threshold_text})"), advice)
}

// ---------------------------------------------------------------------------------------------
// Persistence

fn persistence_findings(
    info: Source<Info>,
    config: Source<HashMap<String, String>>,
    command_timeout: Duration,
) -> Vec<Finding> {
    let mut out = vec![rdb_save_finding(config)];
    match info {
        Ok(info) => {
            out.push(fork_finding(info, command_timeout));
            let aof = info.flag("aof_enabled");
            out.push(aof_finding(aof));
            if aof {
                out.push(appendfsync_finding(config));
            }
            out.push(rewrite_finding(info));
            out.push(write_status_finding(info, config.ok()));
        }
        Err(e) => {
            for check in ["fork", "aof", "rewrite", "write-status"] {
                out.push(Finding::unavailable(check, "INFO", e));
            }
        }
    }
    out
}

/// Save points configured → warn: every snapshot forks and stalls Redis (the production lesson:
/// AOF only, `save ""`).
fn rdb_save_finding(config: Source<HashMap<String, String>>) -> Finding {
    let save = match config {
        Ok(c) => c.get("save").map(|s| s.trim().to_owned()).unwrap_or_default(),
        Err(e) => return Finding::unavailable("rdb-save", "CONFIG GET", e),
    };
    if save.is_empty() {
        return Finding::ok("rdb-save", "no RDB save points (save \"\")");
    }
    Finding::new(
        "rdb-save",
        Severity::Warn,
        format!("RDB save points \"{save}\": every snapshot fork()s and stalls Redis"),
        "CONFIG SET save \"\" (and save \"\" in redis.conf) and rely on AOF; a fork costs ~10-25 ms per GB, \
         hundreds of ms on some VMs",
    )
}

fn fork_finding(info: &Info, command_timeout: Duration) -> Finding {
    let usec = info.u64("latest_fork_usec").unwrap_or(0);
    if usec == 0 {
        return Finding::ok("fork", "no fork since start");
    }
    let stall = Duration::from_micros(usec);
    let severity = stall_severity(stall, command_timeout);
    let advice = match severity {
        Severity::Ok => "",
        _ => {
            "every RDB save and AOF rewrite stalls Redis this long: drop save points, keep the dataset small, \
              disable transparent huge pages, avoid hypervisors with slow fork"
        }
    };
    Finding::new("fork", severity, format!("latest fork took {}", ms(stall)), advice)
}

/// AOF off → warn: jobs acknowledged since the last snapshot are lost on a crash.
fn aof_finding(aof: bool) -> Finding {
    if aof {
        Finding::ok("aof", "AOF on")
    } else {
        Finding::new(
            "aof",
            Severity::Warn,
            "AOF off: acknowledged jobs can be lost on a crash",
            "CONFIG SET appendonly yes (and appendonly yes in redis.conf)",
        )
    }
}

/// `always` → ok; `everysec` → ok with a note (a crash loses ~1-2 s); `no` → warn.
fn appendfsync_finding(config: Source<HashMap<String, String>>) -> Finding {
    let policy = match config {
        Ok(c) => c.get("appendfsync").cloned().unwrap_or_default(),
        Err(e) => return Finding::unavailable("appendfsync", "CONFIG GET", e),
    };
    match policy.as_str() {
        "always" => Finding::ok("appendfsync", "always: every write is on disk before its reply"),
        "everysec" => Finding::new(
            "appendfsync",
            Severity::Ok,
            "everysec: a crash can lose about the last 1-2 s of acknowledged writes",
            "keep what was acknowledged outside Redis too (a Postgres row), or use appendfsync always",
        ),
        other => Finding::new(
            "appendfsync",
            Severity::Warn,
            format!("{other}: the OS flushes when it likes, a crash can lose ~30 s of writes"),
            "CONFIG SET appendfsync everysec (or always)",
        ),
    }
}

/// A fork-based rewrite or save in progress is normal operation: ok, with a note.
fn rewrite_finding(info: &Info) -> Finding {
    let running: Vec<&str> = [
        ("aof_rewrite_in_progress", "AOF rewrite"),
        ("aof_rewrite_scheduled", "AOF rewrite scheduled"),
        ("rdb_bgsave_in_progress", "RDB save"),
    ]
    .into_iter()
    .filter(|(field, _)| info.flag(field))
    .map(|(_, what)| what)
    .collect();
    if running.is_empty() {
        return Finding::ok("rewrite", "no rewrite or save in progress");
    }
    Finding::new(
        "rewrite",
        Severity::Ok,
        format!("in progress: {}", running.join(", ")),
        "it forked: latency measured now may include the fork; re-run after it ends if latency looked bad",
    )
}

/// Writes refused (`MISCONF`: a failed AOF write, or a failed snapshot with save points and
/// `stop-writes-on-bgsave-error yes`) → critical; other failed rewrites or snapshots → warn.
fn write_status_finding(info: &Info, config: Option<&HashMap<String, String>>) -> Finding {
    let aof_write = info.str("aof_last_write_status").unwrap_or("ok");
    let rewrite = info.str("aof_last_bgrewrite_status").unwrap_or("ok");
    let bgsave = info.str("rdb_last_bgsave_status").unwrap_or("ok");
    let measured = format!("last AOF write {aof_write}, last AOF rewrite {rewrite}, last RDB save {bgsave}");
    let save_points = config.and_then(|c| c.get("save")).is_some_and(|s| !s.trim().is_empty());
    let stops_writes = config.and_then(|c| c.get("stop-writes-on-bgsave-error")).is_some_and(|v| v == "yes");
    if (info.flag("aof_enabled") && aof_write != "ok") || (bgsave != "ok" && save_points && stops_writes) {
        return Finding::new(
            "write-status",
            Severity::Critical,
            measured,
            "Redis refuses writes (MISCONF): check disk space and permissions of its dir, then the Redis log",
        );
    }
    if rewrite != "ok" || bgsave != "ok" {
        return Finding::new(
            "write-status",
            Severity::Warn,
            measured,
            "a rewrite or snapshot failed: check disk space and the Redis log; the AOF keeps growing meanwhile",
        );
    }
    Finding::ok("write-status", measured)
}

// ---------------------------------------------------------------------------------------------
// Memory

fn memory_findings(info: Source<Info>) -> Vec<Finding> {
    match info {
        Ok(info) => vec![policy_finding(info), memory_use_finding(info), fragmentation_finding(info)],
        Err(e) => ["maxmemory-policy", "memory-use", "fragmentation"]
            .into_iter()
            .map(|check| Finding::unavailable(check, "INFO", e))
            .collect(),
    }
}

/// Anything but `noeviction` is critical for a queue: locks and jobs can be evicted.
fn policy_finding(info: &Info) -> Finding {
    match info.str("maxmemory_policy") {
        Some("noeviction") => Finding::ok("maxmemory-policy", "noeviction"),
        Some(policy) => Finding::new(
            "maxmemory-policy",
            Severity::Critical,
            format!("{policy}: Redis may evict locks and jobs when memory is full"),
            "CONFIG SET maxmemory-policy noeviction (and in redis.conf); size maxmemory for the queue",
        ),
        None => Finding::new("maxmemory-policy", Severity::Warn, "not in INFO", "check maxmemory-policy by hand"),
    }
}

/// `maxmemory 0` (no limit) is ok, with a note; otherwise use against the limit.
fn memory_use_finding(info: &Info) -> Finding {
    let used = info.u64("used_memory").unwrap_or(0);
    let limit = info.u64("maxmemory").unwrap_or(0);
    if limit == 0 {
        return Finding::new(
            "memory-use",
            Severity::Ok,
            format!("{} used, no maxmemory limit", bytes(used)),
            "without a limit Redis grows until the host or container kills it; set maxmemory below the \
             container's limit so writes fail cleanly instead",
        );
    }
    let share = used as f64 / limit as f64;
    let measured = format!("{} used of maxmemory {} ({:.0}%)", bytes(used), bytes(limit), share * 100.0);
    let severity = if share >= MEMORY_CRITICAL {
        Severity::Critical
    } else if share >= MEMORY_WARN {
        Severity::Warn
    } else {
        Severity::Ok
    };
    let advice = match severity {
        Severity::Ok => "",
        _ => {
            "with noeviction, writes fail at the limit: clean completed and failed jobs (removeOnComplete), \
              or raise maxmemory"
        }
    };
    Finding::new("memory-use", severity, measured, advice)
}

fn fragmentation_finding(info: &Info) -> Finding {
    let used = info.u64("used_memory").unwrap_or(0);
    let rss = info.u64("used_memory_rss").unwrap_or(0);
    let ratio = info.f64("mem_fragmentation_ratio").unwrap_or(1.0);
    let measured = format!("ratio {ratio:.2} (RSS {}, used {})", bytes(rss), bytes(used));
    if ratio >= FRAGMENTATION_WARN && rss.saturating_sub(used) >= FRAGMENTATION_MIN_BYTES {
        return Finding::new(
            "fragmentation",
            Severity::Warn,
            measured,
            "CONFIG SET activedefrag yes, or restart Redis (AOF reloads everything) at a quiet time",
        );
    }
    if ratio < SWAP_RATIO && used >= FRAGMENTATION_MIN_BYTES {
        return Finding::new(
            "fragmentation",
            Severity::Warn,
            measured,
            "RSS is below used memory: part of Redis is probably swapped out; give it memory or disable swap",
        );
    }
    Finding::ok("fragmentation", measured)
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Total against `maxclients`; blocked clients; the sum of declared budgets against `maxclients`.
fn clients_finding(info: Source<Info>, config: Source<HashMap<String, String>>, beats: &[HeartbeatRecord]) -> Finding {
    let info = match info {
        Ok(info) => info,
        Err(e) => return Finding::unavailable("clients", "INFO", e),
    };
    let connected = info.u64("connected_clients").unwrap_or(0);
    let blocked = info.u64("blocked_clients").unwrap_or(0);
    let max = info
        .u64("maxclients")
        .or_else(|| config.ok().and_then(|c| c.get("maxclients")).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let declared: usize = beats.iter().map(|b| b.budget).sum();
    let mut measured = format!("{connected} connected of maxclients {max}, {blocked} blocked");
    if !beats.is_empty() {
        let _ = write!(measured, "; heartbeats declare budgets summing to {declared}");
    }
    let share = if max == 0 { 0.0 } else { connected as f64 / max as f64 };
    if share >= CLIENTS_CRITICAL {
        return Finding::new(
            "clients",
            Severity::Critical,
            measured,
            "new connections are about to be refused: find who opens them (queuectl connections), raise maxclients",
        );
    }
    if share >= CLIENTS_WARN || (max > 0 && declared as u64 > max) {
        return Finding::new(
            "clients",
            Severity::Warn,
            measured,
            "the sum of every process's budget must stay under maxclients: lower budgets or raise maxclients",
        );
    }
    Finding::ok("clients", measured)
}

/// `blocking 1, command 1`, or `none open`.
fn roles_text(u: &ServiceUsage) -> String {
    if u.by_role.is_empty() {
        return "none open".to_owned();
    }
    u.by_role.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
}

/// Connections grouped by service and role, with the budgets heartbeats declare.
fn connections_finding(list: &[Client], beats: &[HeartbeatRecord]) -> Finding {
    let mut parts: Vec<String> = clients::usage(list, beats)
        .iter()
        .map(|u| {
            let roles = roles_text(u);
            match u.declared_budget {
                Some(budget) => {
                    format!("{}: {roles} (budget {budget}, {})", u.service, plural(u.instances as u64, "instance"))
                }
                None => format!("{}: {roles} (no heartbeat)", u.service),
            }
        })
        .collect();
    let other = list.iter().filter(|c| c.service.is_none() && !c.name.is_empty()).count();
    if other > 0 {
        parts.push(format!("other named: {other}"));
    }
    if parts.is_empty() {
        parts.push("no named connections".to_owned());
    }
    Finding::ok("connections", format!("{}; {}", plural(list.len() as u64, "client"), parts.join("; ")))
}

/// Any unnamed client → warn (it fits no service or budget). Replication links are not counted.
fn unnamed_finding(list: &[Client]) -> Finding {
    let unnamed: Vec<&Client> =
        list.iter().filter(|c| c.name.is_empty() && !c.flags.contains('S') && !c.flags.contains('M')).collect();
    if unnamed.is_empty() {
        return Finding::ok("unnamed-clients", "none");
    }
    let listed = unnamed
        .iter()
        .take(LISTED)
        .map(|c| format!("{} (cmd={}, age {} s)", c.addr, c.cmd, c.age))
        .collect::<Vec<_>>()
        .join(", ");
    Finding::new(
        "unnamed-clients",
        Severity::Warn,
        format!("{} unnamed: {listed}", unnamed.len()),
        "name every connection (CLIENT SETNAME <service>:<role>:<n>) so it can be attributed; find these by addr",
    )
}

/// Per service with heartbeats: more connections than the budget it declares → critical.
fn budget_findings(list: &[Client], beats: &[HeartbeatRecord]) -> Vec<Finding> {
    clients::usage(list, beats)
        .into_iter()
        .filter_map(|u| {
            let budget = u.declared_budget?;
            let roles = roles_text(&u);
            let measured = format!(
                "{}: {} ({roles}) for a declared budget of {budget} ({})",
                u.service,
                plural(u.total as u64, "connection"),
                plural(u.instances as u64, "instance")
            );
            Some(if u.total > budget {
                Finding::new(
                    "budget",
                    Severity::Critical,
                    measured,
                    "more connections than declared: look for leftovers of dead or hung instances (CLIENT LIST, \
                     old age, long idle) and CLIENT KILL them; every process of the service must send heartbeats",
                )
            } else {
                Finding::ok("budget", measured)
            })
        })
        .collect()
}

/// A subscriber whose output buffer reaches [`SUBSCRIBER_OMEM_WARN`] does not keep up.
fn subscriber_buffers_finding(list: &[Client]) -> Finding {
    let subscribers: Vec<&Client> = list
        .iter()
        .filter(|c| c.flags.contains('P') || matches!(c.cmd.as_str(), "subscribe" | "psubscribe" | "ssubscribe"))
        .collect();
    let largest = subscribers.iter().map(|c| c.omem).max().unwrap_or(0);
    let measured = format!("{} subscribers, largest output buffer {}", subscribers.len(), bytes(largest));
    let slow: Vec<String> = subscribers
        .iter()
        .filter(|c| c.omem >= SUBSCRIBER_OMEM_WARN)
        .take(LISTED)
        .map(|c| format!("{} {}", if c.name.is_empty() { &c.addr } else { &c.name }, bytes(c.omem)))
        .collect();
    if slow.is_empty() {
        return Finding::ok("subscriber-buffers", measured);
    }
    Finding::new(
        "subscriber-buffers",
        Severity::Warn,
        format!("{measured}; slow: {}", slow.join(", ")),
        "a subscriber does not read its messages fast enough: Redis buffers them and disconnects it at \
         client-output-buffer-limit pubsub",
    )
}

// ---------------------------------------------------------------------------------------------
// Queues

/// Findings for every queue under `prefix`.
async fn queue_findings(
    c: &Connections,
    prefix: &str,
    list: Option<&[Client]>,
    beats: &[HeartbeatRecord],
) -> Vec<Finding> {
    let names = match discover_queues(c, prefix).await {
        Ok(names) => names,
        Err(e) => return vec![Finding::unavailable("queues", "SCAN", &describe(e))],
    };
    if names.is_empty() {
        return vec![Finding::ok("queues", format!("no Bull queue under prefix {prefix:?}"))];
    }
    let mut out = vec![Finding::ok("queues", format!("{} under prefix {prefix:?}", names.len()))];
    for name in names {
        let Ok(queue) = Queue::with_prefix(c, prefix, &name) else { continue };
        let workers = Workers::of(&queue, list, beats);
        out.extend(check_queue(c, &queue, &workers).await);
    }
    out
}

/// `s` with Redis glob specials escaped, for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The queue a key marks, for `<prefix>:<queue>:<marker>` with a [`QUEUE_MARKERS`] marker.
fn queue_of_key<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
    let (queue, marker) = rest.split_once(':')?;
    let is_queue = !queue.is_empty() && queue != queue_core::HEARTBEAT_NAMESPACE && QUEUE_MARKERS.contains(&marker);
    is_queue.then_some(queue)
}

/// Queue names under `prefix`: one `SCAN` pass (never `KEYS`).
async fn discover_queues(c: &Connections, prefix: &str) -> queue_core::Result<BTreeSet<String>> {
    let pattern = format!("{}:*", glob_escape(prefix));
    let mut names = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<Vec<u8>>) = c.command().query(&cmd).await?;
        for key in keys {
            if let Some(queue) = queue_of_key(prefix, &String::from_utf8_lossy(&key)) {
                names.insert(queue.to_owned());
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok(names);
        }
    }
}

/// Who works on one queue: heartbeats listing it, and connections named like Bull's workers.
#[derive(Debug, Default)]
struct Workers {
    /// `service/instance` of each live heartbeat that lists the queue.
    heartbeats: Vec<String>,
    /// Connections named `<prefix>:<base64(queue)>` (Node Bull) or with that label (ours, blocking).
    bull_connections: usize,
}

impl Workers {
    fn of(queue: &Queue, list: Option<&[Client]>, beats: &[HeartbeatRecord]) -> Workers {
        let heartbeats = beats
            .iter()
            .filter(|b| b.queues.iter().any(|q| q == queue.name()))
            .map(|b| format!("{}/{}", b.service, b.instance))
            .collect();
        let label = queue.keys().worker_name_prefix();
        let labelled = format!("{label}:");
        let bull_connections =
            list.unwrap_or_default().iter().filter(|c| c.name == label || c.name.starts_with(&labelled)).count();
        Workers { heartbeats, bull_connections }
    }

    fn any(&self) -> bool {
        !self.heartbeats.is_empty() || self.bull_connections > 0
    }

    fn describe(&self) -> String {
        if !self.any() {
            return "no live worker seen".to_owned();
        }
        let mut parts = Vec::new();
        if !self.heartbeats.is_empty() {
            parts.push(format!("{} with heartbeats ({})", self.heartbeats.len(), self.heartbeats.join(", ")));
        }
        if self.bull_connections > 0 {
            parts.push(format!("{} Bull worker connections", self.bull_connections));
        }
        format!("workers: {}", parts.join(", "))
    }

    /// Warn when a worker runs (it will repair), critical when none does.
    fn severity(&self) -> Severity {
        if self.any() { Severity::Warn } else { Severity::Critical }
    }
}

async fn check_queue(c: &Connections, q: &Queue, workers: &Workers) -> Vec<Finding> {
    let name = q.name();
    let mut out = Vec::new();
    match q.get_job_counts().await {
        Ok(counts) => out.push(queue_summary(name, &counts, workers)),
        Err(e) => out.push(Finding::unavailable("queue", "counts", &describe(e))),
    }
    match q.is_paused().await {
        Ok(true) => out.push(Finding::new(
            "queue-paused",
            Severity::Warn,
            format!("{name}: paused globally, no worker takes its jobs"),
            format!("queuectl resume {name} when it should run again"),
        )),
        Ok(false) => {}
        Err(e) => out.push(Finding::unavailable("queue-paused", "EXISTS", &describe(e))),
    }
    match stuck_jobs(c, q).await {
        Ok(ids) => out.extend(stuck_finding(name, &ids, workers)),
        Err(e) => out.push(Finding::unavailable("stuck-jobs", "LRANGE/EXISTS", &describe(e))),
    }
    match oldest_delayed_due(c, q).await {
        Ok(due) => out.extend(due.and_then(|due| overdue_finding(name, due, queue_core::now_ms(), workers))),
        Err(e) => out.push(Finding::unavailable("overdue-delayed", "ZRANGE", &describe(e))),
    }
    match recent_failures(c, q).await {
        Ok(n) => out.extend(failed_finding(name, n)),
        Err(e) => out.push(Finding::unavailable("failed-jobs", "ZCOUNT", &describe(e))),
    }
    out
}

/// Counts and workers; jobs waiting with no worker seen → warn.
fn queue_summary(name: &str, n: &JobCounts, workers: &Workers) -> Finding {
    let measured = format!(
        "{name}: waiting {}, active {}, delayed {}, completed {}, failed {}, paused {}; {}",
        n.waiting,
        n.active,
        n.delayed,
        n.completed,
        n.failed,
        n.paused,
        workers.describe()
    );
    if n.waiting > 0 && !workers.any() {
        return Finding::new(
            "queue",
            Severity::Warn,
            measured,
            "jobs wait and no worker was seen (no heartbeat, no Bull worker connection): start a worker",
        );
    }
    Finding::ok("queue", measured)
}

/// Ids among the oldest [`STUCK_SCAN_LIMIT`] active jobs whose lock key does not exist.
async fn active_without_lock(c: &Connections, q: &Queue) -> queue_core::Result<Vec<String>> {
    let keys = q.keys();
    let ids: Vec<String> =
        c.command().query(redis::cmd("LRANGE").arg(keys.active()).arg(-(STUCK_SCAN_LIMIT as i64)).arg(-1)).await?;
    if ids.is_empty() {
        return Ok(ids);
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.exists(keys.lock(id));
    }
    let locked: Vec<bool> = c.command().query_pipeline(&pipe).await?;
    Ok(ids.into_iter().zip(locked).filter(|(_, locked)| !locked).map(|(id, _)| id).collect())
}

/// Active jobs without a lock, confirmed [`STUCK_RECHECK`] later.
async fn stuck_jobs(c: &Connections, q: &Queue) -> queue_core::Result<Vec<String>> {
    let first = active_without_lock(c, q).await?;
    if first.is_empty() {
        return Ok(first);
    }
    tokio::time::sleep(STUCK_RECHECK).await;
    let second: BTreeSet<String> = active_without_lock(c, q).await?.into_iter().collect();
    Ok(first.into_iter().filter(|id| second.contains(id)).collect())
}

fn stuck_finding(name: &str, ids: &[String], workers: &Workers) -> Option<Finding> {
    if ids.is_empty() {
        return None;
    }
    let listed = ids.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    let advice = if workers.any() {
        "a worker runs: its stalled check moves them back to waiting after lockDuration + stalledInterval"
    } else {
        "no worker runs, so nothing recovers them: start a worker (its stalled check moves them back to waiting)"
    };
    Some(Finding::new(
        "stuck-jobs",
        workers.severity(),
        format!("{name}: {} without a lock ({listed}); {}", plural(ids.len() as u64, "active job"), workers.describe()),
        advice,
    ))
}

/// The due time (ms) of the job that is due first, if any.
async fn oldest_delayed_due(c: &Connections, q: &Queue) -> queue_core::Result<Option<u64>> {
    let first: Vec<(String, f64)> =
        c.command().query(redis::cmd("ZRANGE").arg(q.keys().delayed()).arg(0).arg(0).arg("WITHSCORES")).await?;
    Ok(first.first().map(|(_, score)| queue_core::due_from_score(*score)))
}

fn overdue_finding(name: &str, due_ms: u64, now_ms: u64, workers: &Workers) -> Option<Finding> {
    let late = Duration::from_millis(now_ms.saturating_sub(due_ms));
    if late <= DELAYED_OVERDUE {
        return None;
    }
    let advice = if workers.any() {
        "a worker runs but does not promote delayed jobs: check its logs (promoter errors) and clock"
    } else {
        "no worker runs, so nobody promotes delayed jobs: start a worker, or queuectl promote"
    };
    Some(Finding::new(
        "overdue-delayed",
        workers.severity(),
        format!("{name}: the first delayed job is {} s overdue; {}", late.as_secs(), workers.describe()),
        advice,
    ))
}

/// Jobs in `failed` whose score (finishedOn) is within the last [`FAILED_WINDOW`].
async fn recent_failures(c: &Connections, q: &Queue) -> queue_core::Result<u64> {
    let since = queue_core::now_ms().saturating_sub(FAILED_WINDOW.as_millis() as u64);
    c.command().query(redis::cmd("ZCOUNT").arg(q.keys().failed()).arg(since).arg("+inf")).await
}

fn failed_finding(name: &str, recent: u64) -> Option<Finding> {
    (recent > 0).then(|| {
        Finding::new(
            "failed-jobs",
            Severity::Warn,
            format!("{name}: {} failed for good in the last {} s", plural(recent, "job"), FAILED_WINDOW.as_secs()),
            format!("queuectl jobs {name} --state failed shows why; queuectl retry {name} --all once fixed"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str) -> Info {
        Info::parse(&text.replace(' ', "\r\n"))
    }

    fn config(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn sample(ms: &[u64]) -> LatencySample {
        LatencySample {
            rtts: ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            window: Duration::from_secs(1),
            ..Default::default()
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn latency_thresholds() {
        assert_eq!(latency_finding(&sample(&[0, 0, 1, 1]), TIMEOUT).severity, Severity::Ok);
        let spike = latency_finding(&sample(&[0, 0, 1, 500]), TIMEOUT);
        assert_eq!(spike.severity, Severity::Warn);
        assert!(spike.measured.contains("max 500.00 ms"), "{}", spike.measured);
        assert_eq!(latency_finding(&sample(&[0, 1000]), TIMEOUT).severity, Severity::Critical);
        // A command timeout below a second lowers the critical stall.
        assert_eq!(latency_finding(&sample(&[0, 300]), Duration::from_millis(200)).severity, Severity::Critical);
        let slow: Vec<u64> = std::iter::repeat_n(12, 100).collect();
        assert_eq!(latency_finding(&sample(&slow), TIMEOUT).severity, Severity::Warn);
        assert_eq!(latency_finding(&LatencySample::default(), TIMEOUT).severity, Severity::Warn);
        let failed = LatencySample { failures: 1, last_error: Some("broken pipe".into()), ..sample(&[0]) };
        assert_eq!(latency_finding(&failed, TIMEOUT).severity, Severity::Critical);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted[..10], 0.99), Duration::from_millis(10));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }

    #[test]
    fn persistence_decisions() {
        let clean = info("aof_enabled:1 latest_fork_usec:0 aof_last_write_status:ok rdb_last_bgsave_status:ok");
        let cfg = config(&[("save", ""), ("appendfsync", "always"), ("stop-writes-on-bgsave-error", "yes")]);
        let all = persistence_findings(Ok(&clean), Ok(&cfg), TIMEOUT);
        assert!(all.iter().all(|f| f.severity == Severity::Ok), "{all:?}");
        let save = config(&[("save", "900 1")]);
        assert_eq!(rdb_save_finding(Ok(&save)).severity, Severity::Warn);
        assert_eq!(rdb_save_finding(Err("ERR unknown command")).severity, Severity::Warn);
        assert_eq!(aof_finding(false).severity, Severity::Warn);
        let everysec = appendfsync_finding(Ok(&config(&[("appendfsync", "everysec")])));
        assert_eq!(everysec.severity, Severity::Ok);
        assert!(!everysec.advice.is_empty());
        assert_eq!(appendfsync_finding(Ok(&config(&[("appendfsync", "no")]))).severity, Severity::Warn);
        assert_eq!(fork_finding(&info("latest_fork_usec:120000"), TIMEOUT).severity, Severity::Warn);
        assert_eq!(fork_finding(&info("latest_fork_usec:1500000"), TIMEOUT).severity, Severity::Critical);
        let failed_aof = info("aof_enabled:1 aof_last_write_status:err");
        assert_eq!(write_status_finding(&failed_aof, None).severity, Severity::Critical);
        let failed_save = info("aof_enabled:1 rdb_last_bgsave_status:err");
        assert_eq!(write_status_finding(&failed_save, Some(&cfg)).severity, Severity::Warn);
        let stops = config(&[("save", "900 1"), ("stop-writes-on-bgsave-error", "yes")]);
        assert_eq!(write_status_finding(&failed_save, Some(&stops)).severity, Severity::Critical);
        assert_eq!(rewrite_finding(&info("aof_rewrite_in_progress:1")).severity, Severity::Ok);
    }

    #[test]
    fn memory_decisions() {
        let clean = info(
            "maxmemory_policy:noeviction maxmemory:0 used_memory:939592 used_memory_rss:6651904 mem_fragmentation_ratio:7.59",
        );
        assert!(memory_findings(Ok(&clean)).iter().all(|f| f.severity == Severity::Ok));
        assert_eq!(policy_finding(&info("maxmemory_policy:allkeys-lru")).severity, Severity::Critical);
        assert_eq!(memory_use_finding(&info("used_memory:85 maxmemory:100")).severity, Severity::Warn);
        assert_eq!(memory_use_finding(&info("used_memory:96 maxmemory:100")).severity, Severity::Critical);
        let fragmented = info("used_memory:100000000 used_memory_rss:300000000 mem_fragmentation_ratio:3.0");
        assert_eq!(fragmentation_finding(&fragmented).severity, Severity::Warn);
    }

    #[test]
    fn redis_versions() {
        assert_eq!(parse_version("7.0.15"), Some((7, 0)));
        assert_eq!(version_finding(Ok(&info("redis_version:6.2.14"))).severity, Severity::Ok);
        assert_eq!(version_finding(Ok(&info("redis_version:6.0.9"))).severity, Severity::Critical);
        assert_eq!(version_finding(Ok(&info("redis_version:x"))).severity, Severity::Warn);
    }

    #[test]
    fn queue_keys_are_recognised() {
        assert_eq!(queue_of_key("bull", "bull:files:id"), Some("files"));
        assert_eq!(queue_of_key("bull", "bull:files:meta-paused"), Some("files"));
        assert_eq!(queue_of_key("{bull}", "{bull}:q:delayed"), Some("q"));
        assert_eq!(queue_of_key("bull", "bull:files:17"), None);
        assert_eq!(queue_of_key("bull", "bull:files:17:lock"), None);
        assert_eq!(queue_of_key("bull", "bull:__hb__:svc:wait"), None);
        assert_eq!(queue_of_key("bull", "bull:x:files:wait"), None);
        assert_eq!(queue_of_key("bull", "bullx:files:wait"), None);
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn clients_by_role_and_budget() {
        let list = clients::parse(
            "id=1 addr=a:1 name=svc:command:0 age=1 flags=N omem=0 cmd=ping\n\
             id=2 addr=a:2 name=svc:blocking:0 age=1 flags=b omem=0 cmd=blmove\n\
             id=3 addr=a:3 name= age=9 flags=N omem=0 cmd=get\n\
             id=4 addr=a:4 name=svc:subscriber:0 age=1 flags=P omem=2097152 cmd=psubscribe\n",
        );
        let beat: HeartbeatRecord = serde_json::from_value(json!({
            "service": "svc", "instance": "h-1", "queues": ["files"], "budget": 2,
            "planned": [1, 0, 1], "open": 2, "at_ms": 0, "interval_ms": 5000
        }))
        .unwrap();
        let budgets = budget_findings(&list, std::slice::from_ref(&beat));
        assert_eq!(budgets.len(), 1);
        assert_eq!(budgets[0].severity, Severity::Critical, "{budgets:?}");
        assert_eq!(unnamed_finding(&list).severity, Severity::Warn);
        assert_eq!(subscriber_buffers_finding(&list).severity, Severity::Warn);
        let ok = clients_finding(Ok(&info("connected_clients:4 maxclients:10000")), Err("refused"), &[beat]);
        assert_eq!(ok.severity, Severity::Ok);
        let full = clients_finding(Ok(&info("connected_clients:9600 maxclients:10000")), Err("refused"), &[]);
        assert_eq!(full.severity, Severity::Critical);
    }

    #[test]
    fn queue_decisions_depend_on_live_workers() {
        let none = Workers::default();
        let some = Workers { heartbeats: vec!["svc/h-1".into()], bull_connections: 0 };
        let ids = vec!["7".to_owned()];
        assert_eq!(stuck_finding("q", &ids, &none).map(|f| f.severity), Some(Severity::Critical));
        assert_eq!(stuck_finding("q", &ids, &some).map(|f| f.severity), Some(Severity::Warn));
        assert!(stuck_finding("q", &[], &none).is_none());
        let now = 1_800_000_000_000;
        assert_eq!(overdue_finding("q", now - 60_000, now, &none).map(|f| f.severity), Some(Severity::Critical));
        assert_eq!(overdue_finding("q", now - 60_000, now, &some).map(|f| f.severity), Some(Severity::Warn));
        assert!(overdue_finding("q", now - 2_000, now, &none).is_none());
        assert!(failed_finding("q", 0).is_none());
        let waiting = JobCounts { waiting: 3, ..Default::default() };
        assert_eq!(queue_summary("q", &waiting, &none).severity, Severity::Warn);
        assert_eq!(queue_summary("q", &waiting, &some).severity, Severity::Ok);
    }

    #[test]
    fn report_verdict_and_json_shape() {
        let report = Report {
            endpoint: "redis://h:1".into(),
            findings: vec![Finding::ok("a", "x"), Finding::new("b", Severity::Warn, "y", "z")],
        };
        assert_eq!(report.verdict(), Severity::Warn);
        let value = report.to_json();
        assert_eq!(value["verdict"], "warn");
        assert_eq!(value["findings"][1], json!({"check": "b", "severity": "warn", "measured": "y", "advice": "z"}));
    }
}
