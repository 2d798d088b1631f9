//! The one-shot commands: add, counts, job, jobs, retry, remove, clean, pause, resume,
//! obliterate, promote.
//!
//! The commands that touch many jobs (`retry --all`, `promote --all`, `clean`, `obliterate`)
//! run slice by slice (queue-core's `Slices`; `--slice` sets it), draw progress on a terminal,
//! and stop between two slices on Ctrl-C, saying how far they got; the queue is consistent
//! then, and running the command again finishes the work.

use std::cell::Cell;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use queue_core::{Backoff, Connections, Job, JobOptions, JobState, KeepJobs, QueueAdmin, Slices};
use serde_json::{Value, json};

use crate::cli::{AddArgs, CleanArgs, Global, JobArgs, JobsArgs, ObliterateArgs, PromoteArgs, RetryArgs};
use crate::output::{Printer, confirm};

/// Exit code after a Ctrl-C (128 + SIGINT), as shells report it.
const INTERRUPTED: u8 = 130;

fn queue(connections: &Connections, g: &Global, name: &str) -> anyhow::Result<QueueAdmin> {
    Ok(QueueAdmin::with_prefix(connections, &g.prefix, name)?)
}

/// The queue with a slice size set from `--slice`, if given.
fn sliced(q: QueueAdmin, slice: Option<usize>, set: fn(Slices, usize) -> Slices) -> QueueAdmin {
    match slice {
        Some(n) => {
            let slices = set(q.slices(), n);
            q.with_slices(slices)
        }
        None => q,
    }
}

/// Runs a slice-wise operation until it is done or Ctrl-C arrives. An interrupted operation
/// is dropped between two of its script calls (a call already sent still runs whole in Redis),
/// so the queue is consistent; `None` then.
async fn until_ctrl_c<T>(operation: impl Future<Output = queue_core::Result<T>>) -> anyhow::Result<Option<T>> {
    tokio::select! {
        result = operation => Ok(Some(result?)),
        _ = tokio::signal::ctrl_c() => Ok(None),
    }
}

/// Reports an interrupted operation on stderr and returns [`INTERRUPTED`].
fn interrupted(p: &Printer, what: &str, done: u64) -> ExitCode {
    p.progress_end();
    eprintln!("interrupted: {what} {done} jobs; the queue is consistent, run the command again to go on");
    ExitCode::from(INTERRUPTED)
}

/// A job as `queuectl job` prints it: Bull's `Job#toJSON` plus `state`.
pub(crate) fn job_json(job: &Job, state: Option<JobState>) -> Value {
    let mut value = job.to_json();
    value["state"] = json!(state.map_or("unknown", |s| s.as_str()));
    value
}

pub(crate) async fn add(c: &Connections, g: &Global, p: &Printer, args: AddArgs) -> anyhow::Result<ExitCode> {
    let data: Value = serde_json::from_str(&args.data).context("--data is not valid JSON")?;
    let mut opts = JobOptions::default();
    opts.delay = args.delay;
    opts.priority = args.priority;
    opts.attempts = args.attempts;
    opts.job_id = args.job_id;
    if args.lifo {
        opts.lifo = Some(true);
    }
    if args.remove_on_complete {
        opts.remove_on_complete = Some(KeepJobs::Remove(true));
    }
    if let Some(spec) = &args.backoff {
        opts.backoff = Some(Backoff::parse(spec)?);
    }
    let id = queue(c, g, &args.queue)?.add(&args.name, data, opts).await?;
    p.either(&json!({"id": id}), &id);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn counts(c: &Connections, g: &Global, p: &Printer, name: &str) -> anyhow::Result<ExitCode> {
    let counts = queue(c, g, name)?.get_job_counts().await?;
    if p.json {
        p.json(&serde_json::to_value(counts)?);
    } else {
        let rows = serde_json::to_value(counts)?
            .as_object()
            .map(|o| o.iter().map(|(k, v)| vec![k.clone(), v.to_string()]).collect::<Vec<_>>())
            .unwrap_or_default();
        p.table(&["state", "jobs"], &rows, |_, _, _| None);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn job(c: &Connections, g: &Global, p: &Printer, args: JobArgs) -> anyhow::Result<ExitCode> {
    let q = queue(c, g, &args.queue)?;
    let job =
        q.get_job(&args.id).await?.ok_or_else(|| anyhow::anyhow!("job {} not found in {}", args.id, args.queue))?;
    let state = q.get_job_state(&args.id).await?;
    p.document(&job_json(&job, state));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn jobs(c: &Connections, g: &Global, p: &Printer, args: JobsArgs) -> anyhow::Result<ExitCode> {
    let state = JobState::parse(&args.state)?;
    let asc = matches!(state, JobState::Waiting | JobState::Paused | JobState::Active | JobState::Delayed);
    let end = args.limit as i64 - 1;
    let jobs: Vec<Job> =
        queue(c, g, &args.queue)?.get_jobs(&[state], 0, end, asc).await?.into_iter().flatten().collect();
    if p.json {
        p.json(&Value::Array(jobs.iter().map(|j| job_json(j, Some(state))).collect()));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let mut data = j.data.to_string();
            if data.chars().count() > 60 {
                data = data.chars().take(57).collect::<String>() + "...";
            }
            vec![
                j.id.clone(),
                j.name.clone(),
                (j.attempts_made).to_string(),
                j.failed_reason.clone().unwrap_or_default().lines().next().unwrap_or_default().to_owned(),
                data,
            ]
        })
        .collect();
    p.table(&["id", "name", "attempts", "reason", "data"], &rows, |_, _, _| None);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn retry(c: &Connections, g: &Global, p: &Printer, args: RetryArgs) -> anyhow::Result<ExitCode> {
    let q = sliced(queue(c, g, &args.queue)?, args.slice, Slices::retry);
    if let Some(id) = args.id {
        q.retry_job(&id).await?;
        p.either(&json!({"retried": [id]}), &format!("retried job {id}"));
        return Ok(ExitCode::SUCCESS);
    }
    let total = q.get_job_counts().await?.failed;
    let done = Cell::new(0);
    let progress = |n| {
        done.set(n);
        p.progress("retrying", n, total.max(n));
    };
    let Some(moved) = until_ctrl_c(q.retry_all_failed(progress)).await? else {
        return Ok(interrupted(p, "retried", done.get()));
    };
    p.progress_end();
    p.either(&json!({"retried": moved}), &format!("retried {moved} failed jobs"));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn remove(c: &Connections, g: &Global, p: &Printer, args: JobArgs) -> anyhow::Result<ExitCode> {
    confirm(&format!("remove job {} from {}", args.id, args.queue), g.force)?;
    queue(c, g, &args.queue)?.remove(&args.id).await?;
    p.either(&json!({"removed": args.id}), &format!("removed job {}", args.id));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn clean(c: &Connections, g: &Global, p: &Printer, args: CleanArgs) -> anyhow::Result<ExitCode> {
    let state = JobState::parse(&args.state)?;
    let q = sliced(queue(c, g, &args.queue)?, args.slice, Slices::clean);
    confirm(&format!("remove {} jobs older than {} ms from {}", state, args.grace, args.queue), g.force)?;
    let counts = q.get_job_counts().await?;
    let total = match state {
        JobState::Completed => counts.completed,
        JobState::Failed => counts.failed,
        JobState::Delayed => counts.delayed,
        JobState::Waiting => counts.waiting,
        JobState::Paused => counts.paused,
        JobState::Active => counts.active,
        JobState::Stuck => 0,
    };
    let removed_so_far = Cell::new(0);
    // The bar counts the jobs looked at: with a grace period most may stay.
    let progress = |seen: queue_core::CleanProgress| {
        removed_so_far.set(seen.removed);
        p.progress("cleaning", seen.looked_at, total.max(seen.looked_at));
    };
    let Some(removed) = until_ctrl_c(q.clean(Duration::from_millis(args.grace), state, args.limit, progress)).await?
    else {
        return Ok(interrupted(p, "removed", removed_so_far.get()));
    };
    p.progress_end();
    p.either(&json!({"removed": removed}), &format!("removed {} {} jobs", removed.len(), state));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn pause(
    c: &Connections,
    g: &Global,
    p: &Printer,
    name: &str,
    pause: bool,
) -> anyhow::Result<ExitCode> {
    let q = queue(c, g, name)?;
    if pause {
        q.pause().await?
    } else {
        q.resume().await?
    }
    p.either(&json!({"queue": name, "paused": pause}), &format!("{name} {}", if pause { "paused" } else { "resumed" }));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn obliterate(
    c: &Connections,
    g: &Global,
    p: &Printer,
    args: ObliterateArgs,
) -> anyhow::Result<ExitCode> {
    confirm(&format!("delete queue {} and all its jobs", args.queue), g.force)?;
    let q = sliced(queue(c, g, &args.queue)?, args.slice, Slices::obliterate);
    let counts = q.get_job_counts().await?;
    // Checked here too, not only by the script: `QueueAdmin::obliterate` pauses the queue before the
    // script refuses, and a refusal must leave the queue as it was (and name the right flag).
    if counts.active > 0 && !args.include_active {
        let (name, active) = (&args.queue, counts.active);
        anyhow::bail!("queue {name} has {active} active jobs; pass --include-active to delete them too");
    }
    let total = counts.waiting + counts.active + counts.completed + counts.failed + counts.delayed + counts.paused;
    let done = Cell::new(0);
    let progress = |n| {
        done.set(n);
        p.progress("obliterating", n, total.max(n));
    };
    if until_ctrl_c(q.obliterate(args.include_active, progress)).await?.is_none() {
        return Ok(interrupted(p, "deleted", done.get()));
    }
    p.progress_end();
    p.either(&json!({"obliterated": args.queue}), &format!("obliterated {}", args.queue));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn promote(c: &Connections, g: &Global, p: &Printer, args: PromoteArgs) -> anyhow::Result<ExitCode> {
    let q = sliced(queue(c, g, &args.queue)?, args.slice, Slices::promote);
    if let Some(id) = args.id {
        q.promote(&id).await?;
        p.either(&json!({"promoted": id}), &format!("promoted job {id}"));
        return Ok(ExitCode::SUCCESS);
    }
    let total = q.get_job_counts().await?.delayed;
    let done = Cell::new(0);
    let progress = |n| {
        done.set(n);
        p.progress("promoting", n, total.max(n));
    };
    let Some(moved) = until_ctrl_c(q.promote_all(progress)).await? else {
        return Ok(interrupted(p, "promoted", done.get()));
    };
    p.progress_end();
    p.either(&json!({"promoted": moved}), &format!("promoted {moved} delayed jobs"));
    Ok(ExitCode::SUCCESS)
}
