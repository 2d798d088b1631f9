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
/// Attempts of a `webhooks` job, with exponential backoff from [`WEBHOOK_BACKOFF_MS`].
pub const WEBHOOK_ATTEMPTS: u64 = 8;
/// First retry delay of a callback delivery; Bull's exponential backoff waits `(2^n - 1) ×` this
/// after the n-th failure (1 s, 3 s, 7 s, ...: about 4 minutes over all attempts).
pub const WEBHOOK_BACKOFF_MS: u64 = 1000;

/// First retry delay of a `files` job; Bull's exponential backoff waits `(2^n - 1) ×` this after
/// the n-th failure (5 s, then 15 s).
pub const FILE_BACKOFF_MS: u64 = 5000;
/// How long finished jobs stay in Redis (Bull's `removeOnComplete`/`removeOnFail` age, seconds),
/// for dashboards and `queuectl`; Postgres is the record that lasts.
pub const KEEP_FINISHED_SECS: u64 = 7 * 24 * 3600;
/// At most this many finished jobs of each kind stay in Redis per queue.
pub const KEEP_FINISHED_COUNT: i64 = 10_000;

/// What to keep of finished jobs: bounded by age and count, so Redis memory does not grow with
/// every upload ever made.
fn keep_finished() -> KeepJobs {
    KeepJobs::Policy { age: Some(KEEP_FINISHED_SECS), count: Some(KEEP_FINISHED_COUNT) }
}

/// The options of file `file_id`'s job, the same wherever it is enqueued (api-svc at upload,
/// worker-svc's reconciler): the file id as the Bull job id (a second add changes nothing),
/// [`FILE_ATTEMPTS`] attempts with exponential backoff from [`FILE_BACKOFF_MS`].
pub fn file_job_options(file_id: Uuid) -> JobOptions {
    JobOptions::default()
        .job_id(file_id.to_string())
        .attempts(FILE_ATTEMPTS)
        .backoff(Backoff::exponential(FILE_BACKOFF_MS))
        .remove_on_complete(keep_finished())
        .remove_on_fail(keep_finished())
}

/// The options of a callback's job: `webhook_id` as the Bull job id (enqueuing the same callback
/// twice delivers it once), [`WEBHOOK_ATTEMPTS`] attempts with exponential backoff from
/// [`WEBHOOK_BACKOFF_MS`].
pub fn webhook_job_options(webhook_id: &str) -> JobOptions {
    JobOptions::default()
        .job_id(webhook_id)
        .attempts(WEBHOOK_ATTEMPTS)
        .backoff(Backoff::exponential(WEBHOOK_BACKOFF_MS))
        .remove_on_complete(keep_finished())
        .remove_on_fail(keep_finished())
}

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
        assert_eq!(
            WebhookJob::new(id, "done", "https://x", serde_json::json!({})).webhook_id,
            format!("msg_{id}_done")
        );
    }

    #[test]
    fn both_services_enqueue_with_the_same_options() {
        let id = Uuid::new_v4();
        let file = file_job_options(id);
        assert_eq!(file.job_id.as_deref(), Some(id.to_string().as_str()));
        assert_eq!((file.attempts, file.backoff.as_ref().map(|b| b.kind.as_str())), (Some(3), Some("exponential")));
        let webhook = webhook_job_options(&WebhookJob::new(id, "done", "https://x", serde_json::json!({})).webhook_id);
        assert_eq!(webhook.job_id, Some(format!("msg_{id}_done")));
        assert_eq!(webhook.attempts, Some(WEBHOOK_ATTEMPTS));
        assert_eq!(webhook.backoff.and_then(|b| b.delay), Some(WEBHOOK_BACKOFF_MS));
    }
}
