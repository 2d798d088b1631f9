//! What a fetch hands to an attempt: a job taken, or why none was; and the reading of the
//! scripts' replies that take one (`moveToActive`, and `completeJob` fetching the next job).

use std::collections::HashMap;

use redis::Value as RedisValue;

use crate::bull::job::Job;
use crate::error::{Error, Result};

/// A job taken for this worker: its id, its hash and the lock value of this activation.
pub(super) struct Taken {
    pub(super) id: String,
    pub(super) job: Box<Job>,
    pub(super) lock: String,
}

pub(super) enum Fetched {
    Job(Taken),
    /// Something was taken care of (an orphan id, a rate-limited job): fetch again at once.
    Again,
    Idle,
}

fn text(v: &RedisValue) -> Option<String> {
    match v {
        RedisValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RedisValue::SimpleString(s) => Some(s.clone()),
        RedisValue::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Reads the reply of `moveToActive` or of the fetch-next step of `completeJob`; `lock` is the
/// lock value the script was given for the job it may have taken.
pub(super) fn parse_taken(reply: RedisValue, queue: &str, lock: String) -> Result<Fetched> {
    let bad = |detail: String| Error::Protocol { script: "moveToActive", detail };
    let RedisValue::Array(items) = reply else {
        return match reply {
            RedisValue::Int(_) | RedisValue::Nil => Ok(Fetched::Idle),
            other => Err(bad(format!("{other:?}"))),
        };
    };
    let kind = items.first().and_then(text).ok_or_else(|| bad("empty reply".into()))?;
    let id = items.get(1).and_then(text);
    match (kind.as_str(), id) {
        ("none", _) => Ok(Fetched::Idle),
        ("orphan", Some(id)) => {
            tracing::warn!(queue, id, "dropped a job id that had no job hash");
            Ok(Fetched::Again)
        }
        ("limited", Some(_)) => Ok(Fetched::Again),
        ("job", Some(id)) => {
            let fields = match items.get(2) {
                Some(RedisValue::Array(fields)) => fields.iter().filter_map(text).collect::<Vec<_>>(),
                Some(RedisValue::Map(pairs)) => pairs.iter().flat_map(|(k, v)| [text(k), text(v)]).flatten().collect(),
                _ => Vec::new(),
            };
            let hash: HashMap<String, String> =
                fields.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
            let job = Box::new(Job::from_hash(&id, &hash));
            Ok(Fetched::Job(Taken { id, job, lock }))
        }
        (other, _) => Err(bad(format!("unknown reply kind {other}"))),
    }
}
