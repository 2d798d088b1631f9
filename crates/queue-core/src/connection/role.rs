//! The three kinds of Redis connection a process may hold.

use std::fmt;

/// Why a connection exists. Every connection this crate opens has exactly one role, and the
/// role decides its timeouts, its name in `CLIENT LIST` and its share of the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// One multiplexed connection per process, shared by every queue and caller: scripts,
    /// reads, writes, lock renewal, heartbeats. Redis serves one command at a time anyway, so
    /// more command connections only add sockets, not throughput. Has the command timeout.
    Command,
    /// One connection per process for every queue's pub/sub channels. A subscribed connection
    /// cannot run ordinary commands, so it cannot be the command connection. Messages are hints
    /// (pub/sub is lossy across reconnects); nothing relies on them alone.
    Subscriber,
    /// Dedicated connections for blocking pops (`BLMOVE`). A blocked connection serves nobody
    /// else until it returns, so each concurrent blocking call needs its own, and none may have
    /// a response timeout shorter than its block time.
    Blocking,
}

impl Role {
    /// Every role, in budget order.
    pub const ALL: [Role; 3] = [Role::Command, Role::Subscriber, Role::Blocking];

    /// The lowercase name used in connection names, stats and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Command => "command",
            Role::Subscriber => "subscriber",
            Role::Blocking => "blocking",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
