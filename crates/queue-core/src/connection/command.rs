//! The process's one command connection: multiplexed, reconnecting, every call time-limited.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, Pipeline};
use tokio::time::Instant;

use crate::connection::budget::Permit;
use crate::connection::connector::{Connector, closed_flag, reconnect_delay};
use crate::connection::role::Role;
use crate::error::{Error, Result};

struct Live {
    generation: u64,
    conn: MultiplexedConnection,
    closed: Arc<AtomicBool>,
    _permit: Permit,
}

struct Reconnect {
    generation: u64,
    failures: u32,
    next_attempt: Option<Instant>,
}

/// The [`Role::Command`] connection. Cheap to clone; all clones share one socket.
///
/// A call that fails because the connection broke drops it; the next call opens a new one
/// (after a capped, jittered backoff when opening keeps failing). Nothing is retried
/// automatically: a write whose reply was lost may have happened, and only the caller knows
/// whether repeating it is safe.
#[derive(Clone)]
pub struct CommandConnection {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Arc<Connector>,
    live: Mutex<Option<Live>>,
    reconnect: tokio::sync::Mutex<Reconnect>,
    /// Timeouts in a row. A socket that stopped answering without a reset (a vanished host, a
    /// dropped NAT entry) is replaced after [`TIMEOUTS_BEFORE_RECONNECT`] of them.
    consecutive_timeouts: AtomicU32,
}

/// Command timeouts in a row after which the connection is replaced.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

impl CommandConnection {
    pub(crate) fn new(connector: Arc<Connector>) -> Self {
        CommandConnection {
            inner: Arc::new(Inner {
                connector,
                live: Mutex::new(None),
                reconnect: tokio::sync::Mutex::new(Reconnect { generation: 0, failures: 0, next_attempt: None }),
                consecutive_timeouts: AtomicU32::new(0),
            }),
        }
    }

    /// The command timeout this connection applies to every call.
    pub fn command_timeout(&self) -> Duration {
        self.inner.connector.config.command_timeout
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let mut live = self.inner.live.lock().expect("command connection lock");
        if live.as_ref().is_some_and(|l| l.closed.load(Ordering::Acquire)) {
            // The server closed it (restart, CLIENT KILL, idle timeout): release it and reconnect.
            *live = None;
        }
        live.as_ref().map(|l| (l.generation, l.conn.clone()))
    }

    async fn connection(&self, deadline: Instant) -> Result<(u64, MultiplexedConnection)> {
        if let Some(found) = self.current() {
            return Ok(found);
        }
        let counters = self.inner.connector.budget().counters(Role::Command);
        counters.waited();
        let mut state = match tokio::time::timeout_at(deadline, self.inner.reconnect.lock()).await {
            Ok(state) => state,
            Err(_) => return Err(self.timeout("connect")),
        };
        if let Some(found) = self.current() {
            return Ok(found);
        }
        if let Some(at) = state.next_attempt {
            if at > deadline {
                return Err(self.timeout("connect"));
            }
            tokio::time::sleep_until(at).await;
        }
        let (closed, push) = closed_flag();
        match self.inner.connector.open(Role::Command, None, push).await {
            Ok(opened) => {
                state.generation += 1;
                state.failures = 0;
                state.next_attempt = None;
                let conn = opened.conn.clone();
                *self.inner.live.lock().expect("command connection lock") =
                    Some(Live { generation: state.generation, conn: opened.conn, closed, _permit: opened.permit });
                if state.generation > 1 {
                    tracing::info!(name = %opened.name, "redis command connection re-established");
                }
                Ok((state.generation, conn))
            }
            Err(e) => {
                state.failures += 1;
                state.next_attempt = Some(Instant::now() + reconnect_delay(state.failures));
                Err(e)
            }
        }
    }

    /// Drops the socket now; with the connector closed, no call opens another.
    pub(crate) fn close(&self) {
        self.inner.live.lock().expect("command connection lock").take();
    }

    /// Forgets the connection of `generation` so the next call reconnects; releases its permit.
    fn drop_connection(&self, generation: u64) {
        let mut live = self.inner.live.lock().expect("command connection lock");
        if live.as_ref().is_some_and(|l| l.generation == generation) {
            *live = None;
        }
    }

    fn timeout(&self, what: &'static str) -> Error {
        self.inner.connector.budget().counters(Role::Command).timed_out();
        let after = match what {
            "connect" => self.inner.connector.config.connect_timeout,
            _ => self.command_timeout(),
        };
        Error::Timeout { role: Role::Command, what, after }
    }

    async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let connect_deadline = Instant::now() + self.inner.connector.config.connect_timeout;
        let (generation, conn) = self.connection(connect_deadline).await?;
        let counters = self.inner.connector.budget().counters(Role::Command);
        let _in_use = counters.begin_use();
        match tokio::time::timeout(self.command_timeout(), f(conn)).await {
            Ok(Ok(value)) => {
                self.inner.consecutive_timeouts.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(e)) => {
                let err = Error::redis(Role::Command, e);
                if err.is_connection_error() {
                    self.drop_connection(generation);
                }
                if err.is_timeout() {
                    counters.timed_out();
                }
                Err(err)
            }
            Err(_) => {
                let in_a_row = self.inner.consecutive_timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                if in_a_row >= TIMEOUTS_BEFORE_RECONNECT {
                    tracing::warn!(in_a_row, "redis command connection keeps timing out; replacing it");
                    self.inner.consecutive_timeouts.store(0, Ordering::Relaxed);
                    self.drop_connection(generation);
                }
                Err(self.timeout("command"))
            }
        }
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T> {
        self.run(|mut conn| async move { cmd.query_async(&mut conn).await }).await
    }

    /// Runs a pipeline (atomic when built with `.atomic()`).
    pub async fn query_pipeline<T: FromRedisValue + Send>(&self, pipe: &Pipeline) -> Result<T> {
        self.run(|mut conn| async move { pipe.query_async(&mut conn).await }).await
    }

    /// Opens the connection now if it is not open, and proves it answers.
    pub async fn ping(&self) -> Result<()> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong != "PONG" {
            return Err(Error::Protocol { script: "PING", detail: pong });
        }
        Ok(())
    }
}
