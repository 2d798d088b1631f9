//! The pool of dedicated connections for blocking pops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::FromRedisValue;
use redis::aio::MultiplexedConnection;

use crate::connection::budget::Permit;
use crate::connection::connector::{Connector, closed_flag};
use crate::connection::role::Role;
use crate::error::{Error, Result};

/// Redis's blocking commands: only this module sends them, each on a connection of its own.
/// `tooling::Raw` refuses them on the shared command connection.
pub(crate) const BLOCKING_COMMANDS: &[&str] =
    &["BLMOVE", "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP"];

/// How much longer than the block time a blocking call may take before the watchdog decides the
/// socket is dead (a blocking command re-sent after a reconnect may never return) and drops it.
pub const BLOCK_MARGIN: Duration = Duration::from_millis(1_000);

/// First pause before `CLIENT UNBLOCK` is sent again when it found the pop not blocked; it
/// doubles up to [`UNBLOCK_RETRY_MAX`].
const UNBLOCK_RETRY_FIRST: Duration = Duration::from_millis(2);
/// Longest pause between two `CLIENT UNBLOCK`s for one pop.
const UNBLOCK_RETRY_MAX: Duration = Duration::from_millis(100);

/// One blocking connection. It has no response timeout in the driver: every call on it goes
/// through [`BlockingPool::block`], whose watchdog is the block time plus [`BLOCK_MARGIN`].
pub(crate) struct BlockingConn {
    conn: MultiplexedConnection,
    name: String,
    current_name: String,
    /// `CLIENT ID`, so a blocked call can be ended with `CLIENT UNBLOCK` (None when `CLIENT` is
    /// refused).
    client_id: Option<u64>,
    broken: bool,
    closed: Arc<AtomicBool>,
    _permit: Permit,
}

pub(crate) struct Manager {
    connector: Arc<Connector>,
}

impl bb8::ManageConnection for Manager {
    type Connection = BlockingConn;
    type Error = Error;

    async fn connect(&self) -> Result<BlockingConn> {
        let (closed, push) = closed_flag();
        let mut opened = self.connector.open(Role::Blocking, None, push).await?;
        let timeout = self.connector.config.command_timeout;
        let client_id =
            match tokio::time::timeout(timeout, redis::cmd("CLIENT").arg("ID").query_async(&mut opened.conn)).await {
                Ok(Ok(id)) => Some(id),
                _ => None,
            };
        Ok(BlockingConn {
            client_id,
            conn: opened.conn,
            current_name: opened.name.clone(),
            name: opened.name,
            broken: false,
            closed,
            _permit: opened.permit,
        })
    }

    async fn is_valid(&self, conn: &mut BlockingConn) -> Result<()> {
        let timeout = self.connector.config.command_timeout;
        match tokio::time::timeout(timeout, redis::cmd("PING").query_async::<()>(&mut conn.conn)).await {
            Ok(result) => result.map_err(|e| Error::redis(Role::Blocking, e)),
            Err(_) => Err(Error::Timeout { role: Role::Blocking, what: "command", after: timeout }),
        }
    }

    fn has_broken(&self, conn: &mut BlockingConn) -> bool {
        conn.broken || conn.closed.load(Ordering::Acquire) || self.connector.is_closed()
    }
}

/// The [`Role::Blocking`] pool. Cheap to clone.
#[derive(Clone)]
pub struct BlockingPool {
    pool: bb8::Pool<Manager>,
    connector: Arc<Connector>,
}

impl BlockingPool {
    pub(crate) fn new(connector: Arc<Connector>, size: usize) -> Self {
        let pool = bb8::Pool::builder()
            .max_size(size as u32)
            .min_idle(None)
            .test_on_check_out(false)
            .connection_timeout(connector.config.connect_timeout)
            .retry_connection(true)
            .build_unchecked(Manager { connector: connector.clone() });
        BlockingPool { pool, connector }
    }

    /// Runs one blocking command that blocks for at most `block` on the server. The call is
    /// abandoned, and its connection dropped, at `block` + [`BLOCK_MARGIN`].
    pub async fn block<T: FromRedisValue + Send>(&self, cmd: &redis::Cmd, block: Duration) -> Result<T> {
        self.block_as(cmd, block, None).await
    }

    /// Like [`BlockingPool::block`], with the connection renamed `<label>:<its name>` first
    /// (once per label change). Workers pass `<prefix>:<base64(queue)>` so Bull's
    /// `getWorkers()` sees them.
    pub async fn block_as<T: FromRedisValue + Send>(
        &self,
        cmd: &redis::Cmd,
        block: Duration,
        label: Option<&str>,
    ) -> Result<T> {
        let mut conn = self.checkout(label).await?;
        let counters = self.connector.budget().counters(Role::Blocking);
        let _in_use = counters.begin_use();
        let watchdog = block + BLOCK_MARGIN;
        // If this future is dropped mid-call (a worker closing), the server may still pop an
        // element for us later: the connection must then be closed, not reused.
        conn.broken = true;
        let result = tokio::time::timeout(watchdog, cmd.query_async::<T>(&mut conn.conn)).await;
        conn.broken = false;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let err = Error::redis(Role::Blocking, e);
                if err.is_connection_error() {
                    conn.broken = true;
                }
                Err(err)
            }
            Err(_) => {
                tracing::warn!(name = %conn.name, after_ms = watchdog.as_millis() as u64, "blocking call did not return; dropping its connection");
                conn.broken = true;
                counters.timed_out();
                Err(Error::Timeout { role: Role::Blocking, what: "command", after: watchdog })
            }
        }
    }

    /// Drops the idle connections now; those lent out are dropped when returned (the closed
    /// connector marks them broken).
    pub(crate) async fn close(&self) {
        while self.pool.state().idle_connections > 0 {
            match tokio::time::timeout(std::time::Duration::from_millis(100), self.pool.get()).await {
                Ok(Ok(mut conn)) => conn.broken = true,
                _ => break,
            }
        }
    }

    /// A connection from the pool, renamed `<label>:<its name>` when a label is given.
    async fn checkout(&self, label: Option<&str>) -> Result<bb8::PooledConnection<'_, Manager>> {
        if self.connector.is_closed() {
            return Err(Error::Closed);
        }
        let counters = self.connector.budget().counters(Role::Blocking);
        let state = self.pool.state();
        if state.idle_connections == 0 && state.connections as usize >= self.connector.budget().stats().blocking.planned
        {
            counters.waited();
        }
        let timed_out = || {
            counters.timed_out();
            Error::Timeout { role: Role::Blocking, what: "connect", after: self.connector.config.connect_timeout }
        };
        let mut conn = loop {
            let mut conn = self.pool.get().await.map_err(|e| match e {
                bb8::RunError::User(e) => e,
                bb8::RunError::TimedOut => timed_out(),
            })?;
            // An idle connection the server closed meanwhile goes back broken; take another.
            if conn.closed.load(Ordering::Acquire) {
                conn.broken = true;
                continue;
            }
            break conn;
        };
        if let Some(label) = label {
            // tidy: not a key (a connection name, `<label>:<service>:blocking:<n>`)
            let wanted = format!("{label}:{}", conn.name);
            if conn.current_name != wanted {
                self.connector.set_name(&mut conn.conn, &wanted).await;
                conn.current_name = wanted;
            }
        }
        Ok(conn)
    }

    /// [`BlockingPool::blmove_as`] that ends early once `interrupt` resolves, without losing an
    /// element: the blocked call is ended with `CLIENT UNBLOCK` (sent on `command`), so it
    /// either returns what it already popped or nothing. An `interrupt` that has already resolved
    /// sends no pop at all. Where `CLIENT` is refused the call is abandoned and its connection
    /// dropped; an element popped in that instant stays in `destination` for the stalled check.
    pub async fn blmove_interruptible(
        &self,
        source: &str,
        destination: &str,
        block: Duration,
        label: Option<&str>,
        interrupt: impl Future<Output = ()>,
        command: &crate::connection::command::CommandConnection,
    ) -> Result<Option<String>> {
        let mut interrupt = std::pin::pin!(interrupt);
        tokio::select! {
            biased;
            () = &mut interrupt => return Ok(None),
            () = std::future::ready(()) => {}
        }
        let mut conn = self.checkout(label).await?;
        let counters = self.connector.budget().counters(Role::Blocking);
        let _in_use = counters.begin_use();
        let watchdog = block + BLOCK_MARGIN;
        let client_id = conn.client_id;
        let mut cmd = redis::cmd("BLMOVE");
        cmd.arg(source).arg(destination).arg("RIGHT").arg("LEFT").arg(block.as_secs_f64());
        conn.broken = true;
        let result = {
            let call = tokio::time::timeout(watchdog, cmd.query_async::<Option<String>>(&mut conn.conn));
            tokio::pin!(call);
            // The call is polled first, so the pop is on its way before any UNBLOCK.
            tokio::select! {
                biased;
                result = &mut call => result,
                () = &mut interrupt => match client_id {
                    Some(id) => unblock(command, id, call).await,
                    // The connection stays marked broken, so it is dropped with the call.
                    None => return Ok(None),
                },
            }
        };
        conn.broken = false;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let err = Error::redis(Role::Blocking, e);
                conn.broken = err.is_connection_error();
                Err(err)
            }
            Err(_) => {
                conn.broken = true;
                counters.timed_out();
                Err(Error::Timeout { role: Role::Blocking, what: "command", after: watchdog })
            }
        }
    }

    /// `BLMOVE source destination RIGHT LEFT block`: Bull's right-pop-left-push, blocking.
    pub async fn blmove(&self, source: &str, destination: &str, block: Duration) -> Result<Option<String>> {
        self.blmove_as(source, destination, block, None).await
    }

    /// [`BlockingPool::blmove`] on a connection labelled as in [`BlockingPool::block_as`].
    pub async fn blmove_as(
        &self,
        source: &str,
        destination: &str,
        block: Duration,
        label: Option<&str>,
    ) -> Result<Option<String>> {
        let mut cmd = redis::cmd("BLMOVE");
        cmd.arg(source).arg(destination).arg("RIGHT").arg("LEFT").arg(block.as_secs_f64());
        self.block_as(&cmd, block, label).await
    }
}

/// Ends the pending pop of connection `client_id` and returns what the pop returns.
///
/// `CLIENT UNBLOCK` travels on another connection than the pop, so it can reach the server
/// before the pop does, or just after the pop returned; either way it reports 0 and changes
/// nothing. It is therefore sent again, at growing intervals, until the pop returns: a stop never
/// waits out the block time, and a pop that has moved an element still returns it. A late
/// UNBLOCK can at worst end a later pop on the same connection early, which returns nothing.
async fn unblock<T>(
    command: &crate::connection::command::CommandConnection,
    client_id: u64,
    mut call: std::pin::Pin<&mut impl Future<Output = T>>,
) -> T {
    let mut pause = UNBLOCK_RETRY_FIRST;
    let mut warned = false;
    loop {
        let mut unblock = redis::cmd("CLIENT");
        unblock.arg("UNBLOCK").arg(client_id);
        tokio::select! {
            biased;
            result = &mut call => return result,
            reply = command.query::<i64>(&unblock) => match reply {
                // Unblocked: the pop returns now.
                Ok(1) => return call.await,
                Ok(_) => {}
                Err(e) if e.is_retryable() => {
                    if !warned {
                        tracing::warn!(error = %e, "CLIENT UNBLOCK failed; trying again until the blocking pop ends");
                        warned = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "CLIENT UNBLOCK refused; waiting for the blocking pop to end");
                    return call.await;
                }
            },
        }
        tokio::select! {
            biased;
            result = &mut call => return result,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(UNBLOCK_RETRY_MAX);
    }
}
