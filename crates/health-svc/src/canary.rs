//! The canary: every `HEALTH_CANARY_INTERVAL_MS` a tiny job named `canary` on the `files`
//! queue, which worker-svc answers at once without touching storage or Postgres. Its round trip
//! proves what a `PING` cannot: that a worker takes `files` jobs and finishes them.
//!
//! Each probe waits for its job until the next one is due. A probe that does not come back in
//! that time is recorded as `late`; its job stays queued and is answered when a worker returns.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use platform::jobs::{CANARY_JOB_NAME, CanaryJob, canary_job_options};
use queue_core::{JobState, Queue};
use serde::Serialize;
use tokio::sync::watch;

/// Probes kept for the ops page (the last minutes at the default interval).
const HISTORY: usize = 60;
/// How often a probe asks for its job's state.
const POLL: Duration = Duration::from_millis(100);

/// One probe.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// When it was sent (ms since the epoch).
    pub sent_at_ms: u64,
    /// `ok`, `late` (not back before the next probe), `failed` (the job failed) or `error`
    /// (it could not be sent or followed).
    pub outcome: &'static str,
    /// The round trip, for `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// What went wrong, otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the canary knows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CanaryState {
    /// When the last probe came back (ms since the epoch).
    pub last_success_ms: Option<u64>,
    /// Its round trip.
    pub last_latency_ms: Option<u64>,
    /// The newest probes, oldest first.
    pub history: VecDeque<Probe>,
    /// Probes since start, by outcome.
    pub probes: std::collections::BTreeMap<&'static str, u64>,
}

/// The canary's state, shared by its task and the routes.
#[derive(Debug)]
pub struct Canary {
    state: Mutex<CanaryState>,
    started: Instant,
    /// `HEALTH_CANARY_MAX_AGE_MS`.
    pub max_age: Duration,
}

/// The canary's verdict for deep readiness and the ops page.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Whether it came back recently enough (or health-svc is too young to say).
    pub ok: bool,
    /// Seconds since the last success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_s: Option<f64>,
    /// In words.
    pub summary: String,
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

impl Canary {
    /// A canary whose success must be younger than `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Canary { state: Mutex::new(CanaryState::default()), started: Instant::now(), max_age }
    }

    /// A copy of the state.
    pub fn state(&self) -> CanaryState {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether the canary came back within `max_age`.
    pub fn verdict(&self) -> Verdict {
        let state = self.state();
        let max = self.max_age.as_secs_f64();
        match state.last_success_ms {
            Some(at) => {
                let age = now_ms().saturating_sub(at) as f64 / 1000.0;
                let ok = age <= max;
                let summary = if ok {
                    format!("came back {age:.1} s ago in {} ms", state.last_latency_ms.unwrap_or(0))
                } else {
                    format!(
                        "overdue: last came back {age:.0} s ago (limit {max:.0} s); no worker is finishing files jobs"
                    )
                };
                Verdict { ok, age_s: Some(age), summary }
            }
            None if self.started.elapsed() <= self.max_age => {
                Verdict { ok: true, age_s: None, summary: "waiting for the first round trip".to_owned() }
            }
            None => Verdict {
                ok: false,
                age_s: None,
                summary: format!("overdue: no canary has come back since health-svc started ({max:.0} s limit)"),
            },
        }
    }

    fn record(&self, probe: Probe) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if probe.outcome == "ok" {
            state.last_success_ms = Some(now_ms());
            state.last_latency_ms = probe.latency_ms;
        }
        *state.probes.entry(probe.outcome).or_default() += 1;
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(probe);
    }

    /// Sends a probe every `interval` on `files` until `shutdown` turns true.
    pub async fn run(&self, files: Queue, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            let due = tokio::time::Instant::now() + interval;
            let probe = tokio::select! {
                probe = probe(&files, due) => probe,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            if probe.outcome != "ok" {
                tracing::warn!(outcome = probe.outcome, error = ?probe.error, "canary did not come back");
            }
            self.record(probe);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// Sends one canary and follows it until `due`.
async fn probe(files: &Queue, due: tokio::time::Instant) -> Probe {
    let job = CanaryJob::new(now_ms());
    let sent = Instant::now();
    let failed =
        |outcome, error: String| Probe { sent_at_ms: job.sent_at_ms, outcome, latency_ms: None, error: Some(error) };
    if let Err(e) = files.add(CANARY_JOB_NAME, &job, canary_job_options(&job)).await {
        return failed("error", format!("could not send: {e}"));
    }
    let id = job.job_id();
    while tokio::time::Instant::now() < due {
        match files.get_job_state(&id).await {
            Ok(Some(JobState::Completed)) => {
                let latency = sent.elapsed().as_millis() as u64;
                return Probe { sent_at_ms: job.sent_at_ms, outcome: "ok", latency_ms: Some(latency), error: None };
            }
            Ok(Some(JobState::Failed)) => {
                let reason = files.get_job(&id).await.ok().flatten().and_then(|j| j.failed_reason);
                return failed("failed", reason.unwrap_or_else(|| "the job failed".to_owned()));
            }
            Ok(_) => {}
            Err(e) => return failed("error", format!("could not follow: {e}")),
        }
        tokio::time::sleep(POLL).await;
    }
    failed("late", format!("not back within {} ms", sent.elapsed().as_millis()))
}
