//! For operator tools and tests only (`queuectl`, `queue-bench`, the integration tests): raw
//! access below the handles. Services never import this module (the tidy test checks it): what
//! they need is a handle in the crate root.
//!
//! - [`Raw`]: any *non-blocking* command on the process's command connection, for server-level
//!   reads (`INFO`, `CONFIG GET`, `SLOWLOG`, `CLIENT LIST`, ...). Blocking commands, pub/sub and
//!   commands that would change the shared connection's state are refused before they are sent.
//! - [`subscriber`] and [`blocking`]: the subscriber connection and the blocking pool of a
//!   process's [`Connections`].
//! - [`keys_of`]: the key names of a queue, and Bull's encodings (delayed scores, repeat keys).

use crate::connection::blocking::BLOCKING_COMMANDS;
use crate::connections::Connections;
use crate::error::{Error, Result};

pub use crate::bull::keys::{
    DELAYED_TIEBREAK_MASK, HEARTBEAT_NAMESPACE, QueueKeys, RESERVED_SUFFIXES, delayed_score, due_from_score,
    escape_glob, validate_existing_job_id, validate_job_id, validate_queue_name,
};
pub use crate::bull::repeat::{iteration_id, next_millis, repeat_key};
pub use crate::clock::now_ms;
pub use crate::connection::blocking::{BLOCK_MARGIN, BlockingPool};
pub use crate::connection::config::validate_prefix;
pub use crate::connection::subscriber::{PubSubMessage, Subscriber, SubscriberEvent};
/// Redis replies, for [`Raw::query`]: `Value` is any reply; `FromRedisValue` types read one.
pub use redis::{FromRedisValue, Value};

/// Commands [`Raw`] refuses besides the blocking ones: they turn the one shared connection
/// into a subscriber or replica, or change its state for every other caller.
const REFUSED: &[&str] = &[
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "SYNC",
    "PSYNC",
    "QUIT",
    "RESET",
    "HELLO",
    "AUTH",
    "SELECT",
    "MULTI",
    "EXEC",
    "WATCH",
];

/// Refuses the blocking commands (`BLOCKING_COMMANDS`, which would hold up every queue, lock
/// renewal and heartbeat of the process), what [`REFUSED`] lists, `XREAD`/`XREADGROUP` with `BLOCK`, and `CLIENT
/// SETNAME`/`CLIENT REPLY` (the connection's name says who holds it; a muted reply desyncs it).
fn check(args: &[&str]) -> Result<()> {
    let Some(name) = args.first() else { return Err(Error::RefusedCommand(String::new())) };
    let upper = name.to_ascii_uppercase();
    let sub = args.get(1).map(|s| s.to_ascii_uppercase()).unwrap_or_default();
    let blocking_stream =
        matches!(upper.as_str(), "XREAD" | "XREADGROUP") && args.iter().any(|a| a.eq_ignore_ascii_case("BLOCK"));
    let client_state = upper == "CLIENT" && matches!(sub.as_str(), "SETNAME" | "REPLY");
    if BLOCKING_COMMANDS.contains(&upper.as_str())
        || REFUSED.contains(&upper.as_str())
        || blocking_stream
        || client_state
    {
        return Err(Error::RefusedCommand(if client_state { format!("{upper} {sub}") } else { upper }));
    }
    Ok(())
}

/// Non-blocking commands on a process's command connection, each within the command timeout.
#[derive(Clone, Debug)]
pub struct Raw {
    connections: Connections,
}

impl Raw {
    /// Raw commands on `connections`' command connection.
    pub fn new(connections: &Connections) -> Self {
        Raw { connections: connections.clone() }
    }

    /// Runs one command, e.g. `["CONFIG", "GET", "maxclients"]`.
    pub async fn query<T: FromRedisValue + Send>(&self, args: &[&str]) -> Result<T> {
        check(args)?;
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        self.connections.command().query(&cmd).await
    }

    /// Runs several commands in one round trip (in a `MULTI` when `atomic`); the reply is the
    /// tuple or vector of their replies.
    pub async fn query_many<T: FromRedisValue + Send>(&self, commands: &[&[&str]], atomic: bool) -> Result<T> {
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for args in commands {
            check(args)?;
            pipe.cmd(args[0]).arg(&args[1..]);
        }
        self.connections.command().query_pipeline(&pipe).await
    }
}

/// The name of queue-core's script that a call runs, from what the slow log shows of it: the
/// command (`EVALSHA` or `EVAL`) and its first argument (the SHA1, or the source, possibly cut
/// short). `None` for other commands and for scripts that are not ours (Node Bull's).
pub fn script_of_call(command: &str, first_arg: &str) -> Option<&'static str> {
    crate::bull::scripts::script_of_call(command, first_arg)
}

/// The key names of a queue (any handle: `Queue` and `QueueAdmin` deref to a view).
pub fn keys_of(queue: &crate::queue::QueueView) -> &QueueKeys {
    queue.keys()
}

/// The subscriber connection of `connections`, when its plan has one.
pub fn subscriber(connections: &Connections) -> Option<&Subscriber> {
    connections.subscriber()
}

/// The blocking pool of `connections`, when its plan has one.
pub fn blocking(connections: &Connections) -> Option<&BlockingPool> {
    connections.blocking()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_and_state_changing_commands_are_refused() {
        for args in [
            &[&BLOCKING_COMMANDS[0].to_lowercase(), "a", "b", "RIGHT", "LEFT", "0"][..],
            &[BLOCKING_COMMANDS[2], "a", "b", "0"],
            &["subscribe", "c"],
            &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
            &["client", "setname", "x"],
            &["MONITOR"],
            &[],
        ] {
            assert!(matches!(check(args), Err(Error::RefusedCommand(_))), "{args:?}");
        }
        for args in [&["INFO"][..], &["CLIENT", "LIST"], &["XREAD", "STREAMS", "s", "0"], &["config", "get", "x"]] {
            assert!(check(args).is_ok(), "{args:?}");
        }
        assert_eq!(
            check(&["client", "reply", "off"]).unwrap_err().to_string(),
            "command CLIENT REPLY is refused on the shared command connection"
        );
    }
}
