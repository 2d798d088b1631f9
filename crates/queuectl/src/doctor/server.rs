//! The server itself: the endpoint and its role, the Redis version, persistence (RDB save points,
//! fork time, AOF and its fsync policy, rewrites, write status) and memory (eviction policy, use
//! against `maxmemory`, fragmentation).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::latency::stall_severity;
use super::snapshot::{Info, Source};
use super::{Finding, Severity, bytes, ms};

/// Memory use (of `maxmemory`) that is a warning.
pub(super) const MEMORY_WARN: f64 = 0.80;
/// Memory use (of `maxmemory`) that is critical: with `noeviction`, writes fail at 100%.
pub(super) const MEMORY_CRITICAL: f64 = 0.95;
/// Fragmentation ratio (RSS / used) that is a warning, when it also wastes enough bytes.
pub(super) const FRAGMENTATION_WARN: f64 = 1.5;
/// Below this much waste (RSS - used), fragmentation is noise (a fresh server shows a ratio of 7).
pub(super) const FRAGMENTATION_MIN_BYTES: u64 = 64 << 20;
/// Below this ratio, with enough data, part of Redis is probably swapped out.
const SWAP_RATIO: f64 = 0.9;
/// Oldest Redis the scripts run on: `BLMOVE` and `LPOS` are 6.2 (RESP3 is 6.0).
const MIN_VERSION: (u64, u64) = (6, 2);

// ---------------------------------------------------------------------------------------------
// Endpoint and version

pub(super) fn endpoint_finding(endpoint: &str, tls: bool, reached: Option<&str>, info: Source<Info>) -> Finding {
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

pub(super) fn version_finding(info: Source<Info>) -> Finding {
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

// ---------------------------------------------------------------------------------------------
// Persistence

pub(super) fn persistence_findings(
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

pub(super) fn memory_findings(info: Source<Info>) -> Vec<Finding> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str) -> Info {
        Info::parse(&text.replace(' ', "\r\n"))
    }

    fn config(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

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
}
