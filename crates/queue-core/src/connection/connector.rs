//! Opening one named connection inside the budget, with a connect timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion};

use crate::connection::budget::{ConnectionBudget, Permit};
use crate::connection::config::RedisConfig;
use crate::connection::role::Role;
use crate::error::{Error, Result};

/// Reconnect backoff: first retry after this long.
pub(crate) const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// Reconnect backoff: never wait longer than this between attempts.
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How long the diagnosis of a failed connect waits for the server's first words.
const REFUSAL_PROBE: Duration = Duration::from_millis(250);

/// Capped exponential backoff with full jitter for attempt `failures` (1 = first failure).
pub(crate) fn reconnect_delay(failures: u32) -> Duration {
    let exp = RECONNECT_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let cap = exp.min(RECONNECT_MAX);
    // Full jitter over the upper half keeps a floor so a flapping server is not hammered.
    let half = cap / 2;
    half + half.mul_f64(fastrand::f64())
}

/// An open connection and the permit that pays for it.
pub(crate) struct Opened {
    pub(crate) conn: MultiplexedConnection,
    pub(crate) permit: Permit,
    pub(crate) name: String,
}

/// Opens connections for one process: same server, same budget, names `<service>:<role>:<n>`.
pub(crate) struct Connector {
    client: Client,
    service: String,
    budget: ConnectionBudget,
    pub(crate) config: RedisConfig,
    sequence: [AtomicU64; 3],
    naming_refused: std::sync::atomic::AtomicBool,
    /// Set by `Connections::close`: nothing is opened any more, and pooled connections are
    /// dropped when returned.
    closed: std::sync::atomic::AtomicBool,
    /// The runtime of the first connect. Later connects run there too, so a connection's driver
    /// task never lands on a runtime that is busy with CPU-bound handlers or shuts down first.
    home: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Connector {
    pub(crate) fn new(config: RedisConfig, service: &str, budget: ConnectionBudget) -> Result<Arc<Self>> {
        install_tls_provider();
        let info = config
            .url
            .expose()
            .into_connection_info()
            .map_err(|e| Error::config("REDIS_URL", format!("{} does not parse: {e}", config.url)))?;
        // RESP3 lets the driver report disconnects through a push sender (Redis 6+).
        let info = info.clone().set_redis_settings(info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3));
        let info = info.set_tcp_settings(tcp_settings());
        let client = match &config.tls_ca {
            // A private CA: trusted instead of the public web roots.
            Some(pem) => {
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                Client::build_with_tls(info, certificates)
                    .map_err(|e| Error::config("REDIS_TLS_CA_FILE", format!("not usable as a CA: {e}")))?
            }
            None => Client::open(info).map_err(|e| Error::config("REDIS_URL", format!("{}: {e}", config.url)))?,
        };
        Ok(Arc::new(Connector {
            client,
            service: service.to_owned(),
            budget,
            config,
            sequence: Default::default(),
            naming_refused: Default::default(),
            closed: Default::default(),
            home: std::sync::OnceLock::new(),
        }))
    }

    /// Refuses every later `open`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn budget(&self) -> &ConnectionBudget {
        &self.budget
    }

    /// Opens one connection of `role`. `response_timeout` is the driver's own limit per reply
    /// (`None` when the caller applies its own). Every connection speaks RESP3 and has a push
    /// sender: the subscriber's receives messages, the others' learn of disconnects.
    pub(crate) async fn open(
        self: &Arc<Self>,
        role: Role,
        response_timeout: Option<Duration>,
        push: Box<dyn FnOnce(AsyncConnectionConfig) -> AsyncConnectionConfig + Send>,
    ) -> Result<Opened> {
        let home = self.home.get_or_init(tokio::runtime::Handle::current);
        if home.id() != tokio::runtime::Handle::current().id() {
            let this = self.clone();
            return home
                .spawn(async move { this.open_here(role, response_timeout, push).await })
                .await
                .map_err(|e| Error::Protocol { script: "connect", detail: e.to_string() })?;
        }
        self.open_here(role, response_timeout, push).await
    }

    async fn open_here(
        &self,
        role: Role,
        response_timeout: Option<Duration>,
        push: Box<dyn FnOnce(AsyncConnectionConfig) -> AsyncConnectionConfig + Send>,
    ) -> Result<Opened> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let permit = self.budget.try_acquire(role)?;
        let timeout = self.config.connect_timeout;
        let mut cfg =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(response_timeout);
        cfg = push(cfg);
        let client = &self.client;
        let counters = self.budget.counters(role);
        let connected = tokio::time::timeout(timeout, client.get_multiplexed_async_connection_with_config(&cfg)).await;
        let mut conn = match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                counters.connect_failed();
                let err = Error::redis(role, self.scrub(e));
                // The server's certificate is not trusted: waiting will not change that, so it is
                // a configuration error (not retried), naming where the trust comes from.
                let text = err.to_string();
                if self.config.url.is_tls() && text.contains("invalid peer certificate") {
                    let var = if self.config.tls_ca.is_some() { "REDIS_TLS_CA_FILE" } else { "REDIS_URL" };
                    return Err(Error::config(var, format!("the Redis server's certificate is not trusted: {text}")));
                }
                if let Some(refused) = self.refusal(role).await {
                    return Err(refused);
                }
                return Err(if err.is_timeout() {
                    Error::Timeout { role, what: "connect", after: timeout }
                } else {
                    err
                });
            }
            Err(_) => {
                counters.connect_failed();
                if let Some(refused) = self.refusal(role).await {
                    return Err(refused);
                }
                return Err(Error::Timeout { role, what: "connect", after: timeout });
            }
        };
        let n = self.sequence[role.index()].fetch_add(1, Ordering::Relaxed);
        // tidy: not a key (a connection name, `<service>:<role>:<n>`)
        let name = format!("{}:{}:{}", self.service, role, n);
        self.set_name(&mut conn, &name).await;
        tracing::debug!(role = %role, name = %name, endpoint = %self.config.url, "redis connection opened");
        Ok(Opened { conn, permit, name })
    }

    /// Why the server refuses connections, when it says so: a Redis whose `maxclients` is full
    /// accepts the TCP connection, writes `-ERR max number of clients reached` and closes it,
    /// which the driver reports as a broken pipe, a reset or a timeout, depending on who was
    /// first. After a failed connect (never on the happy path), one plain TCP connection reads
    /// what the server says first, for [`REFUSAL_PROBE`] at most. Plain TCP only (a TLS server
    /// says nothing before the handshake).
    async fn refusal(&self, role: Role) -> Option<Error> {
        use tokio::io::AsyncReadExt;
        let redis::ConnectionAddr::Tcp(host, port) = self.client.get_connection_info().addr() else {
            return None;
        };
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await.ok()?;
            let mut first = [0u8; 128];
            let n = stream.read(&mut first).await.ok()?;
            Some(String::from_utf8_lossy(&first[..n]).into_owned())
        };
        let said = tokio::time::timeout(REFUSAL_PROBE, probe).await.ok().flatten()?;
        // Only the refusal that waiting can cure; anything else (protected mode's DENIED...)
        // keeps the driver's own error.
        let said = said.strip_prefix('-')?.trim_end();
        said.contains("max number of clients reached").then(|| Error::Refused {
            role,
            reason: format!(
                "{said} (Redis's maxclients is full: raise maxclients, or lower the connections of the \
                 processes that share this server; queuectl connections shows who holds them)"
            ),
        })
    }

    /// A server without `HELLO` (or a proxy that blocks it) echoes the command's arguments,
    /// password included, in its error: never let that text out.
    fn scrub(&self, e: redis::RedisError) -> redis::RedisError {
        let Some(password) = self.client.get_connection_info().redis_settings().password().filter(|p| !p.is_empty())
        else {
            return e;
        };
        let text = e.to_string();
        if !text.contains(password) {
            return e;
        }
        redis::RedisError::from((e.kind(), "connection setup failed", text.replace(password, "***")))
    }

    /// `CLIENT SETNAME`, best effort: managed services may refuse `CLIENT`.
    pub(crate) async fn set_name(&self, conn: &mut MultiplexedConnection, name: &str) {
        if self.naming_refused.load(Ordering::Relaxed) {
            return;
        }
        let cmd = redis::cmd("CLIENT").arg("SETNAME").arg(name).clone();
        match tokio::time::timeout(self.config.command_timeout, cmd.query_async::<()>(conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() != redis::ErrorKind::Io => {
                tracing::warn!(error = %e, "redis refuses CLIENT SETNAME; connections stay unnamed");
                self.naming_refused.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// A flag that turns true when the driver sees the connection close (EOF, reset, `CLIENT KILL`),
/// so the next call reconnects instead of failing on a dead socket.
pub(crate) fn closed_flag() -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Box<dyn FnOnce(AsyncConnectionConfig) -> AsyncConnectionConfig + Send>,
) {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let setter = flag.clone();
    let sender = move |info: redis::PushInfo| {
        if info.kind == redis::PushKind::Disconnection {
            setter.store(true, Ordering::Release);
        }
        Ok::<(), ()>(())
    };
    (flag, push_config(sender))
}

/// Installs a push sender, which also makes the connection speak RESP3.
pub(crate) fn push_config(
    sender: impl AsyncPushSender,
) -> Box<dyn FnOnce(AsyncConnectionConfig) -> AsyncConnectionConfig + Send> {
    Box::new(move |cfg| cfg.set_push_sender(sender))
}

/// Keepalive probes notice a peer that vanished without a reset (a failover to another host, a
/// dropped NAT entry) within about half a minute even on an idle connection, and
/// `TCP_USER_TIMEOUT` bounds how long written data may stay unacknowledged. Without them a dead
/// socket is only noticed after the kernel's retransmission limit, about 15 minutes.
/// `TCP_NODELAY`: every command is a small write that waits for its reply.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    use redis::io::tcp::socket2::TcpKeepalive;
    let keepalive =
        TcpKeepalive::new().with_time(Duration::from_secs(15)).with_interval(Duration::from_secs(5)).with_retries(3);
    let settings = redis::io::tcp::TcpSettings::default().set_nodelay(true).set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(Duration::from_secs(30));
    settings
}

fn install_tls_provider() {
    // rediss:// needs a process-wide rustls crypto provider; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_and_is_capped() {
        for failures in 1..40 {
            let d = reconnect_delay(failures);
            assert!(d <= RECONNECT_MAX, "{d:?}");
            let exp = RECONNECT_MIN.saturating_mul(1u32 << (failures - 1).min(16)).min(RECONNECT_MAX);
            assert!(d >= exp / 2, "{failures}: {d:?} < half of {exp:?}");
        }
        assert!(reconnect_delay(1) <= RECONNECT_MIN);
    }
}
