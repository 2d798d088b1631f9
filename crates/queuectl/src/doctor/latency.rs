//! Latency: PING round trips sampled over a window, the latency monitor's history (`LATENCY
//! LATEST`) and the slow log. The stall thresholds here also judge the `fork` check.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use queue_core::Connections;
use queue_core::tooling::{Raw, Value};
use tokio::time::Instant;

use crate::output::Printer;

use super::snapshot::{Source, as_string, as_u64, describe, items, query_value};
use super::{Finding, LISTED, Severity, ms};

/// Pause between two latency PINGs, as `redis-cli --latency` does.
const PING_INTERVAL: Duration = Duration::from_millis(10);
/// A p99 PING round trip at or above this is a warning: on one host a healthy Redis answers in
/// well under a millisecond, so this means a starved CPU or a busy server.
pub(super) const LATENCY_P99_WARN: Duration = Duration::from_millis(10);
/// A single stall at or above this (a PING, a fork, a latency event) is a warning: it is a
/// visible pause for every client at once.
pub(super) const LATENCY_MAX_WARN: Duration = Duration::from_millis(50);
/// A stall at or above this, or at or above the command timeout if that is lower, is critical:
/// callers time out and workers may lose locks.
pub(super) const LATENCY_CRITICAL: Duration = Duration::from_secs(1);

/// The stall that is critical: [`LATENCY_CRITICAL`], or the command timeout when lower.
fn critical_stall(command_timeout: Duration) -> Duration {
    LATENCY_CRITICAL.min(command_timeout)
}

/// Judges one stall (a PING, a fork) by [`LATENCY_MAX_WARN`] and [`critical_stall`].
pub(super) fn stall_severity(stall: Duration, command_timeout: Duration) -> Severity {
    if stall >= critical_stall(command_timeout) {
        Severity::Critical
    } else if stall >= LATENCY_MAX_WARN {
        Severity::Warn
    } else {
        Severity::Ok
    }
}

/// PING round trips over the sampling window.
#[derive(Debug, Default)]
pub(super) struct LatencySample {
    /// Round trips, sorted ascending. A PING that timed out counts with its elapsed time.
    rtts: Vec<Duration>,
    window: Duration,
    timeouts: usize,
    /// PINGs that failed otherwise (connection errors), and the last error.
    failures: usize,
    last_error: Option<String>,
}

/// PINGs on the command connection every [`PING_INTERVAL`] for `window`, like `redis-cli --latency`.
pub(super) async fn sample_latency(c: &Connections, window: Duration, p: &Printer) -> LatencySample {
    let start = Instant::now();
    let deadline = start + window;
    let mut sample = LatencySample { window, ..Default::default() };
    let total = window.as_millis() as u64 / 100;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match Raw::new(c).query::<String>(&["PING"]).await {
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

pub(super) fn latency_finding(s: &LatencySample, command_timeout: Duration) -> Finding {
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
pub(super) struct LatencyEvent {
    event: String,
    at_s: u64,
    latest_ms: u64,
    max_ms: u64,
}

pub(super) async fn read_latency_latest(c: &Connections) -> Result<Vec<LatencyEvent>, String> {
    let value = query_value(c, &["LATENCY", "LATEST"]).await?;
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
pub(super) fn latency_monitor_finding(
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
    let now_s = queue_core::tooling::now_ms() / 1000;
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
// Slow log

/// How many slow-log entries the doctor reads: Redis keeps 128 by default
/// (`slowlog-max-len`).
const SLOWLOG_READ: usize = 128;

/// The slow log's length and the entries the doctor read, newest first.
#[derive(Debug, Default)]
pub(super) struct SlowLog {
    len: u64,
    entries: Vec<SlowEntry>,
}

#[derive(Debug)]
struct SlowEntry {
    at_s: u64,
    duration: Duration,
    command: String,
    /// The queue-core script this call ran, if it is one of ours.
    script: Option<&'static str>,
}

pub(super) async fn read_slowlog(c: &Connections) -> Result<SlowLog, String> {
    let len: u64 = Raw::new(c).query(&["SLOWLOG", "LEN"]).await.map_err(describe)?;
    if len == 0 {
        return Ok(SlowLog::default());
    }
    let value = query_value(c, &["SLOWLOG", "GET", &SLOWLOG_READ.to_string()]).await?;
    Ok(SlowLog { len, entries: items(&value).iter().filter_map(slow_entry).collect() })
}

/// `[id, unix time, duration µs, [args...], addr, name]`.
fn slow_entry(value: &Value) -> Option<SlowEntry> {
    let fields = items(value);
    let args: Vec<String> = items(fields.get(3)?).iter().filter_map(as_string).collect();
    let script = match (args.first(), args.get(1)) {
        (Some(command), Some(first)) => queue_core::tooling::script_of_call(command, first),
        _ => None,
    };
    let command = match script {
        Some(name) => format!("{} ({name})", args[0]),
        None => args.iter().take(2).cloned().collect::<Vec<_>>().join(" "),
    };
    Some(SlowEntry {
        at_s: as_u64(fields.get(1)?)?,
        duration: Duration::from_micros(as_u64(fields.get(2)?)?),
        command,
        script,
    })
}

pub(super) fn slowlog_finding(slowlog: &Result<SlowLog, String>) -> Finding {
    let log = match slowlog {
        Ok(log) => log,
        Err(e) => return Finding::unavailable("slowlog", "SLOWLOG", e),
    };
    if log.len == 0 {
        return Finding::ok("slowlog", "empty");
    }
    let now_s = queue_core::tooling::now_ms() / 1000;
    let recent = log
        .entries
        .iter()
        .take(LISTED)
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

/// What to do about a slow call of one of our scripts: the operation behind it and its slice.
fn script_advice(script: &str) -> String {
    use queue_core::{
        DEFAULT_ADD_SLICE, DEFAULT_CLEAN_SLICE, DEFAULT_KEEP_SLICE, DEFAULT_OBLITERATE_SLICE, DEFAULT_PROMOTE_SLICE,
        DEFAULT_RENEW_SLICE, DEFAULT_RETRY_SLICE, DEFAULT_STALLED_SLICE,
    };
    match script {
        "addJobs" => {
            format!("add_bulk: lower Slices::add (default {DEFAULT_ADD_SLICE} jobs per call) or send smaller job data")
        }
        "cleanJobs" => format!(
            "clean: lower Slices::clean or `queuectl clean --slice` (default {DEFAULT_CLEAN_SLICE} jobs looked at per call)"
        ),
        "obliterate" => format!(
            "obliterate: lower Slices::obliterate or `queuectl obliterate --slice` (default {DEFAULT_OBLITERATE_SLICE})"
        ),
        "retryJobs" => {
            format!("retry all: lower Slices::retry or `queuectl retry --all --slice` (default {DEFAULT_RETRY_SLICE})")
        }
        "promoteDelayed" => format!(
            "promote all or a worker's delayed promoter: lower Slices::promote (default {DEFAULT_PROMOTE_SLICE}); a \
             prioritized job costs a scan of the waiting list"
        ),
        "moveStalledJobsToWait" => {
            format!("the workers' stalled check: lower WorkerSettings slices.stalled (default {DEFAULT_STALLED_SLICE})")
        }
        "completeJob" | "failJob" => format!(
            "a finish: its keep policy deletes up to WorkerSettings slices.keep old jobs (default \
             {DEFAULT_KEEP_SLICE}); a prioritized retry costs a scan of the waiting list"
        ),
        "extendLocks" => {
            format!("lock renewal: lower WorkerSettings slices.renew (default {DEFAULT_RENEW_SLICE} locks per call)")
        }
        "removeJob" | "getState" => {
            "a one-job call that scans the lists (LREM, LPOS): long waiting lists cost it".to_owned()
        }
        _ => "a one-job call: check the server's CPU and latency".to_owned(),
    }
}

/// queue-core's own scripts in the slow log: named from their SHA (or an `EVAL`'s first line),
/// with the operation behind each and what to do. Every call of ours is sized to stay near a
/// millisecond, so one here is a slice set too large, an old queue-core, or a server that was
/// starved (then other commands are slow too: see `latency` and `latency-monitor`).
pub(super) fn slow_scripts_finding(slowlog: &Result<SlowLog, String>) -> Option<Finding> {
    let log = slowlog.as_ref().ok()?;
    // Script name -> (calls, slowest).
    let mut ours: Vec<(&'static str, usize, Duration)> = Vec::new();
    for entry in &log.entries {
        let Some(name) = entry.script else { continue };
        match ours.iter_mut().find(|(n, ..)| *n == name) {
            Some((_, calls, slowest)) => {
                *calls += 1;
                *slowest = (*slowest).max(entry.duration);
            }
            None => ours.push((name, 1, entry.duration)),
        }
    }
    if ours.is_empty() {
        return Some(Finding::ok("slow-scripts", "none of queue-core's scripts in the slow log"));
    }
    ours.sort_by_key(|(_, _, slowest)| std::cmp::Reverse(*slowest));
    let measured = ours
        .iter()
        .map(|(name, calls, slowest)| {
            format!("{name}: {} up to {}", super::plural(*calls as u64, "call"), ms(*slowest))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let advice =
        ours.iter().map(|(name, ..)| format!("{name}: {}", script_advice(name))).collect::<Vec<_>>().join("; ");
    Some(Finding::new(
        "slow-scripts",
        Severity::Warn,
        format!("queue-core's scripts in the slow log (of the {} entries read): {measured}", log.entries.len()),
        format!(
            "each call is sized for about 1 ms; one that recurs is a slice too large: {advice}. If other commands are \
             slow at the same time, the server was starved instead (see latency)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn entry(duration_ms: u64, args: &[&str]) -> Value {
        let args = args.iter().map(|a| Value::BulkString(a.as_bytes().to_vec())).collect();
        Value::Array(vec![
            Value::Int(1),
            Value::Int(1_700_000_000),
            Value::Int(duration_ms as i64 * 1000),
            Value::Array(args),
            Value::SimpleString("127.0.0.1:1".into()),
            Value::SimpleString(String::new()),
        ])
    }

    #[test]
    fn our_scripts_are_named_in_the_slow_log() {
        let clean = "-- queue-core:cleanJobs\n-- Include: walking a list... (2000 more bytes)";
        let entries = [
            entry(17, &["EVAL", clean, "1"]),
            entry(4, &["EVAL", clean, "1"]),
            entry(30, &["KEYS", "*"]),
            entry(9, &["EVALSHA", "0123456789012345678901234567890123456789", "0"]),
        ];
        let log = SlowLog { len: 4, entries: entries.iter().filter_map(slow_entry).collect() };
        assert_eq!(log.entries[0].command, "EVAL (cleanJobs)");
        let finding = slow_scripts_finding(&Ok(log)).unwrap();
        assert_eq!(finding.severity, Severity::Warn);
        assert!(finding.measured.contains("cleanJobs: 2 calls up to 17.00 ms"), "{}", finding.measured);
        assert!(!finding.measured.contains("KEYS") && !finding.measured.contains("0123"), "{}", finding.measured);
        assert!(finding.advice.contains("queuectl clean --slice"), "{}", finding.advice);

        let others = SlowLog { len: 1, entries: [entry(30, &["KEYS", "*"])].iter().filter_map(slow_entry).collect() };
        assert_eq!(slow_scripts_finding(&Ok(others)).unwrap().severity, Severity::Ok);
        assert!(slow_scripts_finding(&Err("refused".into())).is_none());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted[..10], 0.99), Duration::from_millis(10));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
