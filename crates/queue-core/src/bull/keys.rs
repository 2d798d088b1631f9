//! Every Redis key and pub/sub channel name of a Bull queue, built in one place.
//!
//! Layout: `<prefix>:<queue>:<suffix>`, and `<prefix>:<queue>:<jobId>` for a job's hash. The
//! job keys share the queue's namespace with its lists and sets, which is why job ids and queue
//! names are validated here.

use crate::connection::config::validate_prefix;
use crate::error::{Error, Result};

/// The reserved queue name under which processes write their heartbeats:
/// `<prefix>:__hb__:<service>:<instance>`.
pub const HEARTBEAT_NAMESPACE: &str = "__hb__";

/// The key of one process's heartbeat.
pub(crate) fn heartbeat_key(prefix: &str, service: &str, instance: &str) -> String {
    format!("{prefix}:{HEARTBEAT_NAMESPACE}:{service}:{instance}")
}

/// The `SCAN MATCH` pattern of every heartbeat under `prefix`.
pub(crate) fn heartbeat_pattern(prefix: &str) -> String {
    format!("{}:{HEARTBEAT_NAMESPACE}:*", escape_glob(prefix))
}

/// Suffixes Bull uses for a queue's own keys and channels. A custom job id equal to one of them
/// would overwrite a list or set of the queue.
pub const RESERVED_SUFFIXES: &[&str] = &[
    "wait",
    "paused",
    "meta-paused",
    "meta",
    "active",
    "priority",
    "delayed",
    "completed",
    "failed",
    "stalled",
    "stalled-check",
    "limiter",
    "id",
    "repeat",
    "progress",
    "drained",
    "resumed",
    "waiting",
    "duplicated",
    "debounced",
    "events",
    "metrics",
];

/// Refuses queue names Bull would break on.
pub fn validate_queue_name(name: &str) -> Result<()> {
    let refuse = |reason| Err(Error::InvalidQueueName { name: name.to_owned(), reason });
    if name.is_empty() {
        return refuse("must not be empty");
    }
    if name.contains(':') {
        // `bull:a:b:wait` would be both queue `a:b`'s wait list and a key of queue `a`.
        return refuse("must not contain ':' (it would overlap another queue's keys)");
    }
    if name.chars().any(|c| c.is_control()) {
        return refuse("must not contain control characters");
    }
    if name == HEARTBEAT_NAMESPACE {
        return refuse("is reserved for heartbeats");
    }
    Ok(())
}

/// Refuses custom job ids that would collide with a queue's own keys or break Bull's scripts.
pub fn validate_job_id(id: &str) -> Result<()> {
    let refuse = |reason| Err(Error::InvalidJobId { id: id.to_owned(), reason });
    if id.is_empty() {
        // Bull's clean marks list entries with "" before removing them.
        return refuse("must not be empty");
    }
    if RESERVED_SUFFIXES.contains(&id) {
        return refuse("is one of the queue's own key names");
    }
    if id.ends_with(":lock") || id.ends_with(":logs") {
        return refuse("must not end in :lock or :logs (another job's lock or log key)");
    }
    for prefix in ["repeat:", "de:", "limiter:", "metrics:"] {
        if id.starts_with(prefix) {
            return refuse("must not start with repeat:, de:, limiter: or metrics: (Bull's own keys)");
        }
    }
    if id.chars().any(|c| c.is_control()) {
        return refuse("must not contain control characters");
    }
    Ok(())
}

/// Refuses ids that name one of the queue's own keys, for operations on existing jobs (remove,
/// retry, promote, updates): `remove q meta` must not delete the queue's meta hash. Looser than
/// [`validate_job_id`]: Bull's own repeat iteration ids (`repeat:…`) are accepted.
pub fn validate_existing_job_id(id: &str) -> Result<()> {
    let refuse = |reason| Err(Error::InvalidJobId { id: id.to_owned(), reason });
    if id.is_empty() {
        return refuse("must not be empty");
    }
    if RESERVED_SUFFIXES.contains(&id) || id.ends_with(":lock") || id.ends_with(":logs") {
        return refuse("names one of the queue's own keys, not a job");
    }
    for prefix in ["de:", "limiter:", "metrics:", "__hb__"] {
        if id.starts_with(prefix) {
            return refuse("names one of the queue's own keys, not a job");
        }
    }
    Ok(())
}

/// Backslash-escapes the characters Redis glob patterns treat specially (`PSUBSCRIBE`,
/// `SCAN MATCH`), so a prefix or queue name is matched literally.
pub fn escape_glob(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Keys and channels of one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueKeys {
    prefix: String,
    name: String,
    base: String,
}

impl QueueKeys {
    /// Keys for queue `name` under `prefix`, both validated.
    pub fn new(prefix: &str, name: &str) -> Result<Self> {
        validate_prefix(prefix)?;
        validate_queue_name(name)?;
        Ok(QueueKeys { prefix: prefix.to_owned(), name: name.to_owned(), base: format!("{prefix}:{name}:") })
    }

    /// The queue name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P:Q:`, the base every script appends job ids to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `P:Q:<suffix>`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base)
    }

    /// The waiting list.
    pub fn wait(&self) -> String {
        self.key("wait")
    }
    /// The waiting list while globally paused.
    pub fn paused(&self) -> String {
        self.key("paused")
    }
    /// Exists while globally paused.
    pub fn meta_paused(&self) -> String {
        self.key("meta-paused")
    }
    /// BullMQ-compatible meta hash.
    pub fn meta(&self) -> String {
        self.key("meta")
    }
    /// Jobs being processed.
    pub fn active(&self) -> String {
        self.key("active")
    }
    /// Priorities of waiting prioritized jobs.
    pub fn priority(&self) -> String {
        self.key("priority")
    }
    /// Delayed jobs, scored by [`delayed_score`].
    pub fn delayed(&self) -> String {
        self.key("delayed")
    }
    /// Completed jobs, scored by finishedOn.
    pub fn completed(&self) -> String {
        self.key("completed")
    }
    /// Failed jobs, scored by finishedOn.
    pub fn failed(&self) -> String {
        self.key("failed")
    }
    /// Candidates of the next stall check.
    pub fn stalled(&self) -> String {
        self.key("stalled")
    }
    /// Throttle of the stall check.
    pub fn stalled_check(&self) -> String {
        self.key("stalled-check")
    }
    /// Rate limiter counter.
    pub fn limiter(&self) -> String {
        self.key("limiter")
    }
    /// Job id counter.
    pub fn id(&self) -> String {
        self.key("id")
    }
    /// Repeatable job configurations.
    pub fn repeat(&self) -> String {
        self.key("repeat")
    }
    /// A job's hash.
    pub fn job(&self, id: &str) -> String {
        self.key(id)
    }
    /// A job's lock.
    pub fn lock(&self, id: &str) -> String {
        format!("{}{id}:lock", self.base)
    }
    /// A job's log list.
    pub fn logs(&self, id: &str) -> String {
        format!("{}{id}:logs", self.base)
    }

    /// Channel: a job became waiting (`P:Q:waiting@<token>`).
    pub fn waiting_channel(&self, token: &str) -> String {
        format!("{}waiting@{token}", self.base)
    }
    /// Channel: delayed set changed; payload is the next due time in ms.
    pub fn delayed_channel(&self) -> String {
        self.delayed()
    }
    /// Pattern matching every `waiting@<token>` channel of this queue only.
    pub fn waiting_pattern(&self) -> String {
        format!("{}waiting@*", escape_glob(&self.base))
    }
    /// Channel of global pause.
    pub fn paused_channel(&self) -> String {
        self.paused()
    }
    /// Channel of global resume.
    pub fn resumed_channel(&self) -> String {
        self.key("resumed")
    }
    /// Channel of progress updates.
    pub fn progress_channel(&self) -> String {
        self.key("progress")
    }
    /// The channel of a global event; for tokenized ones, the part before the token.
    pub(crate) fn event_channel(&self, channel: EventChannel) -> String {
        self.key(channel.suffix())
    }
    /// The pattern of a tokenized event's channels of this queue only.
    pub(crate) fn event_pattern(&self, channel: EventChannel) -> String {
        escape_glob(&self.event_channel(channel)) + "*"
    }

    /// Name Bull's `getWorkers()` looks for: `P:` + base64(queue name).
    pub fn worker_name_prefix(&self) -> String {
        use base64::Engine;
        format!("{}:{}", self.prefix, base64::engine::general_purpose::STANDARD.encode(&self.name))
    }
}

/// Number of low bits of a delayed score holding the FIFO tiebreaker.
pub const DELAYED_TIEBREAK_MASK: u64 = 0xFFF;

/// Bull's delayed-zset score: `due_ms * 4096 + (n & 0xFFF)`. Exact in a double until 2039.
pub fn delayed_score(due_ms: u64, n: u64) -> u64 {
    due_ms * 4096 + (n & DELAYED_TIEBREAK_MASK)
}

/// The due time a delayed score encodes.
pub fn due_from_score(score: f64) -> u64 {
    (score / 4096.0).floor() as u64
}

/// The channels of Bull's global events: `P:Q:<suffix>`, or `P:Q:<suffix><token>` for the
/// tokenized ones, which Bull subscribes to with a pattern (queue.js `_registerEvent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventChannel {
    Waiting,
    Active,
    Stalled,
    Progress,
    Completed,
    Failed,
    Delayed,
    Paused,
    Resumed,
    Drained,
}

impl EventChannel {
    pub(crate) const ALL: [EventChannel; 10] = [
        EventChannel::Waiting,
        EventChannel::Active,
        EventChannel::Stalled,
        EventChannel::Progress,
        EventChannel::Completed,
        EventChannel::Failed,
        EventChannel::Delayed,
        EventChannel::Paused,
        EventChannel::Resumed,
        EventChannel::Drained,
    ];

    /// Bull's event name, the channel's suffix (`toKey(eventName)` in queue.js).
    fn suffix(self) -> &'static str {
        match self {
            EventChannel::Waiting => "waiting@",
            EventChannel::Active => "active@",
            EventChannel::Stalled => "stalled@",
            EventChannel::Progress => "progress",
            EventChannel::Completed => "completed",
            EventChannel::Failed => "failed",
            EventChannel::Delayed => "delayed",
            EventChannel::Paused => "paused",
            EventChannel::Resumed => "resumed",
            EventChannel::Drained => "drained",
        }
    }

    /// Whether the channel ends in `@<token>` and is subscribed to with a pattern.
    pub(crate) fn tokenized(self) -> bool {
        self.suffix().ends_with('@')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_bulls_layout() {
        let keys = QueueKeys::new("bull", "files").unwrap();
        assert_eq!(keys.base(), "bull:files:");
        assert_eq!(keys.wait(), "bull:files:wait");
        assert_eq!(keys.meta_paused(), "bull:files:meta-paused");
        assert_eq!(keys.job("42"), "bull:files:42");
        assert_eq!(keys.lock("42"), "bull:files:42:lock");
        assert_eq!(keys.logs("42"), "bull:files:42:logs");
        assert_eq!(keys.waiting_channel("tok"), "bull:files:waiting@tok");
        assert_eq!(keys.resumed_channel(), "bull:files:resumed");
        assert_eq!(keys.worker_name_prefix(), "bull:ZmlsZXM=");
        let tagged = QueueKeys::new("{bull}", "q").unwrap();
        assert_eq!(tagged.stalled_check(), "{bull}:q:stalled-check");
        assert_eq!(tagged.worker_name_prefix(), "{bull}:cQ==");
    }

    #[test]
    fn bad_names_and_ids_are_refused() {
        for name in ["", "a:b", "x\ny", "__hb__"] {
            assert!(QueueKeys::new("bull", name).is_err(), "{name:?}");
        }
        assert!(QueueKeys::new("", "q").is_err());
        for id in ["", "wait", "meta-paused", "id", "7:lock", "7:logs", "repeat:x", "de:1", "a\u{0}"] {
            assert!(validate_job_id(id).is_err(), "{id:?}");
        }
        for id in ["custom-1", "order:17", "7", "waiting-room"] {
            assert!(validate_job_id(id).is_ok(), "{id:?}");
        }
    }

    #[test]
    fn delayed_score_matches_bull() {
        // Bull: job 5 delay 5000 → (ts+5000)*4096+5.
        let due = 1_796_028_465_000u64;
        assert_eq!(delayed_score(due, 5), due * 4096 + 5);
        assert_eq!(delayed_score(due, 4096 + 7), due * 4096 + 7);
        assert_eq!(due_from_score(delayed_score(due, 4095) as f64), due);
        // Exact in a double until 2^41 ms.
        let late = (1u64 << 41) - 1;
        assert_eq!(delayed_score(late, 0xFFF) as f64 as u64, delayed_score(late, 0xFFF));
    }
}
