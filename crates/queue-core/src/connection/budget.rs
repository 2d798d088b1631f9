//! The process-wide hard limit on open Redis connections.
//!
//! Every connection this crate opens holds a [`Permit`] for as long as its socket may be open;
//! dropping the connection drops the permit. Asking for a permit never waits and never
//! over-commits: when none is left the caller gets [`Error::BudgetExhausted`] and opens nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::connection::role::Role;
use crate::error::{Error, Result};

/// How many connections of each role a configuration needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionPlan {
    /// 1 when anything talks to Redis at all.
    pub command: usize,
    /// 0 or 1.
    pub subscriber: usize,
    /// Size of the blocking pool; 0 runs workers in zero-blocking (polling + pub/sub) mode.
    pub blocking: usize,
}

impl ConnectionPlan {
    /// Sum over roles.
    pub fn total(&self) -> usize {
        self.command + self.subscriber + self.blocking
    }

    fn count(&self, role: Role) -> usize {
        match role {
            Role::Command => self.command,
            Role::Subscriber => self.subscriber,
            Role::Blocking => self.blocking,
        }
    }

    /// Refuses a plan that needs more than `budget` connections, naming every role.
    pub fn check(&self, budget: usize) -> Result<()> {
        if self.total() <= budget {
            return Ok(());
        }
        let detail =
            Role::ALL.iter().map(|role| format!("{role} {}", self.count(*role))).collect::<Vec<_>>().join(", ");
        Err(Error::BudgetTooSmall { needed: self.total(), budget, detail })
    }
}

/// Counters for one role, as served by `/metrics` and `queuectl connections`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RoleStats {
    /// Connections of this role the plan allows.
    pub planned: usize,
    /// Connections of this role open now.
    pub open: usize,
    /// Connections of this role lent out right now (blocking pool; the command connection counts
    /// calls in flight).
    pub in_use: usize,
    /// Times a caller had to wait for a connection of this role.
    pub waits: u64,
    /// Calls of this role that timed out.
    pub timeouts: u64,
    /// Connections of this role opened beyond the planned count (reconnects and replacements).
    pub reconnects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
}

/// Statistics of a whole process: the budget and each role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BudgetStats {
    /// `REDIS_MAX_CONNECTIONS`.
    pub budget: usize,
    /// Open connections, all roles.
    pub open: usize,
    /// The command role.
    pub command: RoleStats,
    /// The subscriber role.
    pub subscriber: RoleStats,
    /// The blocking role.
    pub blocking: RoleStats,
}

#[derive(Debug, Default)]
pub(crate) struct RoleCounters {
    open: AtomicUsize,
    in_use: AtomicUsize,
    waits: AtomicU64,
    timeouts: AtomicU64,
    opened: AtomicU64,
    connect_failures: AtomicU64,
}

impl RoleCounters {
    pub(crate) fn begin_use(&self) -> InUse<'_> {
        self.in_use.fetch_add(1, Ordering::Relaxed);
        InUse(&self.in_use)
    }
    pub(crate) fn waited(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Decrements `in_use` on drop.
pub(crate) struct InUse<'a>(&'a AtomicUsize);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Inner {
    budget: usize,
    plan: ConnectionPlan,
    open: AtomicUsize,
    roles: [RoleCounters; 3],
}

/// The hard budget: at most `budget` permits exist at once, and each open connection owns one.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionBudget {
    inner: Arc<Inner>,
}

impl ConnectionBudget {
    /// A budget for `plan`, refused when the plan needs more than `budget` connections.
    pub(crate) fn new(budget: usize, plan: ConnectionPlan) -> Result<Self> {
        plan.check(budget)?;
        Ok(ConnectionBudget {
            inner: Arc::new(Inner { budget, plan, open: AtomicUsize::new(0), roles: Default::default() }),
        })
    }

    /// Takes a permit for one connection of `role`, or fails without waiting. A role may not
    /// exceed its planned count either, so one role can never starve another.
    pub(crate) fn try_acquire(&self, role: Role) -> Result<Permit> {
        let counters = &self.inner.roles[role.index()];
        let planned = self.inner.plan.count(role);
        let exhausted = || Error::BudgetExhausted { role, budget: self.inner.budget };
        // Reserve in the role first, then in the total; undo on failure.
        counters
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < planned).then_some(n + 1))
            .map_err(|_| exhausted())?;
        if self
            .inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.inner.budget).then_some(n + 1))
            .is_err()
        {
            counters.open.fetch_sub(1, Ordering::AcqRel);
            return Err(exhausted());
        }
        counters.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Permit { budget: self.clone(), role })
    }

    pub(crate) fn counters(&self, role: Role) -> &RoleCounters {
        &self.inner.roles[role.index()]
    }

    /// A snapshot of every counter.
    pub(crate) fn stats(&self) -> BudgetStats {
        let role = |role: Role| {
            let c = &self.inner.roles[role.index()];
            let opened = c.opened.load(Ordering::Relaxed);
            RoleStats {
                planned: self.inner.plan.count(role),
                open: c.open.load(Ordering::Relaxed),
                in_use: c.in_use.load(Ordering::Relaxed),
                waits: c.waits.load(Ordering::Relaxed),
                timeouts: c.timeouts.load(Ordering::Relaxed),
                reconnects: opened.saturating_sub(self.inner.plan.count(role) as u64),
                connect_failures: c.connect_failures.load(Ordering::Relaxed),
            }
        };
        BudgetStats {
            budget: self.inner.budget,
            open: self.inner.open.load(Ordering::Relaxed),
            command: role(Role::Command),
            subscriber: role(Role::Subscriber),
            blocking: role(Role::Blocking),
        }
    }
}

/// The right to hold one open connection. Released when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    budget: ConnectionBudget,
    role: Role,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.inner.open.fetch_sub(1, Ordering::AcqRel);
        self.budget.inner.roles[self.role.index()].open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_over_budget_names_each_role() {
        let plan = ConnectionPlan { command: 1, subscriber: 1, blocking: 3 };
        let err = ConnectionBudget::new(4, plan).unwrap_err().to_string();
        assert_eq!(
            err,
            "connection budget exceeded: 5 connections needed (command 1, subscriber 1, blocking 3) but REDIS_MAX_CONNECTIONS is 4"
        );
        assert!(ConnectionBudget::new(5, plan).is_ok());
    }

    #[test]
    fn permits_never_exceed_the_plan_and_are_returned_on_drop() {
        let plan = ConnectionPlan { command: 1, subscriber: 0, blocking: 2 };
        let budget = ConnectionBudget::new(3, plan).unwrap();
        let c = budget.try_acquire(Role::Command).unwrap();
        assert!(budget.try_acquire(Role::Command).is_err());
        assert!(budget.try_acquire(Role::Subscriber).is_err());
        let b1 = budget.try_acquire(Role::Blocking).unwrap();
        let _b2 = budget.try_acquire(Role::Blocking).unwrap();
        assert!(budget.try_acquire(Role::Blocking).is_err());
        assert_eq!(budget.stats().open, 3);
        drop(b1);
        drop(c);
        assert_eq!(budget.stats().open, 1);
        let _again = budget.try_acquire(Role::Blocking).unwrap();
        let stats = budget.stats();
        assert_eq!(stats.blocking.open, 2);
        assert_eq!(stats.blocking.reconnects, 1);
    }
}
