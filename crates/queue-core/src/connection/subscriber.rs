//! The process's one pub/sub connection, shared by every queue, resubscribing after reconnects.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::connection::connector::{Connector, push_config, reconnect_delay};
use crate::connection::role::Role;
use crate::error::{Error, Result};

/// How often an idle subscriber connection is PINGed, so a socket that stopped answering without
/// a reset is noticed and replaced (a subscriber never writes otherwise).
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Capacity of the broadcast buffer; a receiver that lags further loses messages, which is
/// acceptable because pub/sub messages are hints (a lagging receiver gets `RecvError::Lagged` and must re-read state).
const EVENT_BUFFER: usize = 4096;

/// One pub/sub message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubSubMessage {
    /// The channel it was published on.
    pub channel: String,
    /// The pattern it matched, for `PSUBSCRIBE`d patterns.
    pub pattern: Option<String>,
    /// The payload, as text.
    pub payload: String,
}

/// What a subscriber's receivers see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriberEvent {
    /// A message on a subscribed channel or pattern.
    Message(PubSubMessage),
    /// The connection was lost and is back, resubscribed. Messages published meanwhile are gone:
    /// whoever relies on them must re-read the state they hint at.
    Reconnected,
}

#[derive(Default)]
struct Subscriptions {
    channels: BTreeSet<String>,
    patterns: BTreeSet<String>,
}

enum Control {
    Subscribe {
        name: String,
        pattern: bool,
        done: oneshot::Sender<Result<()>>,
    },
    /// Ends the supervisor and drops its connection.
    Close,
}

/// The [`Role::Subscriber`] connection. Cheap to clone.
#[derive(Clone)]
pub struct Subscriber {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Arc<Connector>,
    subscriptions: Arc<Mutex<Subscriptions>>,
    events: broadcast::Sender<SubscriberEvent>,
    control: OnceLock<mpsc::UnboundedSender<Control>>,
}

impl Subscriber {
    pub(crate) fn new(connector: Arc<Connector>) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Subscriber {
            inner: Arc::new(Inner { connector, subscriptions: Default::default(), events, control: OnceLock::new() }),
        }
    }

    /// A receiver of every message on every subscription of this process, from now on.
    pub fn events(&self) -> broadcast::Receiver<SubscriberEvent> {
        self.inner.events.subscribe()
    }

    /// `SUBSCRIBE channel`; kept across reconnects.
    pub async fn subscribe(&self, channel: &str) -> Result<()> {
        self.add(channel, false).await
    }

    /// `PSUBSCRIBE pattern`; kept across reconnects.
    pub async fn psubscribe(&self, pattern: &str) -> Result<()> {
        self.add(pattern, true).await
    }

    /// Ends the supervising task, which drops the connection (and its permit).
    pub(crate) fn close(&self) {
        if let Some(control) = self.inner.control.get() {
            let _ = control.send(Control::Close);
        }
    }

    async fn add(&self, name: &str, pattern: bool) -> Result<()> {
        if self.inner.connector.is_closed() {
            return Err(Error::Closed);
        }
        {
            let mut subs = self.inner.subscriptions.lock().expect("subscriptions lock");
            let set = if pattern { &mut subs.patterns } else { &mut subs.channels };
            if !set.insert(name.to_owned()) {
                return Ok(());
            }
        }
        let control = self.inner.control.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(supervise(
                self.inner.connector.clone(),
                self.inner.subscriptions.clone(),
                self.inner.events.clone(),
                rx,
            ));
            tx
        });
        let (done, wait) = oneshot::channel();
        control
            .send(Control::Subscribe { name: name.to_owned(), pattern, done })
            .map_err(|_| Error::Protocol { script: "SUBSCRIBE", detail: "subscriber task stopped".into() })?;
        let timeout = self.inner.connector.config.command_timeout + self.inner.connector.config.connect_timeout;
        // On timeout the subscription stays recorded and is applied when the connection returns.
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Protocol { script: "SUBSCRIBE", detail: "subscriber task stopped".into() }),
            Err(_) => Err(Error::Timeout { role: Role::Subscriber, what: "command", after: timeout }),
        }
    }
}

async fn supervise(
    connector: Arc<Connector>,
    subscriptions: Arc<Mutex<Subscriptions>>,
    events: broadcast::Sender<SubscriberEvent>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut failures = 0u32;
    let mut connected_before = false;
    // Subscriptions asked for while disconnected; answered once applied.
    let mut pending: Vec<oneshot::Sender<Result<()>>> = Vec::new();
    loop {
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let opened =
            connector.open(Role::Subscriber, Some(connector.config.command_timeout), push_config(push_tx)).await;
        let conn = match opened {
            Ok(opened) => {
                // The permit lives as long as this connection's session below.
                let permit = opened.permit;
                let conn = opened.conn;
                match resubscribe(conn.clone(), &subscriptions).await {
                    Ok(()) => {
                        failures = 0;
                        (conn, permit)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "redis subscriber could not resubscribe");
                        drop((conn, permit));
                        failures += 1;
                        tokio::time::sleep(reconnect_delay(failures)).await;
                        continue;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "redis subscriber connection failed");
                let delay = reconnect_delay(failures);
                // Keep serving control messages while waiting, so callers see errors early.
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        ctl = control.recv() => match ctl {
                            None | Some(Control::Close) => return,
                            Some(Control::Subscribe { done, .. }) => pending.push(done),
                        },
                    }
                }
                continue;
            }
        };
        for done in pending.drain(..) {
            let _ = done.send(Ok(()));
        }
        if connected_before {
            tracing::info!("redis subscriber reconnected and resubscribed");
            let _ = events.send(SubscriberEvent::Reconnected);
        }
        connected_before = true;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    let timeout = connector.config.command_timeout;
                    let mut probe = conn.0.clone();
                    let answered = tokio::time::timeout(timeout, redis::cmd("PING").query_async::<()>(&mut probe)).await;
                    if !matches!(answered, Ok(Ok(()))) {
                        tracing::warn!("redis subscriber connection does not answer PING; replacing it");
                        break;
                    }
                },
                push = pushes.recv() => match push {
                    None => break,
                    Some(push) => match push.kind {
                        PushKind::Disconnection => break,
                        PushKind::Message | PushKind::PMessage | PushKind::SMessage => {
                            if let Some(message) = parse_message(push) {
                                let _ = events.send(SubscriberEvent::Message(message));
                            }
                        }
                        _ => {}
                    },
                },
                ctl = control.recv() => match ctl {
                    None | Some(Control::Close) => return,
                    Some(Control::Subscribe { name, pattern, done }) => {
                        let result = apply(conn.0.clone(), &name, pattern, connector.config.command_timeout).await;
                        let broken = result.as_ref().is_err_and(|e| e.is_connection_error());
                        let _ = done.send(result);
                        if broken {
                            break;
                        }
                    }
                },
            }
        }
        drop(conn);
        tracing::warn!("redis subscriber connection lost; reconnecting");
    }
}

async fn resubscribe(conn: MultiplexedConnection, subscriptions: &Mutex<Subscriptions>) -> Result<()> {
    let (channels, patterns) = {
        let subs = subscriptions.lock().expect("subscriptions lock");
        (subs.channels.iter().cloned().collect::<Vec<_>>(), subs.patterns.iter().cloned().collect::<Vec<_>>())
    };
    let mut conn = conn;
    if !channels.is_empty() {
        conn.subscribe(&channels).await.map_err(|e| Error::redis(Role::Subscriber, e))?;
    }
    if !patterns.is_empty() {
        conn.psubscribe(&patterns).await.map_err(|e| Error::redis(Role::Subscriber, e))?;
    }
    Ok(())
}

async fn apply(mut conn: MultiplexedConnection, name: &str, pattern: bool, timeout: std::time::Duration) -> Result<()> {
    let call = async { if pattern { conn.psubscribe(name).await } else { conn.subscribe(name).await } };
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| Error::redis(Role::Subscriber, e)),
        Err(_) => Err(Error::Timeout { role: Role::Subscriber, what: "command", after: timeout }),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn parse_message(push: PushInfo) -> Option<PubSubMessage> {
    match (push.kind, push.data.as_slice()) {
        (PushKind::PMessage, [pattern, channel, payload]) => {
            Some(PubSubMessage { channel: text(channel)?, pattern: Some(text(pattern)?), payload: text(payload)? })
        }
        (_, [channel, payload]) => {
            Some(PubSubMessage { channel: text(channel)?, pattern: None, payload: text(payload)? })
        }
        _ => None,
    }
}
