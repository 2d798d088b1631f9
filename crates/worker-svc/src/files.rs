//! The `files` handler: one attempt at processing an uploaded file.
//!
//! 1. The execution is recorded in Postgres (`start_execution`); a deleted file ends here, and
//!    a file already `done` or `failed` (a duplicate run after a crash or a lost reply) only
//!    makes sure its callback is enqueued.
//! 2. The original is copied to the job's scratch directory and its size and sha256 are checked
//!    against the row (a mismatch cannot be fixed by a retry).
//! 3. Its type comes from its first bytes. Images, audio and video are probed with ffprobe and
//!    get derivatives from ffmpeg, uploaded as artifacts; other files get checksum and type.
//! 4. The row is updated (`mark_done`, `mark_failed`, `mark_retrying`) and the callback enqueued
//!    *before* the outcome goes back to Redis, so a job never completes without its row.
//!
//! Corrupt or unsupported media fail for good ([`Outcome::Unrecoverable`]); Postgres, storage
//! or Redis errors and timeouts are retried, and the last attempt marks the row failed. At
//! shutdown the job parks (see `drain.rs`); when its lock is lost it writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use platform::jobs::{CANARY_JOB_NAME, CanaryJob, FileJob, check_version};
use platform::records::{FileRecord, FileStatus};
use platform::storage::{Storage, StorageError};
use queue_core::{ActiveJob, Handler, Outcome, typed_handler};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::callback;
use crate::context::Context;
use crate::detect::{Detected, Kind, detect};
use crate::ffmpeg::{NoProgress, ProgressSink, RunError, Tool};
use crate::interrupt::{Interrupt, Watch};
use crate::media::{self, Artifact, Probe};

/// The queue label of this handler's metrics.
const QUEUE: &str = "files";

/// Why processing stopped short.
#[derive(Debug)]
enum Problem {
    /// The content cannot be processed; no retry can help.
    Content { reason: String, detected: Option<String> },
    /// Something around the content failed (storage, disk, a tool killed); worth a retry.
    Transient { reason: String, detected: Option<String> },
    /// Shutdown, a lost lock or the timeout.
    Interrupted(Interrupt),
}

impl Problem {
    fn content(reason: impl Into<String>, detected: &Detected) -> Self {
        Problem::Content { reason: reason.into(), detected: Some(detected.mime.clone()) }
    }

    fn transient(reason: impl Into<String>) -> Self {
        Problem::Transient { reason: reason.into(), detected: None }
    }

    /// A tool's failure: bad content, an interruption, or a transient problem.
    fn tool(e: RunError, what: &str, detected: &Detected) -> Self {
        match e {
            RunError::Interrupted(interrupt) => Problem::Interrupted(interrupt),
            e if e.is_content_error() => {
                let stderr = match &e {
                    RunError::Failed { stderr, .. } if !stderr.is_empty() => stderr.as_str(),
                    _ => "no message",
                };
                Problem::content(
                    format!("{what}: the {} content is corrupt or unsupported ({stderr})", detected.mime),
                    detected,
                )
            }
            e => Problem::Transient { reason: format!("{what}: {e}"), detected: Some(detected.mime.clone()) },
        }
    }
}

/// What processing found.
struct Processed {
    detected: Detected,
    result: Value,
}

/// How an attempt ended, for the outcome and the metrics.
enum End {
    Done(Value),
    /// Nothing to process (file deleted, or already finished by an earlier run).
    Skipped(Value),
    Failed(String),
    Retry(String),
    LockLost,
    Interrupted,
}

/// The handler: runs one attempt and turns it into an [`Outcome`], in a span naming the job
/// (the handler runtime does not inherit the worker's).
/// `on_upload` for uploads; health-svc's canaries ([`CANARY_JOB_NAME`]) are answered at once,
/// with when they were sent and when they were taken, touching neither storage nor Postgres.
pub(crate) fn with_canary(on_upload: Handler) -> Handler {
    let on_canary = typed_handler(|_job, canary: CanaryJob| async move {
        match check_version(canary.v) {
            Ok(()) => Outcome::Completed(serde_json::json!({
                "canary": true,
                "sent_at_ms": canary.sent_at_ms,
                "taken_at_ms": chrono::Utc::now().timestamp_millis(),
            })),
            Err(reason) => Outcome::Unrecoverable(reason),
        }
    });
    Arc::new(move |job: ActiveJob| if job.name() == CANARY_JOB_NAME { on_canary(job) } else { on_upload(job) })
}

pub(crate) async fn handle(ctx: Arc<Context>, job: ActiveJob, data: FileJob) -> Outcome {
    let span = tracing::info_span!("job", queue = QUEUE, id = %job.id(), attempt = job.attempt(), file = %data.file_id);
    handle_attempt(ctx, job, data).instrument(span).await
}

async fn handle_attempt(ctx: Arc<Context>, job: ActiveJob, data: FileJob) -> Outcome {
    let running = ctx.drain.enter();
    let gauge = ctx.metrics.running(QUEUE);
    ctx.metrics.waited(QUEUE, job.job().timestamp, job.job().processed_on);
    let started = Instant::now();
    let end = attempt(&ctx, &job, &data).await;
    let (label, outcome) = match end {
        End::Done(result) => {
            if let Err(e) = job.progress(json!(100)).await {
                tracing::debug!(error = %e, "could not report the final progress");
            }
            ("done", Outcome::Completed(result))
        }
        End::Skipped(result) => ("skipped", Outcome::Completed(result)),
        End::Failed(reason) => ("failed", Outcome::Unrecoverable(reason)),
        End::Retry(reason) => ("retry", Outcome::Retry(reason)),
        End::LockLost => ("lock_lost", Outcome::Retry(Interrupt::LockLost.to_string())),
        End::Interrupted => {
            ctx.metrics.finished(QUEUE, "interrupted", started.elapsed());
            tracing::info!("shutdown interrupted the job; it is left to be retried");
            drop(gauge);
            return running.park().await;
        }
    };
    let took_ms = started.elapsed().as_millis() as u64;
    match &outcome {
        Outcome::Completed(_) => tracing::info!(outcome = label, took_ms, "file processed"),
        Outcome::Unrecoverable(reason) => tracing::warn!(took_ms, reason, "file failed for good"),
        Outcome::Retry(reason) | Outcome::RetryAfter(_, reason) => {
            tracing::warn!(outcome = label, took_ms, reason, "attempt failed; retried while attempts are left")
        }
    }
    ctx.metrics.finished(QUEUE, label, started.elapsed());
    drop(gauge);
    outcome
}

async fn attempt(ctx: &Context, job: &ActiveJob, data: &FileJob) -> End {
    let id = data.file_id;
    if let Err(reason) = check_version(data.v) {
        // The reconciler marks the row failed once it sees the job failed in Redis.
        return End::Failed(reason);
    }
    let attempt = job.attempt();
    let row = match ctx.db.start_execution(id, attempt as i32, &ctx.instance).await {
        Ok(Some(row)) => row,
        Ok(None) => return End::Skipped(json!({"skipped": "the file was deleted"})),
        Err(e) => return End::Retry(format!("recording the execution in Postgres failed: {e}")),
    };
    let end = match row.status() {
        FileStatus::Done | FileStatus::Failed => already_finished(ctx, &row).await,
        FileStatus::Queued | FileStatus::Processing => {
            let watch = Watch::new(ctx.shutdown.clone(), Some(job.clone()), ctx.job_timeout);
            let processed = process(ctx, job, &row, &watch).await;
            record(ctx, job, id, processed).await
        }
    };
    let label = match &end {
        End::Done(_) => "done",
        End::Skipped(_) => "skipped",
        End::Failed(_) => "failed",
        End::Retry(_) => "retry",
        End::LockLost => "lock lost",
        End::Interrupted => "interrupted",
    };
    if let Err(e) = ctx.db.end_execution(id, attempt as i32, &ctx.instance, label).await {
        tracing::warn!(error = %e, "could not record the end of the execution");
    }
    end
}

/// A duplicate run of a finished file: make sure its callback is enqueued, then end as it ended.
async fn already_finished(ctx: &Context, row: &FileRecord) -> End {
    if let Err(e) = callback::enqueue(&ctx.webhooks, row).await {
        return End::Retry(format!("enqueuing the callback failed: {e}"));
    }
    match row.status() {
        FileStatus::Failed => End::Failed(row.error.clone().unwrap_or_else(|| "failed".to_owned())),
        _ => End::Skipped(row.result.clone().unwrap_or(Value::Null)),
    }
}

/// Writes the attempt's end to Postgres (and enqueues the callback of a finished file).
async fn record(ctx: &Context, job: &ActiveJob, id: Uuid, processed: Result<Processed, Problem>) -> End {
    let last_attempt = job.attempt() >= job.job().opts.attempts.unwrap_or(1).max(1);
    match processed {
        Ok(Processed { detected, result }) => match ctx.db.mark_done(id, &detected.mime, &result).await {
            Ok(_) => match finished(ctx, id).await {
                Ok(()) => End::Done(result),
                Err(reason) => End::Retry(reason),
            },
            Err(e) => End::Retry(format!("recording the result in Postgres failed: {e}")),
        },
        Err(Problem::Content { reason, detected }) => fail(ctx, id, reason, detected).await,
        Err(Problem::Transient { reason, detected }) if last_attempt => fail(ctx, id, reason, detected).await,
        Err(Problem::Interrupted(Interrupt::TimedOut(limit))) if last_attempt => {
            fail(ctx, id, Interrupt::TimedOut(limit).to_string(), None).await
        }
        Err(Problem::Transient { reason, .. }) => retry(ctx, id, reason).await,
        Err(Problem::Interrupted(interrupt @ Interrupt::TimedOut(_))) => retry(ctx, id, interrupt.to_string()).await,
        Err(Problem::Interrupted(Interrupt::LockLost)) => End::LockLost,
        Err(Problem::Interrupted(Interrupt::Shutdown)) => {
            if let Err(e) = ctx.db.mark_retrying(id, &Interrupt::Shutdown.to_string()).await {
                tracing::warn!(error = %e, "could not put the row back to queued; the retry will");
            }
            End::Interrupted
        }
    }
}

async fn retry(ctx: &Context, id: Uuid, reason: String) -> End {
    if let Err(e) = ctx.db.mark_retrying(id, &reason).await {
        tracing::warn!(error = %e, "could not record the retry in Postgres");
    }
    End::Retry(reason)
}

async fn fail(ctx: &Context, id: Uuid, reason: String, detected: Option<String>) -> End {
    match record_failure(ctx, id, &reason, detected.as_deref()).await {
        Ok(()) => End::Failed(reason),
        // Retried: the next attempt meets the same content and records it then. On the last
        // attempt the job fails in Redis and the reconciler records it.
        Err(e) => End::Retry(format!("{reason} (and {e})")),
    }
}

/// Marks file `id` failed for good with `reason` and enqueues its callback. The reconciler
/// uses it too, for jobs that failed in Redis without their row.
pub(crate) async fn record_failure(
    ctx: &Context,
    id: Uuid,
    reason: &str,
    detected: Option<&str>,
) -> Result<(), String> {
    ctx.db
        .mark_failed(id, reason, detected)
        .await
        .map_err(|e| format!("recording the failure in Postgres failed: {e}"))?;
    finished(ctx, id).await
}

/// After the row is finished: its callback, from the row as it now is.
async fn finished(ctx: &Context, id: Uuid) -> Result<(), String> {
    let row = match ctx.db.get_file(id).await {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(()),
        Err(e) => return Err(format!("reading the row back from Postgres failed: {e}")),
    };
    callback::enqueue(&ctx.webhooks, &row).await.map(drop).map_err(|e| format!("enqueuing the callback failed: {e}"))
}

/// Reports progress to the job, only ever upwards, strictly below 100 until the end.
struct Progress<'a> {
    job: &'a ActiveJob,
    last: AtomicU32,
}

impl Progress<'_> {
    async fn set(&self, percent: u32) {
        let percent = percent.min(99);
        if self.last.fetch_max(percent, Ordering::AcqRel) < percent
            && let Err(e) = self.job.progress(json!(percent)).await
        {
            tracing::debug!(error = %e, "could not report progress");
        }
    }
}

/// Maps ffmpeg's output time onto `from..to` percent of the job, for a run writing `total_us`.
struct Span<'a> {
    progress: &'a Progress<'a>,
    from: u32,
    to: u32,
    total_us: u64,
}

impl ProgressSink for Span<'_> {
    async fn out_time(&self, micros: u64) {
        let share = (micros as f64 / self.total_us.max(1) as f64).clamp(0.0, 1.0);
        self.progress.set(self.from + ((self.to - self.from) as f64 * share) as u32).await;
    }
}

/// First pause before reading the upload again from a store that did not answer.
const STORE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest pause between those reads.
const STORE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

async fn process(ctx: &Context, job: &ActiveJob, row: &FileRecord, watch: &Watch) -> Result<Processed, Problem> {
    let id = row.id;
    let progress = Progress { job, last: AtomicU32::new(0) };
    let dir =
        ctx.scratch.job_dir(id, job.attempt()).map_err(|e| Problem::transient(format!("scratch directory: {e}")))?;
    let original = dir.file("original");
    let key = Storage::original_key(id);
    // A store that does not answer (S3 down, a network cut) is waited for, within this attempt
    // (its lock is renewed meanwhile), rather than spending the job's attempts: the file is
    // processed once the store is back. The job's timeout, lock loss and shutdown still end it.
    let mut pause = STORE_RETRY_FIRST;
    let stored = loop {
        let stored = tokio::select! {
            interrupt = watch.wait() => return Err(Problem::Interrupted(interrupt)),
            stored = ctx.storage.download_to(&key, &original) => stored,
        };
        match stored {
            Err(StorageError::Store(e)) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "the store does not answer; waiting for it");
                tokio::select! {
                    interrupt = watch.wait() => return Err(Problem::Interrupted(interrupt)),
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(STORE_RETRY_MAX);
            }
            other => break other,
        }
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(StorageError::NotFound) => {
            return Err(Problem::Content {
                reason: "the uploaded content is missing from storage".into(),
                detected: None,
            });
        }
        Err(e) => return Err(Problem::transient(format!("reading the upload: {e}"))),
    };
    if stored.size != row.size as u64 || stored.sha256 != row.sha256 {
        return Err(Problem::Content {
            reason: format!(
                "checksum mismatch: storage holds {} bytes with sha256 {}, the upload recorded {} bytes with sha256 {}",
                stored.size, stored.sha256, row.size, row.sha256
            ),
            detected: None,
        });
    }
    progress.set(5).await;
    let detected =
        detect(&original).map_err(|e| Problem::transient(format!("reading the upload's first bytes: {e}")))?;
    let mut result = json!({
        "detected_type": detected.mime,
        "kind": detected.kind,
        "size": stored.size,
        "sha256": stored.sha256,
    });
    if !detected.kind.is_media() {
        result["artifacts"] = json!([]);
        return Ok(Processed { detected, result });
    }

    let tools = &ctx.tools;
    let threads = tools.config().threads;
    let probed = tools.run(Tool::Ffprobe, media::probe_args(&original, threads), watch, None::<&NoProgress>).await;
    let probe = Probe::parse(&probed.map_err(|e| Problem::tool(e, "ffprobe", &detected))?)
        .map_err(|reason| Problem::content(reason, &detected))?;
    let kind = match detected.kind {
        Kind::Video if probe.has_motion_video() => Kind::Video,
        Kind::Video | Kind::Audio if probe.has_audio() => Kind::Audio,
        Kind::Image if probe.has_picture() => Kind::Image,
        _ => return Err(Problem::content(format!("no stream fit for a {} file", detected.mime), &detected)),
    };
    progress.set(15).await;

    let mut made = Vec::new();
    match kind {
        Kind::Image => {
            let out = dir.file(Artifact::Thumbnail.name());
            let run = tools.run(
                Tool::Ffmpeg,
                media::thumbnail_args(&original, &out, threads, None),
                watch,
                None::<&NoProgress>,
            );
            run.await.map_err(|e| Problem::tool(e, "making the thumbnail", &detected))?;
            made.push((Artifact::Thumbnail, out));
            progress.set(70).await;
        }
        Kind::Video => {
            let duration = probe.duration_s.unwrap_or(0.0);
            let seek = (duration > 0.5).then(|| (duration / 2.0).min(1.0));
            let out = dir.file(Artifact::Thumbnail.name());
            let run = tools.run(
                Tool::Ffmpeg,
                media::thumbnail_args(&original, &out, threads, seek),
                watch,
                None::<&NoProgress>,
            );
            run.await.map_err(|e| Problem::tool(e, "making the thumbnail", &detected))?;
            made.push((Artifact::Thumbnail, out));
            progress.set(25).await;

            let length = tools.config().preview;
            let out = dir.file(Artifact::Preview.name());
            let expected = if duration > 0.0 { length.as_secs_f64().min(duration) } else { length.as_secs_f64() };
            let span = Span { progress: &progress, from: 25, to: 95, total_us: (expected * 1e6) as u64 };
            let args = media::preview_args(&original, &out, threads, length, tools.libx264);
            tools
                .run(Tool::Ffmpeg, args, watch, Some(&span))
                .await
                .map_err(|e| Problem::tool(e, "making the preview", &detected))?;
            made.push((Artifact::Preview, out));
        }
        Kind::Audio => {
            let out = dir.file(Artifact::Waveform.name());
            let run =
                tools.run(Tool::Ffmpeg, media::waveform_args(&original, &out, threads), watch, None::<&NoProgress>);
            run.await.map_err(|e| Problem::tool(e, "making the waveform", &detected))?;
            made.push((Artifact::Waveform, out));
            progress.set(80).await;
        }
        Kind::Other => unreachable!("only media get here"),
    }

    let mut artifacts = Vec::new();
    for (artifact, path) in made {
        let size = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        if size == 0 {
            return Err(Problem::content(format!("ffmpeg made an empty {}", artifact.name()), &detected));
        }
        let stored = ctx.storage.put_file(&Storage::artifact_key(id, artifact.name()), &path).await.map_err(|e| {
            Problem::Transient {
                reason: format!("storing {}: {e}", artifact.name()),
                detected: Some(detected.mime.clone()),
            }
        })?;
        artifacts.push(json!({"name": artifact.name(), "content_type": artifact.content_type(), "size": stored.size}));
    }
    progress.set(98).await;
    result["kind"] = json!(kind);
    result["media"] = serde_json::to_value(&probe).unwrap_or(Value::Null);
    result["artifacts"] = Value::Array(artifacts);
    Ok(Processed { detected, result })
}
