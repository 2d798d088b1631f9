//! Readiness: Redis `PING` and Postgres `SELECT 1`, each bounded by `HEALTH_CHECK_TIMEOUT_MS`,
//! run at most once per `HEALTH_READY_CACHE_MS` whatever the number of probes (one check runs;
//! probes arriving meanwhile wait for it and share its answer). A failing check says what failed
//! and since when.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use platform::records::Database;
use queue_core::Connections;
use serde::Serialize;
use tokio::sync::Mutex;

/// One dependency's state.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Whether it answered in time.
    pub ok: bool,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it has been failing, in seconds (from the first failed check in a row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_for_s: Option<f64>,
    /// How long the check took.
    pub took_ms: f64,
}

/// The dependencies' states, as of `checked_at`.
#[derive(Clone, Debug)]
pub struct Report {
    /// `redis` and `postgres`.
    pub checks: BTreeMap<&'static str, Check>,
    /// When the checks ran.
    pub checked_at: Instant,
}

impl Report {
    /// Whether every check passed.
    pub fn ready(&self) -> bool {
        self.checks.values().all(|c| c.ok)
    }

    /// The names of the failing checks.
    pub fn failing(&self) -> Vec<&'static str> {
        self.checks.iter().filter(|(_, c)| !c.ok).map(|(name, _)| *name).collect()
    }
}

#[derive(Default)]
struct State {
    last: Option<Report>,
    failing_since: BTreeMap<&'static str, Instant>,
}

/// The cached checks.
pub struct Readiness {
    connections: Connections,
    db: Database,
    timeout: Duration,
    cache: Duration,
    state: Mutex<State>,
}

impl Readiness {
    /// Checks through `connections` and `db`, each within `timeout`, answers reused for `cache`.
    pub fn new(connections: Connections, db: Database, timeout: Duration, cache: Duration) -> Self {
        Readiness { connections, db, timeout, cache, state: Mutex::new(State::default()) }
    }

    /// The latest report, checked again when older than the cache time.
    pub async fn report(&self) -> Report {
        let mut state = self.state.lock().await;
        if let Some(last) = &state.last
            && last.checked_at.elapsed() < self.cache
        {
            return last.clone();
        }
        let (redis, postgres) = tokio::join!(
            timed(self.timeout, async { self.connections.ping().await.map_err(|e| e.to_string()) }),
            timed(self.timeout, async { self.db.ping().await.map_err(|e| e.to_string()) }),
        );
        let now = Instant::now();
        let mut checks = BTreeMap::new();
        for (name, (result, took)) in [("redis", redis), ("postgres", postgres)] {
            let failing_for = match &result {
                Ok(()) => {
                    state.failing_since.remove(name);
                    None
                }
                Err(_) => Some(now.duration_since(*state.failing_since.entry(name).or_insert(now)).as_secs_f64()),
            };
            checks.insert(
                name,
                Check {
                    ok: result.is_ok(),
                    error: result.err(),
                    failing_for_s: failing_for,
                    took_ms: took.as_secs_f64() * 1000.0,
                },
            );
        }
        let report = Report { checks, checked_at: now };
        state.last = Some(report.clone());
        report
    }
}

/// `check` within `limit`, and how long it took.
async fn timed(limit: Duration, check: impl Future<Output = Result<(), String>>) -> (Result<(), String>, Duration) {
    let started = Instant::now();
    let result = match tokio::time::timeout(limit, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    };
    (result, started.elapsed())
}
