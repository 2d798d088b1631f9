//! The callback of a finished file: the body POSTed to its `callback_url`, made from its row, and
//! the `webhooks` job that delivers it.
//!
//! The body follows Standard Webhooks' recommended shape, `{type, timestamp, data}`, with `type`
//! `file.done` or `file.failed` and `data` the file as `GET /v1/files/{id}` describes it (status,
//! detected type, result or error). It is made once, when the job is enqueued, so every retry
//! sends the same bytes.

use platform::jobs::{WebhookJob, webhook_job_options};
use platform::records::{FileRecord, FileStatus};
use queue_core::{DEFAULT_JOB_NAME, Queue};
use serde_json::{Value, json};

/// The job that delivers `row`'s callback, if it has one and is finished.
pub(crate) fn job_for(row: &FileRecord) -> Option<WebhookJob> {
    let url = row.callback_url.as_deref()?;
    let outcome = match row.status() {
        FileStatus::Done => "done",
        FileStatus::Failed => "failed",
        FileStatus::Queued | FileStatus::Processing => return None,
    };
    let at = row.finished_at.unwrap_or(row.updated_at);
    let payload = json!({
        "type": format!("file.{outcome}"),
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "id": row.id,
            "status": row.status,
            "filename": row.filename,
            "size": row.size,
            "sha256": row.sha256,
            "detected_type": row.detected_type,
            "result": row.result.clone().unwrap_or(Value::Null),
            "error": row.error,
            "created_at": row.created_at,
            "finished_at": row.finished_at,
        },
    });
    Some(WebhookJob::new(row.id, outcome, url, payload))
}

/// Enqueues `row`'s callback unless it has none or it was delivered or given up already.
/// Idempotent: the Bull job id is the webhook id, so a second call adds nothing.
pub(crate) async fn enqueue(webhooks: &Queue, row: &FileRecord) -> queue_core::Result<Option<String>> {
    if row.delivery_state.as_deref().is_some_and(|s| s != "pending") {
        return Ok(None);
    }
    let Some(job) = job_for(row) else { return Ok(None) };
    let options = webhook_job_options(&job);
    webhooks.add(DEFAULT_JOB_NAME, &job, options).await.map(Some)
}
