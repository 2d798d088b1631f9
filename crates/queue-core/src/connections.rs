//! Everything a process holds of Redis: its budget, one handle per role, and its heartbeat.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connection::blocking::BlockingPool;
use crate::connection::budget::{BudgetStats, ConnectionBudget, ConnectionPlan};
use crate::connection::command::CommandConnection;
use crate::connection::config::RedisConfig;
use crate::connection::connector::Connector;
use crate::connection::subscriber::Subscriber;
use crate::error::{Error, Result};
use crate::heartbeat::{self, DEFAULT_HEARTBEAT_INTERVAL, Heartbeat, HeartbeatRecord};

/// Builds [`Connections`]: declare what the process needs, and the budget check happens here,
/// before anything is opened.
#[derive(Debug)]
#[must_use]
pub struct ConnectionsBuilder {
    config: RedisConfig,
    service: String,
    subscriber: bool,
    blocking: usize,
    heartbeat: Option<Duration>,
}

impl ConnectionsBuilder {
    /// Adds the one subscriber connection (events, worker wake-ups). Off by default.
    pub fn subscriber(mut self, on: bool) -> Self {
        self.subscriber = on;
        self
    }

    /// Sets the size of the blocking pool. 0 (the default) means workers fetch without blocking.
    pub fn blocking(mut self, connections: usize) -> Self {
        self.blocking = connections;
        self
    }

    /// Sets the heartbeat period ([`DEFAULT_HEARTBEAT_INTERVAL`] by default), or turns the
    /// heartbeat off with `None`: for short-lived tools only, since a service without one is
    /// invisible to `queuectl doctor` and the ops page.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval.filter(|d| !d.is_zero());
        self
    }

    /// The plan this builder describes.
    pub fn plan(&self) -> ConnectionPlan {
        ConnectionPlan { command: 1, subscriber: usize::from(self.subscriber), blocking: self.blocking }
    }

    /// Checks the plan against the budget and prepares the handles. The budget is
    /// `REDIS_MAX_CONNECTIONS` when set (and must then fit the plan), else exactly the plan.
    /// Connections open lazily, on first use, each inside the budget. Called inside a tokio
    /// runtime, this also starts the process's heartbeat.
    pub fn build(self) -> Result<Connections> {
        if self.service.is_empty() || self.service.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':') {
            return Err(Error::config(
                "service name",
                format!("{:?} must be non-empty without spaces or ':'", self.service),
            ));
        }
        let plan = self.plan();
        let limit = self.config.max_connections.unwrap_or(plan.total());
        let budget = ConnectionBudget::new(limit, plan)?;
        tracing::info!(
            endpoint = %self.config.url,
            service = %self.service,
            budget = limit,
            command = plan.command,
            subscriber = plan.subscriber,
            blocking = plan.blocking,
            "redis connections planned"
        );
        let heartbeat =
            self.heartbeat.map(|interval| Arc::new(Heartbeat::new(&self.service, &self.config.prefix, interval)));
        let connector = Connector::new(self.config, &self.service, budget.clone())?;
        let connections = Connections {
            inner: Arc::new(Inner {
                command: CommandConnection::new(connector.clone()),
                subscriber: self.subscriber.then(|| Subscriber::new(connector.clone())),
                blocking: (self.blocking > 0).then(|| BlockingPool::new(connector.clone(), self.blocking)),
                budget,
                connector,
                service: self.service,
                heartbeat,
                heartbeat_task: Mutex::new(None),
            }),
        };
        connections.start_heartbeat();
        Ok(connections)
    }
}

/// A process's Redis connections by role, its budget and its heartbeat. Cheap to clone; every
/// clone shares them. Build one per process with [`Connections::builder`] and hand it to the
/// queues, workers and event streams that need it.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    command: CommandConnection,
    subscriber: Option<Subscriber>,
    blocking: Option<BlockingPool>,
    budget: ConnectionBudget,
    connector: Arc<Connector>,
    service: String,
    heartbeat: Option<Arc<Heartbeat>>,
    heartbeat_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat_task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl Connections {
    /// Starts a builder for `service` (the first part of every connection name and of the
    /// heartbeat's key). The budget follows `config.max_connections`.
    pub fn builder(config: RedisConfig, service: &str) -> ConnectionsBuilder {
        ConnectionsBuilder {
            config,
            service: service.to_owned(),
            subscriber: false,
            blocking: 0,
            heartbeat: Some(DEFAULT_HEARTBEAT_INTERVAL),
        }
    }

    fn start_heartbeat(&self) {
        let Some(heartbeat) = self.inner.heartbeat.clone() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::debug!("built outside a tokio runtime: no heartbeat");
            return;
        }
        let budget = self.inner.budget.clone();
        let task = heartbeat::spawn(heartbeat, self.inner.command.clone(), move || budget.stats());
        *self.inner.heartbeat_task.lock().expect("heartbeat task lock") = Some(task);
    }

    pub(crate) fn command(&self) -> &CommandConnection {
        &self.inner.command
    }

    pub(crate) fn subscriber(&self) -> Option<&Subscriber> {
        self.inner.subscriber.as_ref()
    }

    pub(crate) fn blocking(&self) -> Option<&BlockingPool> {
        self.inner.blocking.as_ref()
    }

    /// Adds queues to what this process's heartbeat says it works on.
    pub(crate) fn announce_queues<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        if let Some(heartbeat) = &self.inner.heartbeat {
            heartbeat.add_queues(names);
        }
    }

    /// Adds the fact `name` to this process's heartbeat: `source` is read at each beat (it must
    /// be cheap, and its value small). Ops pages read facts with
    /// [`live_heartbeats`](Self::live_heartbeats); the service decides what they mean. Nothing
    /// happens without a heartbeat.
    pub fn report_in_heartbeat(&self, name: &str, source: impl Fn() -> serde_json::Value + Send + Sync + 'static) {
        if let Some(heartbeat) = &self.inner.heartbeat {
            heartbeat.add_fact(name, Box::new(source));
        }
    }

    /// Budget and per-role statistics (serialisable, for `/metrics` and ops pages).
    pub fn stats(&self) -> BudgetStats {
        self.inner.budget.stats()
    }

    /// The configuration these connections were built from.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.connector.config
    }

    /// The service name used in connection names.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Proves the command connection answers (opening it if needed), within the command
    /// timeout: what a readiness probe asks.
    pub async fn ping(&self) -> Result<()> {
        self.inner.command.ping().await
    }

    /// Every live heartbeat under this process's prefix, its own included.
    pub async fn live_heartbeats(&self) -> Result<Vec<HeartbeatRecord>> {
        heartbeat::live(&self.inner.command, &self.config().prefix).await
    }

    /// Closes every connection of the process: stops the heartbeat and deletes its record,
    /// ends the subscriber, drops the command connection and the idle blocking ones (those in
    /// use are dropped when their call returns). Every later call fails with
    /// [`Error::Closed`]. Close workers first: they need the connections to finish.
    pub async fn close(&self) {
        let task = self.inner.heartbeat_task.lock().expect("heartbeat task lock").take();
        if let Some(task) = task {
            task.abort();
            if let Some(heartbeat) = &self.inner.heartbeat
                && let Err(e) = heartbeat.remove(&self.inner.command).await
            {
                tracing::debug!(error = %e, "could not delete the heartbeat record");
            }
        }
        self.inner.connector.close();
        if let Some(subscriber) = &self.inner.subscriber {
            subscriber.close();
        }
        if let Some(pool) = &self.inner.blocking {
            pool.close().await;
        }
        self.inner.command.close();
        tracing::info!(service = %self.inner.service, "redis connections closed");
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("service", &self.inner.service)
            .field("config", self.config())
            .field("stats", &self.stats())
            .finish()
    }
}
