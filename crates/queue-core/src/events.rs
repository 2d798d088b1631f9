//! Bull's global events, typed, for any number of queues over the process's one subscriber
//! connection; and Bull's `job.finished()`, which waits for one job's outcome.
//!
//! Every Bull process (and ours) publishes what happens to a queue's jobs on channels named after
//! the queue: `P:Q:completed`, `P:Q:active@<token>` and so on (BULL-PROTOCOL.md §4).
//! [`QueueEvents`] subscribes to them on [`Connections::subscriber`] and turns each message into
//! a [`QueueEvent`], the way Bull's `queue.on('global:…')` listeners see them.
//!
//! Pub/sub is lossy. Messages published while the subscriber reconnects are gone, and so are
//! messages a slow reader lets the shared buffer overwrite. Both gaps are reported
//! ([`QueueEvent::Reconnected`], [`QueueEvent::Lagged`]), so a reader can re-read the state it
//! cares about instead of trusting a picture built from messages alone.
//!
//! [`wait_until_finished`] treats messages the same way: as wake-ups. It also polls the job's
//! state every [`FINISHED_WATCHDOG`], so a lost message delays it but never hangs it.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, MissedTickBehavior};

use crate::bull::job::JobState;
use crate::bull::keys::{EventChannel as Kind, QueueKeys};
use crate::connection::role::Role;
use crate::connection::subscriber::{PubSubMessage, Subscriber, SubscriberEvent};
use crate::connections::Connections;
use crate::error::{Error, Result};
use crate::queue::QueueView;

/// How often [`wait_until_finished`] re-reads the job's state besides listening for its
/// `completed`/`failed` message: the longest a lost message can delay it. Bull's
/// `FINISHED_WATCHDOG` is 5 s; one state read per second per waiter is cheap, and it keeps a
/// lost message from being noticed only seconds later.
pub const FINISHED_WATCHDOG: Duration = Duration::from_secs(1);

/// One of Bull's global events, or a gap in them.
///
/// `queue` is the queue's name (the prefix is the one its [`QueueView`] was made with).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum QueueEvent {
    /// A job was added or moved to the waiting list (`P:Q:waiting@<token>`; Bull's
    /// `global:waiting`). Delayed jobs are not waiting yet; see [`QueueEvent::Delayed`].
    Waiting {
        /// The queue's name.
        queue: String,
        /// The job.
        job_id: String,
    },
    /// A worker took a job (`P:Q:active@<token>`).
    Active {
        /// The queue's name.
        queue: String,
        /// The job.
        job_id: String,
    },
    /// A job reported progress (`P:Q:progress`).
    Progress {
        /// The queue's name.
        queue: String,
        /// The job.
        job_id: String,
        /// The progress, any JSON (Bull's workers usually send a number).
        progress: Value,
    },
    /// A job completed (`P:Q:completed`).
    Completed {
        /// The queue's name.
        queue: String,
        /// The job.
        job_id: String,
        /// What the handler returned: `null` when it returned nothing, the raw text as a JSON
        /// string when the published value is not JSON.
        return_value: Value,
    },
    /// A job failed for good: its last attempt failed, or it stalled too often (`P:Q:failed`).
    /// Attempts that will be retried publish nothing.
    Failed {
        /// The queue's name.
        queue: String,
        /// The job.
        job_id: String,
        /// The error message of the last attempt.
        reason: String,
    },
    /// A stalled job (its worker stopped renewing the lock) was moved back to waiting
    /// (`P:Q:stalled@`).
    Stalled {
        /// The queue's name.
        queue: String,
        /// The job.
        job_id: String,
    },
    /// The delayed set changed (`P:Q:delayed`): a delayed job was added, or a job is waiting
    /// for its retry back-off. Bull does not say which job.
    Delayed {
        /// The queue's name.
        queue: String,
        /// When the job it announces is due, ms since the Unix epoch (rounded up).
        due_ms: u64,
    },
    /// The queue was paused for every worker (`P:Q:paused`).
    Paused {
        /// The queue's name.
        queue: String,
    },
    /// The queue was resumed (`P:Q:resumed`).
    Resumed {
        /// The queue's name.
        queue: String,
    },
    /// A worker found the waiting list empty (`P:Q:drained`). Our workers publish it; Bull
    /// 4.16.5's workers subscribe to it but never publish it.
    Drained {
        /// The queue's name.
        queue: String,
    },
    /// The subscriber connection was lost and is back. Messages published meanwhile are gone:
    /// re-read whatever state matters.
    Reconnected,
    /// This reader fell behind and `missed` messages of the process's subscriber (of any queue)
    /// were dropped. As after [`QueueEvent::Reconnected`], re-read whatever state matters.
    Lagged {
        /// How many messages were dropped.
        missed: u64,
    },
}

impl QueueEvent {
    /// The queue the event is about; `None` for the gaps.
    pub fn queue(&self) -> Option<&str> {
        match self {
            QueueEvent::Waiting { queue, .. }
            | QueueEvent::Active { queue, .. }
            | QueueEvent::Progress { queue, .. }
            | QueueEvent::Completed { queue, .. }
            | QueueEvent::Failed { queue, .. }
            | QueueEvent::Stalled { queue, .. }
            | QueueEvent::Delayed { queue, .. }
            | QueueEvent::Paused { queue }
            | QueueEvent::Resumed { queue }
            | QueueEvent::Drained { queue } => Some(queue),
            QueueEvent::Reconnected | QueueEvent::Lagged { .. } => None,
        }
    }

    /// The job the event is about, for the events Bull gives a job id.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            QueueEvent::Waiting { job_id, .. }
            | QueueEvent::Active { job_id, .. }
            | QueueEvent::Progress { job_id, .. }
            | QueueEvent::Completed { job_id, .. }
            | QueueEvent::Failed { job_id, .. }
            | QueueEvent::Stalled { job_id, .. } => Some(job_id),
            _ => None,
        }
    }

    /// Whether messages may have been lost just before this event ([`QueueEvent::Reconnected`]
    /// or [`QueueEvent::Lagged`]).
    pub fn is_gap(&self) -> bool {
        matches!(self, QueueEvent::Reconnected | QueueEvent::Lagged { .. })
    }
}

/// A stream of [`QueueEvent`]s of some queues, read from the process's one subscriber
/// connection. Any number of `QueueEvents` share that connection.
///
/// Read it steadily: every reader of the subscriber shares one bounded buffer, and a reader that
/// falls too far behind gets [`QueueEvent::Lagged`] instead of the messages it missed.
#[derive(Debug)]
pub struct QueueEvents {
    receiver: broadcast::Receiver<SubscriberEvent>,
    routes: Routes,
}

impl QueueEvents {
    /// Subscribes to every global event of `queues` (no queue is fine: then only the gaps are
    /// seen). Fails with [`Error::Config`] when the connection plan has no subscriber.
    pub async fn new(connections: &Connections, queues: &[&QueueView]) -> Result<Self> {
        Self::subscribe(subscriber_of(connections)?, queues, &Kind::ALL).await
    }

    async fn subscribe(subscriber: &Subscriber, queues: &[&QueueView], kinds: &[Kind]) -> Result<Self> {
        // The receiver exists before the first SUBSCRIBE, so whatever is published once a
        // subscription is confirmed reaches it.
        let receiver = subscriber.events();
        let mut routes = Routes::default();
        for queue in queues {
            for &kind in kinds {
                match routes.add(queue.keys(), kind) {
                    Subscription::Channel(channel) => subscriber.subscribe(&channel).await?,
                    Subscription::Pattern(pattern) => subscriber.psubscribe(&pattern).await?,
                }
            }
        }
        Ok(QueueEvents { receiver, routes })
    }

    /// The next event of one of the queues. Messages of other queues and channels, and messages
    /// that do not parse, are skipped. Returns `None` once the subscriber is gone (every handle
    /// of the process's [`Connections`] was dropped).
    ///
    /// Cancel-safe: dropping the future loses nothing, so it can be used in `tokio::select!`.
    pub async fn next(&mut self) -> Option<QueueEvent> {
        loop {
            match self.receiver.recv().await {
                Ok(SubscriberEvent::Message(message)) => {
                    if let Some(event) = self.routes.route(&message) {
                        return Some(event);
                    }
                }
                Ok(SubscriberEvent::Reconnected) => return Some(QueueEvent::Reconnected),
                Err(RecvError::Lagged(missed)) => return Some(QueueEvent::Lagged { missed }),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// Waits for a job to finish, like Bull's `job.finished()`: `Ok(Ok(return value))` once it
/// completed, `Ok(Err(failed reason))` once it failed for good. A job that had already finished
/// resolves at once.
///
/// The job's `completed`/`failed` message only wakes the wait up; the job's state is also read
/// right after subscribing and then every [`FINISHED_WATCHDOG`], so a lost message costs at most
/// that long. Fails with [`Error::JobNotFound`] when the job does not exist at the first read, or
/// disappears (removed, or completed with `removeOnComplete` while its message was lost) and
/// stays missing for two reads in a row; Bull would wait forever there. With `timeout`, gives up
/// with [`Error::Timeout`] (`role` subscriber, `what` `"wait"`) after that long in all. Fails
/// with [`Error::Config`] when the connection plan has no subscriber.
///
/// Failed reads after the first are logged and retried at the next tick when they are
/// [retryable](Error::is_retryable), so a Redis outage makes it wait longer, not fail.
pub async fn wait_until_finished(
    queue: &QueueView,
    connections: &Connections,
    job_id: &str,
    timeout: Option<Duration>,
) -> Result<Result<Value, String>> {
    let subscriber = subscriber_of(connections)?;
    let wait = wait(queue, subscriber, job_id);
    match timeout {
        None => wait.await,
        Some(after) => tokio::time::timeout(after, wait).await.unwrap_or(Err(Error::Timeout {
            role: Role::Subscriber,
            what: "wait",
            after,
        })),
    }
}

async fn wait(queue: &QueueView, subscriber: &Subscriber, id: &str) -> Result<Result<Value, String>> {
    let mut events = QueueEvents::subscribe(subscriber, &[queue], &[Kind::Completed, Kind::Failed]).await?;
    match check(queue, id).await? {
        Check::Done(outcome) => return Ok(outcome),
        Check::Pending => {}
        Check::Missing => {
            // Finished and removed (removeOnComplete) after we subscribed: its message may be
            // here already.
            while let Ok(event) = events.receiver.try_recv() {
                if let SubscriberEvent::Message(message) = event
                    && let Some(outcome) = events.routes.route(&message).and_then(|e| outcome_of(e, id))
                {
                    return Ok(outcome);
                }
            }
            return Err(Error::JobNotFound(id.to_owned()));
        }
    }
    let mut watchdog = tokio::time::interval_at(Instant::now() + FINISHED_WATCHDOG, FINISHED_WATCHDOG);
    watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut listening = true;
    let mut missing_before = false;
    loop {
        tokio::select! {
            event = events.next(), if listening => match event {
                Some(event) if event.is_gap() => {}
                Some(event) => match outcome_of(event, id) {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                },
                None => {
                    // The subscriber is gone; the watchdog alone carries on.
                    listening = false;
                    continue;
                }
            },
            _ = watchdog.tick() => {}
        }
        match check(queue, id).await {
            Ok(Check::Done(outcome)) => return Ok(outcome),
            Ok(Check::Pending) => missing_before = false,
            // Missing twice in a row: a message in flight when the job vanished had a whole
            // watchdog period to arrive.
            Ok(Check::Missing) if missing_before => return Err(Error::JobNotFound(id.to_owned())),
            Ok(Check::Missing) => missing_before = true,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, queue = queue.name(), job = id, "cannot read job state; retrying");
            }
            Err(e) => return Err(e),
        }
    }
}

fn outcome_of(event: QueueEvent, id: &str) -> Option<Result<Value, String>> {
    match event {
        QueueEvent::Completed { job_id, return_value, .. } if job_id == id => Some(Ok(return_value)),
        QueueEvent::Failed { job_id, reason, .. } if job_id == id => Some(Err(reason)),
        _ => None,
    }
}

enum Check {
    Missing,
    Pending,
    Done(Result<Value, String>),
}

async fn check(queue: &QueueView, id: &str) -> Result<Check> {
    let state = match queue.get_job_state(id).await? {
        None => return Ok(Check::Missing),
        Some(state @ (JobState::Completed | JobState::Failed)) => state,
        Some(_) => return Ok(Check::Pending),
    };
    let Some(job) = queue.get_job(id).await? else { return Ok(Check::Missing) };
    Ok(Check::Done(match state {
        JobState::Completed => Ok(job.returnvalue.unwrap_or(Value::Null)),
        _ => Err(job.failed_reason.unwrap_or_default()),
    }))
}

fn subscriber_of(connections: &Connections) -> Result<&Subscriber> {
    connections.subscriber().ok_or_else(|| {
        Error::config("subscriber", "events need the subscriber connection: build Connections with .subscriber(true)")
    })
}

enum Subscription {
    Channel(String),
    Pattern(String),
}

#[derive(Debug)]
struct Route {
    queue: String,
    kind: Kind,
    /// For patterns: the literal channel name before the token.
    channel_prefix: String,
}

/// Which queue and kind each subscribed channel or pattern belongs to.
#[derive(Debug, Default)]
struct Routes {
    channels: HashMap<String, Route>,
    patterns: HashMap<String, Route>,
}

impl Routes {
    /// Records the channel or pattern of `kind` for the queue of `keys` and returns it.
    ///
    /// The names come from `QueueKeys::event_channel`/`event_pattern`. A pattern escapes the
    /// glob characters of the prefix and queue name, so queue `a*` does not also match queue
    /// `ab`'s channels.
    fn add(&mut self, keys: &QueueKeys, kind: Kind) -> Subscription {
        let queue = keys.name().to_owned();
        let channel = keys.event_channel(kind);
        if kind.tokenized() {
            let pattern = keys.event_pattern(kind);
            self.patterns.insert(pattern.clone(), Route { queue, kind, channel_prefix: channel });
            Subscription::Pattern(pattern)
        } else {
            self.channels.insert(channel.clone(), Route { queue, kind, channel_prefix: String::new() });
            Subscription::Channel(channel)
        }
    }

    /// The event a message stands for, if it is on one of our channels and parses. A message
    /// is routed by the pattern it matched when it has one, so another subscription of the
    /// process (say a pattern over the whole prefix) cannot make us see a message twice.
    fn route(&self, message: &PubSubMessage) -> Option<QueueEvent> {
        let (route, token) = match &message.pattern {
            None => (self.channels.get(&message.channel)?, None),
            Some(pattern) => {
                let route = self.patterns.get(pattern)?;
                (route, Some(message.channel.strip_prefix(&route.channel_prefix)?))
            }
        };
        let event = parse(&route.queue, route.kind, token, &message.payload);
        if event.is_none() {
            tracing::debug!(channel = %message.channel, payload = %message.payload, "ignoring an unparseable bull event");
        }
        event
    }
}

/// Turns one message into an event, as Bull's listeners read it (queue.js
/// `_setupQueueEventListeners`). `token` is the channel's `@<token>` suffix, for patterns.
fn parse(queue: &str, kind: Kind, token: Option<&str>, payload: &str) -> Option<QueueEvent> {
    let queue = queue.to_owned();
    let job_id = || (!payload.is_empty()).then(|| payload.to_owned());
    Some(match kind {
        // Bull announces `global:waiting` only for channels that carry a token.
        Kind::Waiting if token.is_some_and(|t| !t.is_empty()) => QueueEvent::Waiting { queue, job_id: job_id()? },
        Kind::Waiting => return None,
        Kind::Active => QueueEvent::Active { queue, job_id: job_id()? },
        Kind::Stalled => QueueEvent::Stalled { queue, job_id: job_id()? },
        Kind::Progress => {
            let (job_id, progress) = parse_progress(payload)?;
            QueueEvent::Progress { queue, job_id, progress }
        }
        Kind::Completed => {
            let (job_id, val) = parse_finished(payload)?;
            let return_value = match val {
                None | Some(Value::Null) => Value::Null,
                // Double-encoded: `val` is a string holding the return value's JSON.
                Some(Value::String(text)) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
                Some(other) => other,
            };
            QueueEvent::Completed { queue, job_id, return_value }
        }
        Kind::Failed => {
            let (job_id, val) = parse_finished(payload)?;
            let reason = match val {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text,
                Some(other) => other.to_string(),
            };
            QueueEvent::Failed { queue, job_id, reason }
        }
        Kind::Delayed => {
            // An integer from adds, `score / 4096` (fractional) from retries and promotion.
            let due: f64 = payload.trim().parse().ok()?;
            if !due.is_finite() || due < 0.0 {
                return None;
            }
            QueueEvent::Delayed { queue, due_ms: due.ceil() as u64 }
        }
        Kind::Paused => QueueEvent::Paused { queue },
        Kind::Resumed => QueueEvent::Resumed { queue },
        Kind::Drained => QueueEvent::Drained { queue },
    })
}

/// `{"jobId":<id>,"val":<value>}`, the payload of `completed` and `failed`.
fn parse_finished(payload: &str) -> Option<(String, Option<Value>)> {
    let Value::Object(mut object) = serde_json::from_str(payload).ok()? else { return None };
    Some((job_id_of(&object)?, object.remove("val")))
}

/// `{"jobId":<id>,"progress":<json>}`, or the legacy `<id>,<json>` that Bull still accepts.
fn parse_progress(payload: &str) -> Option<(String, Value)> {
    if let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(payload) {
        let job_id = job_id_of(&object)?;
        return Some((job_id, object.remove("progress").unwrap_or(Value::Null)));
    }
    let (job_id, progress) = payload.split_once(',')?;
    Some((job_id.to_owned(), serde_json::from_str(progress).ok()?))
}

fn job_id_of(object: &Map<String, Value>) -> Option<String> {
    match object.get("jobId")? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bull::keys::escape_glob;

    fn routes(prefix: &str, names: &[&str]) -> Routes {
        let mut routes = Routes::default();
        for name in names {
            for kind in Kind::ALL {
                routes.add(&QueueKeys::new(prefix, name).unwrap(), kind);
            }
        }
        routes
    }

    fn message(channel: &str, pattern: Option<&str>, payload: &str) -> PubSubMessage {
        PubSubMessage { channel: channel.into(), pattern: pattern.map(Into::into), payload: payload.into() }
    }

    fn q(kind: Kind, token: Option<&str>, payload: &str) -> Option<QueueEvent> {
        parse("q", kind, token, payload)
    }

    #[test]
    fn completed_values_are_double_encoded() {
        assert_eq!(
            q(Kind::Completed, None, r#"{"jobId":"7","val":"{\"a\":[1,2]}"}"#),
            Some(QueueEvent::Completed { queue: "q".into(), job_id: "7".into(), return_value: json!({"a": [1, 2]}) })
        );
        // A handler that returned undefined: no `val` at all.
        let none = q(Kind::Completed, None, r#"{"jobId":"7"}"#).unwrap();
        assert!(matches!(none, QueueEvent::Completed { return_value: Value::Null, .. }), "{none:?}");
        let raw = q(Kind::Completed, None, r#"{"jobId":8,"val":"not json"}"#).unwrap();
        assert_eq!(raw.job_id(), Some("8"));
        assert!(matches!(raw, QueueEvent::Completed { return_value: Value::String(s), .. } if s == "not json"));
        assert_eq!(q(Kind::Completed, None, "7"), None);
        assert_eq!(q(Kind::Completed, None, r#"{"val":"1"}"#), None);
    }

    #[test]
    fn failures_carry_the_reason_including_the_stall_failures_hand_built_json() {
        assert_eq!(
            q(Kind::Failed, None, r#"{"jobId":"3","val":"always"}"#),
            Some(QueueEvent::Failed { queue: "q".into(), job_id: "3".into(), reason: "always".into() })
        );
        assert_eq!(
            q(Kind::Failed, None, r#"{"jobId":"4", "val": "job stalled more than maxStalledCount"}"#),
            Some(QueueEvent::Failed {
                queue: "q".into(),
                job_id: "4".into(),
                reason: "job stalled more than maxStalledCount".into()
            })
        );
    }

    #[test]
    fn progress_parses_both_forms() {
        let event =
            |job_id: &str, progress| Some(QueueEvent::Progress { queue: "q".into(), job_id: job_id.into(), progress });
        assert_eq!(q(Kind::Progress, None, r#"{"jobId":"5","progress":50}"#), event("5", json!(50)));
        assert_eq!(q(Kind::Progress, None, r#"{"jobId":"5","progress":{"step":2}}"#), event("5", json!({"step": 2})));
        assert_eq!(q(Kind::Progress, None, r#"6,{"a":1}"#), event("6", json!({"a": 1})));
        assert_eq!(q(Kind::Progress, None, "6,75"), event("6", json!(75)));
        assert_eq!(q(Kind::Progress, None, "6,not json"), None);
        assert_eq!(q(Kind::Progress, None, "nothing"), None);
    }

    #[test]
    fn delayed_times_are_rounded_up() {
        let due = |payload| match q(Kind::Delayed, None, payload) {
            Some(QueueEvent::Delayed { due_ms, .. }) => Some(due_ms),
            _ => None,
        };
        assert_eq!(due("1796028475047"), Some(1_796_028_475_047));
        assert_eq!(due("1796028475047.0005"), Some(1_796_028_475_048));
        assert_eq!(due("soon"), None);
        assert_eq!(due("-1"), None);
    }

    #[test]
    fn waiting_needs_a_token_like_bulls_global_waiting() {
        assert_eq!(
            q(Kind::Waiting, Some("tok"), "9"),
            Some(QueueEvent::Waiting { queue: "q".into(), job_id: "9".into() })
        );
        assert_eq!(q(Kind::Waiting, Some(""), "9"), None);
        // Stalled jobs are announced on `stalled@` with an empty token.
        assert_eq!(
            q(Kind::Stalled, Some(""), "9"),
            Some(QueueEvent::Stalled { queue: "q".into(), job_id: "9".into() })
        );
        assert_eq!(q(Kind::Active, Some("tok"), ""), None);
    }

    #[test]
    fn messages_are_routed_to_their_queue_by_channel_or_pattern() {
        let routes = routes("bull", &["a", "b"]);
        let route = |channel, pattern, payload| routes.route(&message(channel, pattern, payload));
        assert_eq!(route("bull:b:paused", None, "paused"), Some(QueueEvent::Paused { queue: "b".into() }));
        assert_eq!(route("bull:a:resumed", None, "resumed"), Some(QueueEvent::Resumed { queue: "a".into() }));
        assert_eq!(route("bull:a:drained", None, ""), Some(QueueEvent::Drained { queue: "a".into() }));
        assert_eq!(
            route("bull:b:active@tok", Some("bull:b:active@*"), "12"),
            Some(QueueEvent::Active { queue: "b".into(), job_id: "12".into() })
        );
        // Not ours: another queue, a channel reached through someone else's pattern, a key-like
        // channel we never subscribed to.
        assert_eq!(route("bull:c:paused", None, "paused"), None);
        assert_eq!(route("bull:a:paused", Some("bull:*"), "paused"), None);
        assert_eq!(route("bull:a:active@tok", None, "12"), None);
    }

    #[test]
    fn patterns_escape_glob_characters() {
        assert_eq!(escape_glob("p:a*[x]?\\:active@"), "p:a\\*\\[x\\]\\?\\\\:active@");
        let mut routes = Routes::default();
        let Subscription::Pattern(pattern) = routes.add(&QueueKeys::new("p", "a*").unwrap(), Kind::Active) else {
            panic!("active is a pattern subscription");
        };
        assert_eq!(pattern, "p:a\\*:active@*");
        assert_eq!(
            routes.route(&message("p:a*:active@t", Some(&pattern), "1")),
            Some(QueueEvent::Active { queue: "a*".into(), job_id: "1".into() })
        );
    }

    #[test]
    fn accessors_name_the_queue_and_job() {
        let event = QueueEvent::Failed { queue: "q".into(), job_id: "1".into(), reason: String::new() };
        assert_eq!((event.queue(), event.job_id(), event.is_gap()), (Some("q"), Some("1"), false));
        let delayed = QueueEvent::Delayed { queue: "q".into(), due_ms: 1 };
        assert_eq!((delayed.queue(), delayed.job_id()), (Some("q"), None));
        assert!(QueueEvent::Reconnected.is_gap() && QueueEvent::Lagged { missed: 3 }.is_gap());
        assert_eq!(QueueEvent::Lagged { missed: 3 }.queue(), None);
    }
}
