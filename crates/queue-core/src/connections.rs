//! Everything a process holds of Redis: its budget and one handle per role.

use std::sync::Arc;

use crate::connection::blocking::BlockingPool;
use crate::connection::budget::{BudgetStats, ConnectionBudget, ConnectionPlan};
use crate::connection::command::CommandConnection;
use crate::connection::config::RedisConfig;
use crate::connection::connector::Connector;
use crate::connection::subscriber::Subscriber;
use crate::error::{Error, Result};

/// Builds [`Connections`]: declare what the process needs, and the budget check happens here,
/// before anything is opened.
#[derive(Debug)]
#[must_use]
pub struct ConnectionsBuilder {
    config: RedisConfig,
    service: String,
    subscriber: bool,
    blocking: usize,
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

    /// The plan this builder describes.
    pub fn plan(&self) -> ConnectionPlan {
        ConnectionPlan { command: 1, subscriber: usize::from(self.subscriber), blocking: self.blocking }
    }

    /// Checks the plan against `REDIS_MAX_CONNECTIONS` and prepares the handles. Connections
    /// open lazily, on first use, each inside the budget.
    pub fn build(self) -> Result<Connections> {
        if self.service.is_empty() || self.service.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::config("service name", format!("{:?} must be non-empty without spaces", self.service)));
        }
        let plan = self.plan();
        let budget = ConnectionBudget::new(self.config.max_connections, plan)?;
        tracing::info!(
            endpoint = %self.config.url,
            service = %self.service,
            budget = self.config.max_connections,
            command = plan.command,
            subscriber = plan.subscriber,
            blocking = plan.blocking,
            "redis connections planned"
        );
        let connector = Connector::new(self.config, &self.service, budget.clone())?;
        Ok(Connections {
            inner: Arc::new(Inner {
                command: CommandConnection::new(connector.clone()),
                subscriber: self.subscriber.then(|| Subscriber::new(connector.clone())),
                blocking: (self.blocking > 0).then(|| BlockingPool::new(connector.clone(), self.blocking)),
                budget,
                connector,
                service: self.service,
            }),
        })
    }
}

/// A process's Redis connections by role. Cheap to clone; every clone shares them.
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
}

impl Connections {
    /// Starts a builder for `service` (the first part of every connection name).
    pub fn builder(config: RedisConfig, service: &str) -> ConnectionsBuilder {
        ConnectionsBuilder { config, service: service.to_owned(), subscriber: false, blocking: 0 }
    }

    /// The command connection.
    pub fn command(&self) -> &CommandConnection {
        &self.inner.command
    }

    /// The subscriber, when the plan has one.
    pub fn subscriber(&self) -> Option<&Subscriber> {
        self.inner.subscriber.as_ref()
    }

    /// The blocking pool, when the plan has one.
    pub fn blocking(&self) -> Option<&BlockingPool> {
        self.inner.blocking.as_ref()
    }

    /// Budget and per-role statistics.
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
