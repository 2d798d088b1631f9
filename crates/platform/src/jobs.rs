//! The job contract between api-svc and worker-svc: the queues and the data of their jobs.
//!
//! Every payload carries `v`, the contract version. A worker refuses a version it does not know
//! (the job fails for good with a reason naming it) instead of guessing, so a producer and a
//! worker of different releases cannot silently disagree about what a field means.

use queue_core::{Backoff, JobOptions, KeepJobs};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The file-processing queue.
pub const FILES_QUEUE: &str = "files";
/// The callback-delivery queue.
pub const WEBHOOKS_QUEUE: &str = "webhooks";
/// The contract version this build writes and reads.
pub const VERSION: u32 = 1;

/// Attempts of a `files` job (a crash or a transient error retries; bad media does not).
pub const FILE_ATTEMPTS: u64 = 3;
/// Retry delay unit of a `files` job after a transient failure. Bull's exponential backoff waits
/// `(2^attemptsMade - 1) × delay` before retry n: 5 s, then 15 s.
pub const FILE_BACKOFF_MS: u64 = 5000;
/// Completed `files` jobs kept in Redis (the newest; older ones are removed as jobs complete).
/// The row in Postgres is the record; Redis keeps enough for dashboards and `queuectl`.
pub const COMPLETED_FILE_JOBS_KEPT: i64 = 1000;
/// Failed `files` jobs kept in Redis, for diagnosis (the reason is in the row too).
pub const FAILED_FILE_JOBS_KEPT: i64 = 5000;
/// Attempts of a `webhooks` job, with exponential backoff from [`WEBHOOK_BACKOFF_MS`].
pub const WEBHOOK_ATTEMPTS: u64 = 8;
/// Retry delay unit of a callback delivery. Bull waits `(2^attemptsMade - 1) × delay`: 1 s, 3 s,
/// 7 s, 15 s, 31 s, 63 s, 127 s (about 4 minutes in all over [`WEBHOOK_ATTEMPTS`]).
pub const WEBHOOK_BACKOFF_MS: u64 = 1000;

/// A file to process. The Bull job id is the file id, so enqueuing twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJob {
    /// Contract version: [`VERSION`].
    pub v: u32,
    /// The file's id (the Postgres row and the storage keys).
    pub file_id: Uuid,
}

impl FileJob {
    /// The job for `file_id`.
    pub fn new(file_id: Uuid) -> Self {
        FileJob { v: VERSION, file_id }
    }

    /// The Bull job id of this file's job.
    pub fn job_id(&self) -> String {
        self.file_id.to_string()
    }
}

/// The options of a `files` job, the same for whoever enqueues it (api-svc at upload, the
/// reconciler later): the file id as the Bull job id, so a second enqueue of a file whose job
/// exists changes nothing; [`FILE_ATTEMPTS`] with exponential backoff; bounded history.
pub fn file_job_options(job: &FileJob) -> JobOptions {
    JobOptions::default()
        .job_id(job.job_id())
        .attempts(FILE_ATTEMPTS)
        .backoff(Backoff::exponential(FILE_BACKOFF_MS))
        .remove_on_complete(KeepJobs::Count(COMPLETED_FILE_JOBS_KEPT))
        .remove_on_fail(KeepJobs::Count(FAILED_FILE_JOBS_KEPT))
}

/// A callback to deliver: POST `payload` to `url`, signed. The Bull job id is `webhook_id`, which
/// also goes out as the `webhook-id` header and stays the same across retries, so receivers
/// can deduplicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookJob {
    /// Contract version: [`VERSION`].
    pub v: u32,
    /// The file the callback reports on.
    pub file_id: Uuid,
    /// Standard Webhooks' message id: `msg_<file id>_<outcome>`.
    pub webhook_id: String,
    /// Where to POST (validated against the allow-list again at delivery).
    pub url: String,
    /// The JSON body.
    pub payload: serde_json::Value,
}

impl WebhookJob {
    /// The callback reporting `outcome` (`done` or `failed`) of `file_id`.
    pub fn new(file_id: Uuid, outcome: &str, url: &str, payload: serde_json::Value) -> Self {
        WebhookJob { v: VERSION, file_id, webhook_id: format!("msg_{file_id}_{outcome}"), url: url.to_owned(), payload }
    }
}

/// Completed `webhooks` jobs kept in Redis (the newest); `deliveries` in Postgres is the record.
pub const COMPLETED_WEBHOOK_JOBS_KEPT: i64 = 1000;
/// Failed `webhooks` jobs kept in Redis, for diagnosis.
pub const FAILED_WEBHOOK_JOBS_KEPT: i64 = 5000;

/// The options of a callback's job, the same for whoever enqueues it (worker-svc when a file
/// ends, its reconciler later): the webhook id as the Bull job id, so the same callback enqueued
/// twice is delivered once; [`WEBHOOK_ATTEMPTS`] with exponential backoff from
/// [`WEBHOOK_BACKOFF_MS`] (Bull waits `(2^n - 1) ×` it after the n-th failure: 1 s, 3 s, 7 s, ...,
/// about 4 minutes over all attempts); bounded history.
pub fn webhook_job_options(job: &WebhookJob) -> JobOptions {
    JobOptions::default()
        .job_id(job.webhook_id.clone())
        .attempts(WEBHOOK_ATTEMPTS)
        .backoff(Backoff::exponential(WEBHOOK_BACKOFF_MS))
        .remove_on_complete(KeepJobs::Count(COMPLETED_WEBHOOK_JOBS_KEPT))
        .remove_on_fail(KeepJobs::Count(FAILED_WEBHOOK_JOBS_KEPT))
}

/// The job name of health-svc's canary on the `files` queue. worker-svc answers it at once,
/// without storage or Postgres: it proves that a worker takes `files` jobs and finishes them
/// (a `PING` passes while every worker is wedged; the canary does not).
pub const CANARY_JOB_NAME: &str = "canary";
/// Canary jobs kept in Redis once finished (the newest), for `queuectl jobs`.
pub const CANARY_JOBS_KEPT: i64 = 20;

/// A canary: when health-svc sent it. Job id `canary-<sent_at_ms>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryJob {
    /// Contract version: [`VERSION`].
    pub v: u32,
    /// When it was added, in ms since the epoch (health-svc's clock).
    pub sent_at_ms: u64,
}

impl CanaryJob {
    /// A canary sent at `sent_at_ms`.
    pub fn new(sent_at_ms: u64) -> Self {
        CanaryJob { v: VERSION, sent_at_ms }
    }

    /// Its Bull job id.
    pub fn job_id(&self) -> String {
        format!("canary-{}", self.sent_at_ms)
    }
}

/// The options of a canary job: one attempt (a failed canary is a finding, not work to redo),
/// and a short history.
pub fn canary_job_options(job: &CanaryJob) -> JobOptions {
    JobOptions::default()
        .job_id(job.job_id())
        .attempts(1)
        .remove_on_complete(KeepJobs::Count(CANARY_JOBS_KEPT))
        .remove_on_fail(KeepJobs::Count(CANARY_JOBS_KEPT))
}

/// Refuses a payload of a contract version this build does not know.
pub fn check_version(v: u32) -> Result<(), String> {
    if v == VERSION {
        Ok(())
    } else {
        Err(format!("unsupported job contract version {v} (this worker reads {VERSION})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_version_and_refuse_unknown_fields() {
        let id = Uuid::nil();
        let job = serde_json::to_value(FileJob::new(id)).unwrap();
        assert_eq!(job, serde_json::json!({"v": 1, "file_id": "00000000-0000-0000-0000-000000000000"}));
        let extra = serde_json::json!({"v": 1, "file_id": id, "path": "/etc/passwd"});
        assert!(serde_json::from_value::<FileJob>(extra).is_err());
        assert!(check_version(2).unwrap_err().contains("version 2"));
        let opts = file_job_options(&FileJob::new(id));
        assert_eq!(opts.job_id.as_deref(), Some("00000000-0000-0000-0000-000000000000"));
        assert_eq!(opts.attempts, Some(FILE_ATTEMPTS));
        assert_eq!(
            WebhookJob::new(id, "done", "https://x", serde_json::json!({})).webhook_id,
            format!("msg_{id}_done")
        );
    }

    #[test]
    fn a_callback_is_enqueued_under_its_webhook_id() {
        let job = WebhookJob::new(Uuid::nil(), "failed", "https://x", serde_json::json!({}));
        let opts = webhook_job_options(&job);
        assert_eq!(opts.job_id.as_deref(), Some("msg_00000000-0000-0000-0000-000000000000_failed"));
        assert_eq!(opts.attempts, Some(WEBHOOK_ATTEMPTS));
        assert_eq!(opts.backoff.and_then(|b| b.delay), Some(WEBHOOK_BACKOFF_MS));
    }
}
