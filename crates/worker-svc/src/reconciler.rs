//! The reconciler: Postgres says what was acknowledged, Redis may have forgotten it.
//!
//! At start-up and then every `WORKER_RECONCILE_INTERVAL_MS`, one worker-svc instance (the one
//! that gets the Postgres advisory lock [`LOCK_KEY`]) compares the two:
//! - a file still `queued` or `processing` whose `files` job is missing (Redis lost its last
//!   second of AOF, someone ran `FLUSHALL`, api-svc's enqueue failed after its commit) gets its
//!   job again, with the options api-svc uses (`platform::jobs::file_job_options`);
//! - a file whose job failed in Redis without its row being marked (a job that stalled too
//!   often, a payload this build cannot read) is marked `failed` with the job's reason, and its
//!   callback enqueued;
//! - a finished file whose callback is still `pending` and whose `webhooks` job is missing gets
//!   that job again (a callback whose job failed without the row knowing is marked `failed`).
//!
//! Rows younger than `WORKER_RECONCILE_MIN_AGE_MS` are left alone: api-svc is probably still
//! enqueuing them (re-adding them would be harmless anyway: job ids are file ids).

use std::sync::Arc;
use std::time::Duration;

use platform::jobs::{FileJob, file_job_options};
use queue_core::{DEFAULT_JOB_NAME, JobState};
use tokio::sync::watch;

use crate::callback;
use crate::context::Context;
use crate::files;

/// The advisory lock that makes one instance the reconciler (`"wrkrecon"` as a number).
pub const LOCK_KEY: i64 = 0x7772_6b72_6563_6f6e;
/// Rows looked at per pass, of each kind.
const BATCH: i64 = 10_000;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Report {
    /// Unfinished files looked at.
    pub checked: usize,
    /// Files whose job was added again.
    pub requeued: usize,
    /// Files marked failed after their job failed in Redis.
    pub failed: usize,
    /// Callbacks whose job was added again.
    pub callbacks_requeued: usize,
}

/// Runs a pass now and then every `interval`, until `shutdown` turns true.
pub(crate) async fn run(ctx: Arc<Context>, interval: Duration, min_age: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        match pass(&ctx, min_age).await {
            Ok(Some(report)) if report != Report { checked: report.checked, ..Report::default() } => {
                tracing::info!(?report, "reconciled Postgres with Redis");
            }
            Ok(Some(report)) => tracing::debug!(?report, "reconciled: nothing to repair"),
            Ok(None) => tracing::debug!("another instance holds the reconciler lock"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "reconciling failed; trying again next interval"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One pass, if this instance gets the lock (`None` when another holds it).
pub(crate) async fn pass(ctx: &Context, min_age: Duration) -> anyhow::Result<Option<Report>> {
    ctx.db.with_advisory_lock(LOCK_KEY, || repair(ctx, min_age)).await
}

async fn repair(ctx: &Context, min_age: Duration) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let unfinished = ctx.db.unfinished_files(min_age, BATCH).await?;
    if unfinished.len() as i64 == BATCH {
        tracing::warn!(batch = BATCH, "more unfinished files than one pass checks; the rest wait for the next pass");
    }
    for id in unfinished {
        report.checked += 1;
        let job_id = id.to_string();
        match ctx.files.get_job_state(&job_id).await? {
            None => {
                // Read again: the file may have finished (and its job been removed) meanwhile.
                let still = ctx
                    .db
                    .get_file(id)
                    .await?
                    .is_some_and(|row| matches!(row.status.as_str(), "queued" | "processing"));
                if still {
                    let job = FileJob::new(id);
                    ctx.files.add(DEFAULT_JOB_NAME, &job, file_job_options(&job)).await?;
                    tracing::info!(file = %id, "re-enqueued a file whose job was missing from Redis");
                    report.requeued += 1;
                }
            }
            Some(JobState::Failed) => {
                let job = ctx.files.get_job(&job_id).await?;
                let reason = job
                    .and_then(|j| j.failed_reason)
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "the job failed in the queue".to_owned());
                files::record_failure(ctx, id, &reason, None).await.map_err(anyhow::Error::msg)?;
                tracing::info!(file = %id, reason, "recorded a failure that only Redis knew");
                report.failed += 1;
            }
            Some(JobState::Completed) => {
                let still = ctx
                    .db
                    .get_file(id)
                    .await?
                    .is_some_and(|row| matches!(row.status.as_str(), "queued" | "processing"));
                if still {
                    tracing::warn!(file = %id, "the job completed but the row is unfinished; leaving it to an operator");
                }
            }
            Some(_) => {}
        }
    }
    for row in ctx.db.pending_callbacks(min_age, BATCH).await? {
        let Some(job) = callback::job_for(&row) else { continue };
        match ctx.webhooks.get_job_state(&job.webhook_id).await? {
            None => {
                callback::enqueue(&ctx.webhooks, &row).await?;
                tracing::info!(file = %row.id, "re-enqueued a callback whose job was missing from Redis");
                report.callbacks_requeued += 1;
            }
            Some(JobState::Failed) => ctx.db.set_delivery_state(row.id, "failed").await?,
            Some(_) => {}
        }
    }
    Ok(report)
}
