//! `/ops/queue`: what an operator needs first, read on each request through the one command
//! connection, each part with why it could not be read; and the problems it shows, in words.
//! The server facts come from `inspect`, the same code `queuectl connections` and `doctor` use.

use std::collections::BTreeMap;
use std::sync::Arc;

use inspect::clients::{client_list, usage};
use inspect::server::{Info, PingSample, ping_sample};
use platform::storage::stats::{HEARTBEAT_FACT, StoreSnapshot};
use queue_core::{Connections, HeartbeatRecord, JobCounts, JobState, QueueView, Role};
use serde::Serialize;

use crate::canary::{Canary, CanaryState, Verdict};
use crate::readiness::{Check, Readiness};

/// `PING`s per latency sample.
const PINGS: usize = 5;
/// Connections at this share of `maxclients` are a problem.
const CLIENTS_WARN: f64 = 0.8;
/// A waiting job older than this is a problem.
const OLDEST_WAITING_WARN_S: f64 = 60.0;
/// A process's file store failure this recent (by its last heartbeat) is a problem.
const STORE_ERROR_RECENT_S: f64 = 60.0;

/// Everything `/ops` shows.
#[derive(Clone, Debug, Serialize)]
pub struct OpsReport {
    /// When it was read (RFC 3339).
    pub generated_at: String,
    /// Readiness as `/readyz` sees it.
    pub ready: bool,
    /// Each dependency.
    pub checks: BTreeMap<&'static str, Check>,
    /// The Redis server.
    pub redis: RedisFacts,
    /// Each queue of `HEALTH_QUEUES`.
    pub queues: Vec<QueueFacts>,
    /// Live processes, from their heartbeats.
    pub workers: Vec<ProcessFacts>,
    /// Redis connections by service and role against budgets.
    pub connections: ConnectionFacts,
    /// The canary.
    pub canary: CanaryFacts,
    /// What is wrong, in words; empty when nothing is.
    pub problems: Vec<String>,
}

/// The Redis server.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RedisFacts {
    /// Where (password redacted).
    pub endpoint: String,
    /// Why it could not be read.
    pub error: Option<String>,
    /// `redis_version`.
    pub version: Option<String>,
    /// Round trips of `PING` from health-svc.
    pub latency: Option<PingSample>,
    /// `connected_clients`.
    pub connected_clients: Option<u64>,
    /// `maxclients`.
    pub maxclients: Option<u64>,
    /// Whether the AOF is on (`aof_enabled`). health-svc reads `INFO` only: `CONFIG` is outside
    /// its Redis user's rights, so `appendfsync` is `queuectl doctor`'s to report.
    pub aof_enabled: Option<bool>,
    /// `rdb_last_save_time`: when an RDB snapshot last succeeded (0 or old: snapshots are off).
    pub rdb_last_save_time: Option<u64>,
    /// `aof_last_write_status`.
    pub aof_last_write_status: Option<String>,
    /// `rdb_last_bgsave_status`.
    pub rdb_last_bgsave_status: Option<String>,
    /// `used_memory`.
    pub used_memory: Option<u64>,
    /// `maxmemory` (0: no limit).
    pub maxmemory: Option<u64>,
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
}

/// One queue.
#[derive(Clone, Debug, Serialize)]
pub struct QueueFacts {
    /// Its name.
    pub name: String,
    /// Jobs per state.
    pub counts: Option<JobCounts>,
    /// Whether it is paused for everyone.
    pub paused: Option<bool>,
    /// How long the next job to run has waited, in seconds.
    pub oldest_waiting_age_s: Option<f64>,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// One live process.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessFacts {
    /// Its service name.
    pub service: String,
    /// Its instance (`<service>/<host>/<pid>`).
    pub instance: String,
    /// The queues it works on.
    pub queues: Vec<String>,
    /// Its declared connection budget.
    pub budget: usize,
    /// Connections it had open at its last heartbeat.
    pub open: usize,
    /// Seconds since that heartbeat.
    pub age_s: f64,
    /// Its file store's requests by operation, when it uses the store (api-svc, worker-svc).
    pub storage: Option<StoreSnapshot>,
}

/// One service's Redis connections.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceConnections {
    /// Its name.
    pub service: String,
    /// Open connections per role (`command`, `subscriber`, `blocking`).
    pub open: BTreeMap<String, usize>,
    /// What its live instances plan per role (summed).
    pub planned: BTreeMap<String, usize>,
    /// Open in all.
    pub total: usize,
    /// Declared budget of its live instances (summed); `None` without a heartbeat.
    pub budget: Option<usize>,
    /// Live instances.
    pub instances: usize,
    /// More open than declared.
    pub over_budget: bool,
}

/// Redis connections.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConnectionFacts {
    /// Every client of the server, health-svc's own included.
    pub total: usize,
    /// Clients without a name.
    pub unnamed: usize,
    /// Per service.
    pub services: Vec<ServiceConnections>,
    /// Why they could not be read.
    pub error: Option<String>,
}

/// The canary.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryFacts {
    /// Its verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Its state and recent probes.
    pub state: CanaryState,
}

/// Reads the facts.
pub struct Ops {
    connections: Connections,
    queues: Vec<QueueView>,
    canary: Arc<Canary>,
    readiness: Arc<Readiness>,
}

impl Ops {
    /// Facts about `queues`, through `connections`.
    pub fn new(
        connections: Connections,
        queues: Vec<QueueView>,
        canary: Arc<Canary>,
        readiness: Arc<Readiness>,
    ) -> Self {
        Ops { connections, queues, canary, readiness }
    }

    /// Reads everything once.
    pub async fn report(&self) -> OpsReport {
        let ready = self.readiness.report().await;
        let c = &self.connections;
        let mut redis = RedisFacts { endpoint: c.config().url.redacted(), ..RedisFacts::default() };
        match Info::read(c).await {
            Ok(info) => {
                let text = |k: &str| info.str(k).map(str::to_owned);
                redis.version = text("redis_version");
                redis.connected_clients = info.u64("connected_clients");
                redis.maxclients = info.u64("maxclients");
                redis.used_memory = info.u64("used_memory");
                redis.maxmemory = info.u64("maxmemory");
                redis.maxmemory_policy = text("maxmemory_policy");
                redis.aof_enabled = info.str("aof_enabled").map(|_| info.flag("aof_enabled"));
                redis.aof_last_write_status = text("aof_last_write_status");
                redis.rdb_last_bgsave_status = text("rdb_last_bgsave_status");
                redis.rdb_last_save_time = info.u64("rdb_last_save_time");
                redis.latency = ping_sample(c, PINGS).await.ok();
            }
            Err(e) => redis.error = Some(e.to_string()),
        }

        let mut queues = Vec::new();
        for view in &self.queues {
            queues.push(queue_facts(view).await);
        }
        let beats = c.live_heartbeats().await.unwrap_or_default();
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let workers = beats
            .iter()
            .map(|b| ProcessFacts {
                service: b.service.clone(),
                instance: b.instance.clone(),
                queues: b.queues.clone(),
                budget: b.budget,
                open: b.open,
                age_s: now_ms.saturating_sub(b.at_ms) as f64 / 1000.0,
                storage: b.facts.get(HEARTBEAT_FACT).and_then(|v| serde_json::from_value(v.clone()).ok()),
            })
            .collect();
        let connections = connection_facts(c, &beats).await;
        let canary = CanaryFacts { verdict: self.canary.verdict(), state: self.canary.state() };

        let mut report = OpsReport {
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ready: ready.ready(),
            checks: ready.checks.clone(),
            redis,
            queues,
            workers,
            connections,
            canary,
            problems: Vec::new(),
        };
        report.problems = problems(&report);
        report
    }
}

async fn queue_facts(view: &QueueView) -> QueueFacts {
    let mut facts = QueueFacts {
        name: view.name().to_owned(),
        counts: None,
        paused: None,
        oldest_waiting_age_s: None,
        error: None,
    };
    let read = async {
        facts.counts = Some(view.get_job_counts().await?);
        facts.paused = Some(view.is_paused().await?);
        let next = view.get_jobs(&[JobState::Waiting], 0, 0, true).await?;
        let now = chrono::Utc::now().timestamp_millis();
        facts.oldest_waiting_age_s =
            next.into_iter().flatten().next().and_then(|job| job.timestamp).map(|t| (now - t).max(0) as f64 / 1000.0);
        Ok::<(), queue_core::Error>(())
    };
    if let Err(e) = read.await {
        facts.error = Some(e.to_string());
    }
    facts
}

async fn connection_facts(c: &Connections, beats: &[HeartbeatRecord]) -> ConnectionFacts {
    let clients = match client_list(c).await {
        // health-svc's own connection is one of the stack's: counted like the others.
        Ok(clients) => {
            clients.into_iter().map(|c| inspect::clients::Client { is_self: false, ..c }).collect::<Vec<_>>()
        }
        Err(e) => return ConnectionFacts { error: Some(e.to_string()), ..ConnectionFacts::default() },
    };
    let services = usage(&clients, beats)
        .into_iter()
        .map(|u| {
            let mut planned: BTreeMap<String, usize> = BTreeMap::new();
            for beat in beats.iter().filter(|b| b.service == u.service) {
                for role in Role::ALL {
                    let n = match role {
                        Role::Command => beat.planned.command,
                        Role::Subscriber => beat.planned.subscriber,
                        Role::Blocking => beat.planned.blocking,
                    };
                    *planned.entry(role.as_str().to_owned()).or_default() += n;
                }
            }
            ServiceConnections {
                over_budget: u.declared_budget.is_some_and(|b| u.total > b),
                service: u.service,
                open: u.by_role,
                planned,
                total: u.total,
                budget: u.declared_budget,
                instances: u.instances,
            }
        })
        .collect();
    ConnectionFacts {
        total: clients.len(),
        unnamed: clients.iter().filter(|c| c.name.is_empty() && !c.is_self).count(),
        services,
        error: None,
    }
}

/// What is wrong, each in one plain sentence.
pub fn problems(r: &OpsReport) -> Vec<String> {
    let mut out = Vec::new();
    for (name, check) in &r.checks {
        if !check.ok {
            let what = if *name == "redis" { "Redis" } else { "Postgres" };
            let error = check.error.as_deref().unwrap_or("no answer");
            out.push(format!(
                "{what} does not answer health-svc ({error}), for {:.0} s now.",
                check.failing_for_s.unwrap_or(0.0)
            ));
        }
    }
    if !r.canary.verdict.ok {
        out.push(format!("The canary is {}.", r.canary.verdict.summary));
    }
    let now_ms =
        chrono::DateTime::parse_from_rfc3339(&r.generated_at).map_or(0, |t| t.timestamp_millis().max(0) as u64);
    for w in &r.workers {
        if let Some(last) = w.storage.as_ref().and_then(|s| s.last_error.as_ref()) {
            let ago_s = now_ms.saturating_sub(last.at_ms) as f64 / 1000.0;
            if ago_s <= STORE_ERROR_RECENT_S {
                out.push(format!(
                    "{} {}: the file store failed {ago_s:.0} s ago ({}: {}).",
                    w.service, w.instance, last.op, last.error
                ));
            }
        }
    }
    for s in &r.connections.services {
        if s.over_budget {
            out.push(format!(
                "{} holds {} Redis connections but declares a budget of {}: it is over budget.",
                s.service,
                s.total,
                s.budget.unwrap_or(0)
            ));
        }
    }
    if let (Some(max), total) = (r.redis.maxclients, r.connections.total)
        && max > 0
        && total as f64 >= CLIENTS_WARN * max as f64
    {
        out.push(format!(
            "Redis has {total} clients, {:.0}% of its maxclients ({max}).",
            100.0 * total as f64 / max as f64
        ));
    }
    for q in &r.queues {
        if let Some(e) = &q.error {
            out.push(format!("Queue {} could not be read: {e}.", q.name));
        }
        if q.paused == Some(true) {
            out.push(format!("Queue {} is paused: no worker takes its jobs.", q.name));
        }
        if let Some(age) = q.oldest_waiting_age_s
            && age > OLDEST_WAITING_WARN_S
        {
            out.push(format!("The next job of queue {} has waited {age:.0} s.", q.name));
        }
    }
    if let Some(policy) = &r.redis.maxmemory_policy
        && policy != "noeviction"
        && r.redis.maxmemory.unwrap_or(0) > 0
    {
        out.push(format!(
            "Redis's maxmemory-policy is {policy}: when memory is full it evicts keys, queued jobs among them (Bull needs noeviction)."
        ));
    }
    if r.redis.aof_enabled == Some(false) {
        out.push(
            "Redis's AOF is off: a crash loses every job written since the last RDB snapshot (files are re-enqueued from Postgres by worker-svc's reconciler; other jobs are lost)."
                .to_owned(),
        );
    }
    out
}
