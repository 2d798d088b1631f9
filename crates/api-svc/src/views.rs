//! What the API answers, as types: serde for the wire, utoipa for `/openapi.json`, so the
//! document cannot drift from the answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use platform::records::{Delivery, FileRecord, FileStatus};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a file is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Stored and recorded; waiting for a worker.
    Queued,
    /// A worker is processing it; `progress` says how far.
    Processing,
    /// Processed; `result` holds what was found.
    Done,
    /// Failed for good; `error` says why.
    Failed,
}

impl From<FileStatus> for Status {
    fn from(s: FileStatus) -> Self {
        match s {
            FileStatus::Queued => Status::Queued,
            FileStatus::Processing => Status::Processing,
            FileStatus::Done => Status::Done,
            FileStatus::Failed => Status::Failed,
        }
    }
}

/// Where to find a file and what belongs to it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct FileLinks {
    /// The file's status.
    #[serde(rename = "self")]
    pub this: String,
    /// The uploaded content.
    pub content: String,
    /// What processing made, by name (e.g. `thumbnail.jpg`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, String>,
}

impl FileLinks {
    fn new(id: Uuid, result: Option<&Value>) -> Self {
        let this = format!("/v1/files/{id}");
        let artifacts = artifact_names(result)
            .into_iter()
            .map(|name| {
                let url = format!("{this}/artifacts/{name}");
                (name, url)
            })
            .collect();
        FileLinks { content: format!("{this}/content"), this, artifacts }
    }
}

/// The names of the artifacts a worker listed in its result: `result.artifacts` as a list of
/// names, a list of objects with a `name`, or an object keyed by name. Names that the artifact
/// route would refuse are left out.
pub(crate) fn artifact_names(result: Option<&Value>) -> Vec<String> {
    let names: Vec<String> = match result.and_then(|r| r.get("artifacts")) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(name) => Some(name.clone()),
                other => other.get("name").and_then(Value::as_str).map(str::to_owned),
            })
            .collect(),
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    names.into_iter().filter(|n| is_artifact_name(n)).collect()
}

/// An artifact name this API serves: 1 to 128 of `[A-Za-z0-9._-]`, not starting with a dot.
pub(crate) fn is_artifact_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The multipart form of an upload (documentation only: the body is streamed, never parsed
/// into this type).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct UploadForm {
    /// The file; its part's filename is kept as metadata.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    /// Where to POST the result: https, or http to a host in `CALLBACK_ALLOWED_HOSTS`. Send it
    /// before `file`, so that a refused URL is known before the upload is read.
    callback_url: Option<String>,
}

/// The answer to an accepted upload (202).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// The file's id.
    pub id: Uuid,
    /// `queued`.
    pub status: Status,
    /// Where to follow it.
    pub links: FileLinks,
}

impl Accepted {
    /// The first answer for `record`: what an upload, and a replay of it, get.
    pub(crate) fn of(record: &FileRecord) -> Self {
        Accepted { id: record.id, status: Status::Queued, links: FileLinks::new(record.id, None) }
    }
}

/// One callback delivery attempt.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryView {
    /// Standard Webhooks' `webhook-id` (the same across retries).
    pub webhook_id: String,
    /// 1 on the first try.
    pub attempt: i32,
    /// What the receiver answered; absent when it did not.
    pub status_code: Option<i32>,
    /// How long the attempt took.
    pub duration_ms: i32,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            webhook_id: d.webhook_id,
            attempt: d.attempt,
            status_code: d.status_code,
            duration_ms: d.duration_ms,
            error: d.error,
            at: d.at,
        }
    }
}

/// The callback of a file and how its delivery goes.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct CallbackView {
    /// Where the result is POSTed.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub state: Option<String>,
    /// Every delivery attempt, oldest first (in a file's detail, not in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<DeliveryView>>,
}

/// A file: its metadata, status, result and links.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct FileView {
    /// The file's id.
    pub id: Uuid,
    /// `queued`, `processing`, `done` or `failed`.
    pub status: Status,
    /// The client's filename (metadata only).
    pub filename: String,
    /// The content type the client sent.
    pub content_type: Option<String>,
    /// Bytes.
    pub size: i64,
    /// Hex sha256 of the content.
    pub sha256: String,
    /// The type found in the content, once processed.
    pub detected_type: Option<String>,
    /// The job's progress while `processing`: what the worker reports, any JSON value
    /// (worker-svc reports a number, 0 to 100); absent otherwise or when Redis cannot be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub progress: Option<Value>,
    /// What processing found (metadata, artifacts), once `done`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Why it failed, or why the last attempt failed.
    pub error: Option<String>,
    /// Processing attempts started.
    pub attempts: i32,
    /// The callback, if one was given.
    pub callback: Option<CallbackView>,
    /// Upload time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached `done` or `failed`.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where to find it.
    pub links: FileLinks,
}

impl FileView {
    /// The view of `record`, with `progress` and `deliveries` when the caller has them.
    pub(crate) fn new(record: FileRecord, progress: Option<Value>, deliveries: Option<Vec<Delivery>>) -> Self {
        let status = Status::from(record.status());
        let links = FileLinks::new(record.id, record.result.as_ref());
        let callback = record.callback_url.map(|url| CallbackView {
            url,
            state: record.delivery_state,
            deliveries: deliveries.map(|d| d.into_iter().map(DeliveryView::from).collect()),
        });
        FileView {
            id: record.id,
            status,
            filename: record.filename,
            content_type: record.content_type,
            size: record.size,
            sha256: record.sha256,
            detected_type: record.detected_type,
            progress: progress.filter(|_| status == Status::Processing),
            result: record.result,
            error: record.error,
            attempts: record.attempts,
            callback,
            created_at: record.created_at,
            updated_at: record.updated_at,
            finished_at: record.finished_at,
            links,
        }
    }
}

/// A page of files, newest first.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct FileList {
    /// The files of this page.
    pub items: Vec<FileView>,
    /// The cursor of the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `/livez`: the process is up.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct Liveness {
    /// `ok`.
    pub status: String,
}

/// `/readyz`: every dependency answered.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready`.
    pub status: String,
    /// Each dependency (`redis`, `postgres`, `storage`) and `ok`.
    pub checks: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_links_come_from_the_result_in_any_of_its_shapes() {
        let list = serde_json::json!({"artifacts": ["thumbnail.jpg", "../x", {"name": "preview.mp4"}]});
        assert_eq!(artifact_names(Some(&list)), vec!["thumbnail.jpg", "preview.mp4"]);
        let map = serde_json::json!({"artifacts": {"waveform.png": {"size": 3}}});
        assert_eq!(artifact_names(Some(&map)), vec!["waveform.png"]);
        assert!(artifact_names(None).is_empty());
        let id = Uuid::nil();
        let links = FileLinks::new(id, Some(&list));
        assert_eq!(links.artifacts["thumbnail.jpg"], format!("/v1/files/{id}/artifacts/thumbnail.jpg"));
        assert!(!is_artifact_name(".hidden") && !is_artifact_name("a/b") && !is_artifact_name(""));
    }
}
