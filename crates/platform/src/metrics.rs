//! Prometheus collectors every service registers, so that api-svc and worker-svc describe their
//! Redis connections and their Postgres pool with the same series:
//!
//! - [`ConnectionStats`]: the Redis connections by role, from queue-core's
//!   [`Connections::stats()`]: `redis_connection_budget`, the gauges
//!   `redis_connections_{planned,open,in_use}{role}` and the counters
//!   `redis_{connection_waits,timeouts,reconnects,connect_failures}_total{role}`;
//! - [`PoolStats`]: the Postgres pool of a [`Database`]: `db_pool_connections{state}` (`idle`,
//!   `in_use`) and `db_pool_max_connections`.
//!
//! Both are read at each scrape, so they cost nothing between scrapes and are never stale. A
//! service that prefixes its metrics registers them in a sub-registry
//! (`registry.sub_registry_with_prefix("worker")` gives `worker_redis_connections_open`).
//! [`encode`] writes a registry in the Prometheus text format ([`CONTENT_TYPE`]).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use queue_core::{Connections, RoleStats};

use crate::records::Database;

/// The `Content-Type` of what [`encode`] writes (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `registry` in the Prometheus text format. An encoding failure (a collector's bug) is logged
/// and leaves what was written before it.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding the metrics failed");
    }
    out
}

/// The process's Redis connections by role, read from [`Connections::stats()`] at each scrape.
#[derive(Debug)]
pub struct ConnectionStats(Connections);

impl ConnectionStats {
    /// A collector of `connections`' statistics.
    pub fn new(connections: Connections) -> Self {
        ConnectionStats(connections)
    }
}

/// One per-role series: its name, help, type and how to read it.
type RoleSeries = (&'static str, &'static str, MetricType, fn(&RoleStats) -> u64);

const ROLE_SERIES: &[RoleSeries] = &[
    ("redis_connections_planned", "Redis connections the plan allows, by role.", MetricType::Gauge, |s| {
        s.planned as u64
    }),
    ("redis_connections_open", "Redis connections open now, by role.", MetricType::Gauge, |s| s.open as u64),
    ("redis_connections_in_use", "Redis connections (or command calls) in use now, by role.", MetricType::Gauge, |s| {
        s.in_use as u64
    }),
    ("redis_connection_waits", "Times a caller waited for a connection, by role.", MetricType::Counter, |s| s.waits),
    ("redis_timeouts", "Redis calls that timed out, by role.", MetricType::Counter, |s| s.timeouts),
    ("redis_reconnects", "Connections opened beyond the plan (reconnects), by role.", MetricType::Counter, |s| {
        s.reconnects
    }),
    ("redis_connect_failures", "Failed connection attempts, by role.", MetricType::Counter, |s| s.connect_failures),
];

impl Collector for ConnectionStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let budget = ConstGauge::new(stats.budget as i64);
        budget.encode(encoder.encode_descriptor(
            "redis_connection_budget",
            "The process's Redis connection budget (REDIS_MAX_CONNECTIONS, else its plan).",
            None,
            budget.metric_type(),
        )?)?;
        let roles = [("command", &stats.command), ("subscriber", &stats.subscriber), ("blocking", &stats.blocking)];
        for (name, help, kind, read) in ROLE_SERIES {
            let mut series = encoder.encode_descriptor(name, help, None, *kind)?;
            for (role, role_stats) in roles {
                let labels = [("role", role)];
                let mut family = series.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => family.encode_counter::<NoLabelSet, _, u64>(&read(role_stats), None)?,
                    _ => family.encode_gauge(&(read(role_stats) as i64))?,
                }
            }
        }
        Ok(())
    }
}

/// The Postgres pool of a [`Database`], read at each scrape: connections open and idle, open and
/// in use, and the most the pool may open (`DATABASE_MAX_CONNECTIONS`). A pool that keeps all
/// its connections in use is where requests wait (up to `DATABASE_ACQUIRE_TIMEOUT_MS`).
#[derive(Debug)]
pub struct PoolStats(Database);

impl PoolStats {
    /// A collector of `database`'s pool.
    pub fn new(database: Database) -> Self {
        PoolStats(database)
    }
}

impl Collector for PoolStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pool = self.0.pool();
        // Two reads of a pool that may change in between: an idle count above the size is
        // clamped rather than reported as a negative number in use.
        let size = i64::from(pool.size());
        let idle = (pool.num_idle() as i64).min(size);
        let mut series = encoder.encode_descriptor(
            "db_pool_connections",
            "Postgres connections open in the pool, by state (idle, in_use).",
            None,
            MetricType::Gauge,
        )?;
        for (state, value) in [("idle", idle), ("in_use", size - idle)] {
            series.encode_family(&[("state", state)])?.encode_gauge(&value)?;
        }
        let max = ConstGauge::new(i64::from(pool.options().get_max_connections()));
        max.encode(encoder.encode_descriptor(
            "db_pool_max_connections",
            "The most connections the Postgres pool may open (DATABASE_MAX_CONNECTIONS).",
            None,
            max.metric_type(),
        )?)?;
        Ok(())
    }
}
