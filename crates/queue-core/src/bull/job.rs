//! A job as stored in its hash, and its `Job#toJSON` shape.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::bull::options::JobOptions;
use crate::error::{Error, Result};

/// Bull's default job name.
pub const DEFAULT_JOB_NAME: &str = "__default__";

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// In `wait`.
    Waiting,
    /// In `paused` (the queue is globally paused).
    Paused,
    /// In `active`.
    Active,
    /// In `delayed`.
    Delayed,
    /// In `completed`.
    Completed,
    /// In `failed`.
    Failed,
    /// A hash in no list or set.
    Stuck,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 7] = [
        JobState::Waiting,
        JobState::Paused,
        JobState::Active,
        JobState::Delayed,
        JobState::Completed,
        JobState::Failed,
        JobState::Stuck,
    ];

    /// Bull's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Paused => "paused",
            JobState::Active => "active",
            JobState::Delayed => "delayed",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Stuck => "stuck",
        }
    }

    /// Parses Bull's names (`wait` is accepted for `waiting`).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "waiting" | "wait" => JobState::Waiting,
            "paused" => JobState::Paused,
            "active" => JobState::Active,
            "delayed" => JobState::Delayed,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "stuck" => JobState::Stuck,
            other => {
                return Err(Error::InvalidOptions(format!(
                    "unknown job state {other:?}; use waiting, paused, active, delayed, completed or failed"
                )));
            }
        })
    }

    /// The key suffix of the list or zset holding jobs in this state.
    pub(crate) fn key_suffix(self) -> Option<&'static str> {
        match self {
            JobState::Waiting => Some("wait"),
            JobState::Paused => Some("paused"),
            JobState::Active => Some("active"),
            JobState::Delayed => Some("delayed"),
            JobState::Completed => Some("completed"),
            JobState::Failed => Some("failed"),
            JobState::Stuck => None,
        }
    }

    /// Lists are `wait`, `paused`, `active`; the rest are zsets.
    pub(crate) fn is_list(self) -> bool {
        matches!(self, JobState::Waiting | JobState::Paused | JobState::Active)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job read from Redis.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Job {
    /// The id.
    pub id: String,
    /// The name (`__default__` when unnamed).
    pub name: String,
    /// The data, parsed; the raw string when `preventParsingData` is set.
    pub data: Value,
    /// The options.
    pub opts: JobOptions,
    /// The last progress reported (0 when none).
    pub progress: Value,
    /// The `delay` field (ms), `None` when absent or not a number.
    pub delay: Option<i64>,
    /// Creation time, ms.
    pub timestamp: Option<i64>,
    /// Failed attempts so far.
    pub attempts_made: u64,
    /// The last failure's message.
    pub failed_reason: Option<String>,
    /// One stack trace per failed attempt, newest last.
    pub stacktrace: Vec<String>,
    /// The handler's return value, once completed.
    pub returnvalue: Option<Value>,
    /// When the last attempt started, ms.
    pub processed_on: Option<i64>,
    /// When the job completed or finally failed, ms.
    pub finished_on: Option<i64>,
    /// When `retry` last moved it back from failed, ms.
    pub retried_on: Option<i64>,
    /// Debounce id, for jobs added with Bull's `debounce` option.
    pub debounce_id: Option<String>,
    /// Times the stall check recovered this job.
    pub stalled_counter: u64,
    /// What is wrong with the stored hash, when something is (unparseable `data` or `opts`, a
    /// missing field). Such a job is still readable; a worker fails it with this reason.
    pub malformed: Option<String>,
}

fn int(hash: &HashMap<String, String>, field: &str) -> Option<i64> {
    // JavaScript's parseInt: leading integer digits.
    let raw = hash.get(field)?.trim();
    let end =
        raw.char_indices().find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-'))).map_or(raw.len(), |(i, _)| i);
    raw[..end].parse().ok()
}

impl Job {
    /// Reads a job from its hash, as `HGETALL` returns it. Never fails: what cannot be parsed is
    /// kept raw and described in [`Job::malformed`].
    pub fn from_hash(id: &str, hash: &HashMap<String, String>) -> Self {
        let mut problems = Vec::new();
        let opts = match hash.get("opts") {
            Some(raw) => JobOptions::from_json(raw).unwrap_or_else(|e| {
                problems.push(format!("opts is not a valid options object: {e}"));
                JobOptions::default()
            }),
            None => {
                problems.push("opts is missing".to_owned());
                JobOptions::default()
            }
        };
        let data = match hash.get("data") {
            None => {
                problems.push("data is missing".to_owned());
                json!({})
            }
            Some(raw) if opts.prevent_parsing_data == Some(true) => Value::String(raw.clone()),
            Some(raw) => serde_json::from_str(raw).unwrap_or_else(|e| {
                problems.push(format!("data is not valid JSON: {e}"));
                Value::String(raw.clone())
            }),
        };
        if !hash.contains_key("timestamp") {
            problems.push("timestamp is missing".to_owned());
        }
        let progress = match hash.get("progress") {
            Some(raw) => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone())),
            None => json!(0),
        };
        let returnvalue = hash.get("returnvalue").map(|raw| serde_json::from_str(raw).unwrap_or(Value::Null));
        let stacktrace = hash
            .get("stacktrace")
            .and_then(|raw| serde_json::from_str::<Vec<Value>>(raw).ok())
            .map(|traces| traces.into_iter().map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned)).collect())
            .unwrap_or_default();
        Job {
            id: id.to_owned(),
            name: hash.get("name").cloned().unwrap_or_else(|| DEFAULT_JOB_NAME.to_owned()),
            data,
            opts,
            progress,
            delay: int(hash, "delay"),
            timestamp: int(hash, "timestamp"),
            attempts_made: int(hash, "attemptsMade").unwrap_or(0).max(0) as u64,
            failed_reason: hash.get("failedReason").cloned(),
            stacktrace,
            returnvalue,
            processed_on: int(hash, "processedOn").filter(|v| *v != 0),
            finished_on: int(hash, "finishedOn").filter(|v| *v != 0),
            retried_on: int(hash, "retriedOn").filter(|v| *v != 0),
            debounce_id: hash.get("deid").cloned(),
            stalled_counter: int(hash, "stalledCounter").unwrap_or(0).max(0) as u64,
            malformed: (!problems.is_empty()).then(|| format!("malformed job hash: {}", problems.join("; "))),
        }
    }

    /// The object Bull's `Job#toJSON` returns for this job, field for field: what bull-board and
    /// Arena show, and what `queuectl job` prints.
    pub fn to_json(&self) -> Value {
        let mut opts = serde_json::to_value(&self.opts).unwrap_or_else(|_| json!({}));
        // A Node reader fills these defaults when it loads the job.
        if let Value::Object(o) = &mut opts {
            o.entry("attempts").or_insert(json!(1));
            o.entry("delay").or_insert(json!(0));
            o.entry("timestamp").or_insert_with(|| json!(self.timestamp));
        }
        let falsy_to = |v: &Value, fallback: Value| if is_falsy(v) { fallback } else { v.clone() };
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id));
        out.insert("name".into(), json!(self.name));
        out.insert("data".into(), falsy_to(&self.data, json!({})));
        out.insert("opts".into(), opts);
        out.insert("progress".into(), self.progress.clone());
        out.insert("delay".into(), json!(self.delay));
        out.insert("timestamp".into(), json!(self.timestamp));
        out.insert("attemptsMade".into(), json!(self.attempts_made));
        if let Some(reason) = &self.failed_reason {
            out.insert("failedReason".into(), json!(reason));
        }
        out.insert("stacktrace".into(), json!(self.stacktrace));
        out.insert("returnvalue".into(), self.returnvalue.as_ref().map_or(Value::Null, |v| falsy_to(v, Value::Null)));
        out.insert("debounceId".into(), json!(self.debounce_id));
        out.insert("finishedOn".into(), json!(self.finished_on));
        out.insert("processedOn".into(), json!(self.processed_on));
        Value::Object(out)
    }
}

/// JavaScript's falsy values among JSON: null, false, 0, "".
fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_freshly_added_job_reads_like_bulls_to_json() {
        let h = hash(&[
            ("name", "__default__"),
            ("data", r#"{"a":1}"#),
            ("opts", r#"{"attempts":1,"delay":0,"timestamp":1796028460126}"#),
            ("timestamp", "1796028460126"),
            ("delay", "0"),
            ("priority", "0"),
        ]);
        let job = Job::from_hash("1", &h);
        assert_eq!(job.malformed, None);
        assert_eq!(
            job.to_json(),
            json!({
                "id": "1", "name": "__default__", "data": {"a": 1},
                "opts": {"attempts": 1, "delay": 0, "timestamp": 1796028460126u64},
                "progress": 0, "delay": 0, "timestamp": 1796028460126u64, "attemptsMade": 0,
                "stacktrace": [], "returnvalue": null, "debounceId": null, "finishedOn": null, "processedOn": null
            })
        );
    }

    #[test]
    fn a_failed_job_keeps_reason_traces_and_attempts() {
        let h = hash(&[
            ("data", "{}"),
            ("opts", r#"{"attempts":3}"#),
            ("attemptsMade", "3"),
            ("failedReason", "boom 2"),
            ("stacktrace", r#"["Error: boom 0\n at x","Error: boom 1"]"#),
            ("finishedOn", "17"),
            ("processedOn", "16"),
            ("returnvalue", "0"),
        ]);
        let json = Job::from_hash("2", &h).to_json();
        assert_eq!(json["failedReason"], "boom 2");
        assert_eq!(json["attemptsMade"], 3);
        assert_eq!(json["stacktrace"][0], "Error: boom 0\n at x");
        assert_eq!(json["finishedOn"], 17);
        // Bull's `returnvalue || null`.
        assert_eq!(json["returnvalue"], Value::Null);
        assert_eq!(json["delay"], Value::Null);
        assert_eq!(json["name"], DEFAULT_JOB_NAME);
    }

    #[test]
    fn malformed_fields_are_named_and_kept_raw() {
        let bad_data = Job::from_hash("3", &hash(&[("data", "{not json"), ("opts", "{}"), ("timestamp", "1")]));
        assert!(bad_data.malformed.as_deref().unwrap().contains("data is not valid JSON"), "{bad_data:?}");
        assert_eq!(bad_data.data, Value::String("{not json".into()));
        let bad_opts = Job::from_hash("3", &hash(&[("data", "{}"), ("opts", "[1]"), ("timestamp", "1")]));
        assert!(bad_opts.malformed.as_deref().unwrap().contains("opts is not a valid options object"));
        let missing = Job::from_hash("3", &hash(&[("data", "{}")]));
        let reason = missing.malformed.unwrap();
        assert!(reason.contains("opts is missing") && reason.contains("timestamp is missing"), "{reason}");
        let raw = Job::from_hash(
            "4",
            &hash(&[("data", "not json"), ("opts", r#"{"preventParsingData":true}"#), ("timestamp", "1")]),
        );
        assert_eq!(raw.data, Value::String("not json".into()));
        assert_eq!(raw.malformed, None);
    }

    #[test]
    fn states_parse_and_print() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()).unwrap(), state);
        }
        assert_eq!(JobState::parse("wait").unwrap(), JobState::Waiting);
        assert!(JobState::parse("done").is_err());
    }
}
