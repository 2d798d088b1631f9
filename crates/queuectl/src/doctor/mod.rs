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
//! | `slow-scripts` | none of queue-core's scripts among the last 128 entries | any: named from its SHA (or an `EVAL`'s first line), with the operation and slice to lower | |
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
//! Queues are found by `QueueView::discover`: one `SCAN` pass over `<prefix>:*` (never `KEYS`)
//! keeping keys `<prefix>:<queue>:<marker>` for Bull's markers (`id`, `wait`, `active`, `delayed`,
//! `paused`, `meta-paused`, `completed`, `failed`) and skipping the heartbeat namespace. A live
//! worker of a queue is a heartbeat listing it, or a connection named like Bull's `getWorkers()`
//! expects (`<prefix>:<base64(queue)>`). "Failed-job growth" is the number of jobs in the failed
//! set whose score (finishedOn) is within the last [`FAILED_WINDOW`]. An active job counts as stuck
//! only when its lock is missing twice, [`STUCK_RECHECK`] apart, so the instant between a worker's
//! `BLMOVE` and its lock does not count.
//!
//! The checks live by group: [`server`] (endpoint, version, persistence, memory), [`latency`]
//! (PING sample, latency monitor, slow log), [`connections`] (`CLIENT`, clients, budgets,
//! subscriber buffers) and [`queues`] (discovery and per-queue checks). [`snapshot`] is the one
//! read of the server they judge; this module runs them, renders the report and gives the verdict.
//!
//! [`LATENCY_P99_WARN`]: latency::LATENCY_P99_WARN
//! [`LATENCY_MAX_WARN`]: latency::LATENCY_MAX_WARN
//! [`LATENCY_CRITICAL`]: latency::LATENCY_CRITICAL
//! [`MEMORY_WARN`]: server::MEMORY_WARN
//! [`MEMORY_CRITICAL`]: server::MEMORY_CRITICAL
//! [`FRAGMENTATION_WARN`]: server::FRAGMENTATION_WARN
//! [`FRAGMENTATION_MIN_BYTES`]: server::FRAGMENTATION_MIN_BYTES
//! [`CLIENTS_WARN`]: connections::CLIENTS_WARN
//! [`CLIENTS_CRITICAL`]: connections::CLIENTS_CRITICAL
//! [`SUBSCRIBER_OMEM_WARN`]: connections::SUBSCRIBER_OMEM_WARN
//! [`DELAYED_OVERDUE`]: queues::DELAYED_OVERDUE
//! [`FAILED_WINDOW`]: queues::FAILED_WINDOW
//! [`STUCK_RECHECK`]: queues::STUCK_RECHECK

mod connections;
mod latency;
mod queues;
mod server;
mod snapshot;

use std::process::ExitCode;
use std::time::Duration;

use queue_core::Connections;
use serde::Serialize;
use serde_json::json;

use crate::cli::{DoctorArgs, Global};
use crate::output::{Colour, Printer};

use self::connections::{
    budget_findings, client_commands_finding, clients_finding, connections_finding, subscriber_buffers_finding,
    unnamed_finding,
};
use self::latency::{latency_finding, latency_monitor_finding, sample_latency, slow_scripts_finding, slowlog_finding};
use self::queues::queue_findings;
use self::server::{endpoint_finding, memory_findings, persistence_findings, version_finding};
use self::snapshot::Snapshot;

/// How many unnamed clients, slow-log entries or stuck ids a finding lists.
const LISTED: usize = 5;

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
enum Severity {
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
struct Finding {
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
    p.table(&["check", "severity", "measured", "advice"], &rows, |_, col, cell| {
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
    if let Err(e) = c.ping().await {
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
    let s = Snapshot::read(c).await;
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
    findings.extend(slow_scripts_finding(&s.slowlog));
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

// ---------------------------------------------------------------------------------------------
// Measured values, as the report prints them

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

#[cfg(test)]
mod tests {
    use super::*;

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
