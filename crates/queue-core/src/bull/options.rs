//! Job options, in the JSON shape Bull stores in a job hash's `opts` field.

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bull::keys::validate_job_id;
use crate::error::{Error, Result};

/// How long to wait before a failed attempt is retried.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backoff {
    /// `fixed`, `exponential`, or the name of a custom strategy the worker knows.
    #[serde(rename = "type")]
    pub kind: String,
    /// Base delay in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<u64>,
    /// Options for a custom strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

impl Backoff {
    /// The same delay after every failure.
    pub fn fixed(delay_ms: u64) -> Self {
        Backoff { kind: "fixed".into(), delay: Some(delay_ms), options: None }
    }

    /// `delay`, `3 × delay`, `7 × delay`, …
    pub fn exponential(delay_ms: u64) -> Self {
        Backoff { kind: "exponential".into(), delay: Some(delay_ms), options: None }
    }

    /// A strategy the worker registers under `name`.
    pub fn custom(name: &str, options: Option<Value>) -> Self {
        Backoff { kind: name.to_owned(), delay: None, options }
    }

    /// Parses `fixed:MS` or `exponential:MS` (the CLI form).
    pub fn parse(spec: &str) -> Result<Self> {
        let (kind, ms) = spec.split_once(':').ok_or_else(|| {
            Error::InvalidOptions(format!("backoff {spec:?} must look like fixed:MS or exponential:MS"))
        })?;
        let ms: u64 =
            ms.parse().map_err(|_| Error::InvalidOptions(format!("backoff delay {ms:?} is not a number of ms")))?;
        match kind {
            "fixed" => Ok(Backoff::fixed(ms)),
            "exponential" => Ok(Backoff::exponential(ms)),
            other => Err(Error::InvalidOptions(format!("unknown backoff type {other:?}; use fixed or exponential"))),
        }
    }

    /// The built-in strategies' delay after failure number `attempts_made` (1 = first failure),
    /// as Bull computes it: `None` for a custom strategy (the worker decides), `Some(0)` for an
    /// immediate retry.
    pub fn builtin_delay(&self, attempts_made: u32) -> Option<u64> {
        let delay = self.delay.unwrap_or(0);
        match self.kind.as_str() {
            "fixed" => Some(delay),
            "exponential" => {
                let factor = 2f64.powi(attempts_made.min(1023) as i32) - 1.0;
                Some((factor * delay as f64).round().min(u64::MAX as f64) as u64)
            }
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Backoff {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        // Bull normalizes a bare number to `{type: "fixed", delay: n}`; accept both.
        #[derive(Deserialize)]
        struct Object {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default, deserialize_with = "lenient_u64")]
            delay: Option<u64>,
            #[serde(default)]
            options: Option<Value>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Number(f64),
            Object(Object),
        }
        match Form::deserialize(deserializer)? {
            Form::Number(n) => Ok(Backoff::fixed(n.max(0.0) as u64)),
            Form::Object(o) => Ok(Backoff { kind: o.kind, delay: o.delay, options: o.options }),
        }
    }
}

/// `removeOnComplete` / `removeOnFail`: what to keep of finished jobs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum KeepJobs {
    /// `true` removes at once; `false` keeps everything.
    Remove(bool),
    /// Keep the newest N.
    Count(i64),
    /// Keep jobs younger than `age` seconds and at most `count` of them.
    Policy {
        /// Seconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        age: Option<u64>,
        /// Newest jobs to keep.
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<i64>,
    },
}

impl<'de> Deserialize<'de> for KeepJobs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        // Node producers may store any number (JavaScript has no integers) and any numeric
        // field inside the object form.
        let number = |v: &Value| v.as_i64().or_else(|| v.as_f64().map(|f| f.floor() as i64));
        match Value::deserialize(deserializer)? {
            Value::Bool(b) => Ok(KeepJobs::Remove(b)),
            Value::Number(n) => Ok(KeepJobs::Count(number(&Value::Number(n)).unwrap_or(-1))),
            Value::Object(o) => Ok(KeepJobs::Policy {
                age: o.get("age").and_then(number).map(|a| a.max(0) as u64),
                count: o.get("count").and_then(number),
            }),
            other => Err(serde::de::Error::custom(format!("removeOnComplete/removeOnFail cannot be {other}"))),
        }
    }
}

impl KeepJobs {
    /// Bull's keepJobs: `(age_seconds, count)` where count 0 removes at once and -1 keeps all.
    pub fn normalized(option: Option<&KeepJobs>) -> (Option<u64>, i64) {
        match option {
            None | Some(KeepJobs::Remove(false)) => (None, -1),
            Some(KeepJobs::Remove(true)) => (None, 0),
            Some(KeepJobs::Count(n)) => (None, *n),
            Some(KeepJobs::Policy { age, count }) => (*age, count.unwrap_or(-1)),
        }
    }
}

/// A repeatable job's schedule, stored in `opts.repeat` as Bull stores it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepeatOptions {
    /// Cron expression (5 or 6 fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Time zone of the cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// Fixed interval in ms.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub every: Option<u64>,
    /// Maximum number of iterations.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub limit: Option<u64>,
    /// No iteration before this date (ms, or whatever a Node producer stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<Value>,
    /// No iteration after this date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<Value>,
    /// Iterations so far (set by the scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub count: Option<u64>,
    /// The repeat key (set by the scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The custom id of the repeatable (copied from `opts.jobId` on the first add).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_string")]
    pub job_id: Option<String>,
    /// Fields this crate does not know, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Bull's job options. Unknown fields written by other producers are kept in `extra` and
/// written back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct JobOptions {
    /// Total tries; stored as 1 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub attempts: Option<u64>,
    /// Retry delay strategy; no backoff retries at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Ms before the job may run; stored as 0 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub delay: Option<u64>,
    /// 1 is the highest priority; unset or 0 means none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub priority: Option<u64>,
    /// Run next instead of last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifo: Option<bool>,
    /// Ms an attempt may run before it fails.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub timeout: Option<u64>,
    /// Custom job id; a second add with the same id returns it and changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_string")]
    pub job_id: Option<String>,
    /// What to keep once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_on_complete: Option<KeepJobs>,
    /// What to keep once finally failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_on_fail: Option<KeepJobs>,
    /// Stack traces kept in `stacktrace`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub stack_trace_limit: Option<u64>,
    /// Workers hand the handler the raw `data` string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prevent_parsing_data: Option<bool>,
    /// Makes the job repeatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<RepeatOptions>,
    /// Creation time in ms; the producer's clock when unset.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub timestamp: Option<u64>,
    /// Due time of this repeat iteration.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_u64")]
    pub prev_millis: Option<u64>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl JobOptions {
    /// Total tries.
    pub fn attempts(mut self, n: u64) -> Self {
        self.attempts = Some(n);
        self
    }
    /// Retry strategy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }
    /// Delay in ms.
    pub fn delay(mut self, ms: u64) -> Self {
        self.delay = Some(ms);
        self
    }
    /// Priority, 1 = highest.
    pub fn priority(mut self, priority: u64) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Run next.
    pub fn lifo(mut self, lifo: bool) -> Self {
        self.lifo = Some(lifo);
        self
    }
    /// Attempt timeout in ms.
    pub fn timeout(mut self, ms: u64) -> Self {
        self.timeout = Some(ms);
        self
    }
    /// Custom id.
    pub fn job_id(mut self, id: impl Into<String>) -> Self {
        self.job_id = Some(id.into());
        self
    }
    /// `removeOnComplete`.
    pub fn remove_on_complete(mut self, keep: KeepJobs) -> Self {
        self.remove_on_complete = Some(keep);
        self
    }
    /// `removeOnFail`.
    pub fn remove_on_fail(mut self, keep: KeepJobs) -> Self {
        self.remove_on_fail = Some(keep);
        self
    }
    /// `stackTraceLimit`.
    pub fn stack_trace_limit(mut self, n: u64) -> Self {
        self.stack_trace_limit = Some(n);
        self
    }
    /// `repeat`.
    pub fn repeat(mut self, repeat: RepeatOptions) -> Self {
        self.repeat = Some(repeat);
        self
    }
    /// Creation time in ms.
    pub fn timestamp(mut self, ms: u64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Parses the `opts` field of a job hash.
    pub fn from_json(raw: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(raw).map_err(|source| Error::Json { what: "job opts", source })?;
        if !value.is_object() {
            return Err(Error::InvalidOptions(format!("opts must be a JSON object, got {raw}")));
        }
        serde_json::from_value(value).map_err(|source| Error::Json { what: "job opts", source })
    }

    /// Refuses what Bull rejects or cannot store, and fills in Bull's defaults
    /// (`attempts` 1, `delay` 0, `timestamp` now) the way a Node producer does.
    pub(crate) fn normalize(mut self, now_ms: u64) -> Result<Self> {
        if self.attempts == Some(0) {
            return Err(Error::InvalidOptions("attempts must be at least 1".into()));
        }
        if let Some(id) = &self.job_id {
            validate_job_id(id)?;
        }
        if let Some(backoff) = &self.backoff {
            if backoff.kind.is_empty() {
                return Err(Error::InvalidOptions("backoff type must not be empty".into()));
            }
            if matches!(backoff.kind.as_str(), "fixed" | "exponential") && backoff.delay.is_none() {
                return Err(Error::InvalidOptions(format!("backoff {} needs a delay", backoff.kind)));
            }
        }
        if let Some(repeat) = &self.repeat {
            match (&repeat.cron, repeat.every) {
                (Some(_), Some(_)) => {
                    return Err(Error::InvalidOptions(
                        "Both .cron and .every options are defined for this repeatable job".into(),
                    ));
                }
                (None, None) => return Err(Error::InvalidOptions("repeat needs cron or every".into())),
                (None, Some(0)) => return Err(Error::InvalidOptions("repeat.every must be positive".into())),
                _ => {}
            }
        }
        for (name, keep) in [("removeOnComplete", &self.remove_on_complete), ("removeOnFail", &self.remove_on_fail)] {
            if let Some(KeepJobs::Count(n) | KeepJobs::Policy { count: Some(n), .. }) = keep
                && *n < 0
            {
                return Err(Error::InvalidOptions(format!("{name} count must not be negative")));
            }
        }
        self.attempts.get_or_insert(1);
        self.delay.get_or_insert(0);
        self.timestamp.get_or_insert(now_ms);
        Ok(self)
    }

    /// The stored JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("job options always serialize")
    }
}

/// Accepts a string or a number (Bull's `JobId` is `number | string`), or null.
fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Accepts an integer, a float (Node's `Number()`), a numeric string or null.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().filter(|f| *f >= 0.0).map(|f| f as u64),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_filled_like_a_node_producer() {
        let opts = JobOptions::default().normalize(1234).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&opts.to_json()).unwrap(),
            json!({"attempts":1,"delay":0,"timestamp":1234})
        );
    }

    #[test]
    fn every_option_round_trips_in_bulls_shape() {
        let stored = json!({
            "attempts": 3, "backoff": {"type": "exponential", "delay": 1000}, "delay": 5, "priority": 2,
            "lifo": true, "timeout": 900, "jobId": "custom-1", "removeOnComplete": {"age": 60, "count": 10},
            "removeOnFail": 5, "stackTraceLimit": 4, "timestamp": 99, "futureOption": {"x": 1}
        });
        let opts = JobOptions::from_json(&stored.to_string()).unwrap();
        assert_eq!(opts.backoff, Some(Backoff::exponential(1000)));
        assert_eq!(opts.remove_on_fail, Some(KeepJobs::Count(5)));
        assert_eq!(opts.extra["futureOption"], json!({"x": 1}));
        assert_eq!(serde_json::from_str::<Value>(&opts.to_json()).unwrap(), stored);
    }

    #[test]
    fn node_forms_are_read_leniently() {
        let numeric = JobOptions::from_json(
            r#"{"jobId":123,"repeat":{"every":5,"jobId":7},"removeOnComplete":1.5,"removeOnFail":{"age":60.5,"count":2.0}}"#,
        )
        .unwrap();
        assert_eq!(numeric.job_id.as_deref(), Some("123"));
        assert_eq!(numeric.repeat.unwrap().job_id.as_deref(), Some("7"));
        assert_eq!(numeric.remove_on_complete, Some(KeepJobs::Count(1)));
        assert_eq!(numeric.remove_on_fail, Some(KeepJobs::Policy { age: Some(60), count: Some(2) }));
        let opts =
            JobOptions::from_json(r#"{"backoff":2000,"delay":1.5,"attempts":"4","removeOnComplete":true}"#).unwrap();
        assert_eq!(opts.backoff, Some(Backoff::fixed(2000)));
        assert_eq!(opts.delay, Some(1));
        assert_eq!(opts.attempts, Some(4));
        assert_eq!(opts.remove_on_complete, Some(KeepJobs::Remove(true)));
    }

    #[test]
    fn keep_jobs_normalize_like_bull() {
        assert_eq!(KeepJobs::normalized(None), (None, -1));
        assert_eq!(KeepJobs::normalized(Some(&KeepJobs::Remove(true))), (None, 0));
        assert_eq!(KeepJobs::normalized(Some(&KeepJobs::Remove(false))), (None, -1));
        assert_eq!(KeepJobs::normalized(Some(&KeepJobs::Count(7))), (None, 7));
        assert_eq!(KeepJobs::normalized(Some(&KeepJobs::Policy { age: Some(3600), count: None })), (Some(3600), -1));
    }

    #[test]
    fn backoff_arithmetic_matches_bull() {
        let exp = Backoff::exponential(1000);
        assert_eq!([1, 2, 3].map(|n| exp.builtin_delay(n)), [Some(1000), Some(3000), Some(7000)]);
        assert_eq!(Backoff::fixed(250).builtin_delay(9), Some(250));
        assert_eq!(Backoff::custom("jitter", None).builtin_delay(1), None);
        assert_eq!(Backoff::parse("exponential:500").unwrap(), Backoff::exponential(500));
        assert!(Backoff::parse("linear:5").is_err());
        assert!(Backoff::parse("fixed").is_err());
    }

    #[test]
    fn invalid_combinations_are_refused() {
        let both = RepeatOptions { cron: Some("* * * * *".into()), every: Some(5), ..Default::default() };
        let cases = [
            JobOptions::default().attempts(0),
            JobOptions::default().job_id("wait"),
            JobOptions::default().repeat(both),
            JobOptions::default().repeat(RepeatOptions::default()),
            JobOptions::default().remove_on_complete(KeepJobs::Count(-2)),
            JobOptions::default().backoff(Backoff { kind: "fixed".into(), delay: None, options: None }),
        ];
        for case in cases {
            assert!(
                matches!(case.clone().normalize(0), Err(Error::InvalidOptions(_) | Error::InvalidJobId { .. })),
                "{case:?}"
            );
        }
    }
}
