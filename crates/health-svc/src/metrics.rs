//! health-svc's Prometheus metrics at `/metrics`: the canary (`canary_up`,
//! `canary_last_success_age_seconds`, `canary_last_latency_seconds`,
//! `canary_probes_total{outcome}`), read from its state at each scrape; platform's request
//! series (`http_requests_total{route,method,status}`, `http_request_duration_seconds`, the same
//! as api-svc's); and platform's collectors of the Redis connections by role and the Postgres
//! pool.

use std::sync::Arc;

use platform::metrics::{ConnectionStats, PoolStats, RequestMetrics};
use platform::records::Database;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use queue_core::Connections;

use crate::canary::Canary;

/// The canary's state as series.
#[derive(Debug)]
struct CanaryStats(Arc<Canary>);

impl Collector for CanaryStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let verdict = self.0.verdict();
        let state = self.0.state();
        let up = ConstGauge::new(i64::from(verdict.ok));
        up.encode(encoder.encode_descriptor(
            "canary_up",
            "1 when the canary came back within HEALTH_CANARY_MAX_AGE_MS.",
            None,
            up.metric_type(),
        )?)?;
        if let Some(age) = verdict.age_s {
            let gauge = ConstGauge::new(age);
            gauge.encode(encoder.encode_descriptor(
                "canary_last_success_age_seconds",
                "Seconds since a canary last came back.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Some(ms) = state.last_latency_ms {
            let gauge = ConstGauge::new(ms as f64 / 1000.0);
            gauge.encode(encoder.encode_descriptor(
                "canary_last_latency_seconds",
                "Round trip of the last canary that came back.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        let mut family =
            encoder.encode_descriptor("canary_probes", "Canary probes by outcome.", None, MetricType::Counter)?;
        for outcome in ["ok", "late", "failed", "error"] {
            let counter = ConstCounter::new(state.probes.get(outcome).copied().unwrap_or(0));
            counter.encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        Ok(())
    }
}

/// The registry, with every collector, and the request series that `platform::metrics::middleware`
/// records into.
pub fn registry(connections: Connections, database: Database, canary: Arc<Canary>) -> (Registry, RequestMetrics) {
    let mut registry = Registry::default();
    let requests = RequestMetrics::register(&mut registry);
    registry.register_collector(Box::new(ConnectionStats::new(connections)));
    registry.register_collector(Box::new(PoolStats::new(database)));
    registry.register_collector(Box::new(CanaryStats(canary)));
    (registry, requests)
}
