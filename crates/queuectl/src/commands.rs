//! The one-shot commands: add, counts, job, jobs, retry, remove, clean, pause, resume,
//! obliterate, promote.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use queue_core::{Backoff, Connections, Job, JobOptions, JobState, KeepJobs, QueueAdmin};
use serde_json::{Value, json};

use crate::cli::{AddArgs, CleanArgs, Global, JobArgs, JobsArgs, ObliterateArgs, RetryArgs};
use crate::output::{Printer, confirm};

fn queue(connections: &Connections, g: &Global, name: &str) -> anyhow::Result<QueueAdmin> {
    Ok(QueueAdmin::with_prefix(connections, &g.prefix, name)?)
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
    let q = queue(c, g, &args.queue)?;
    if let Some(id) = args.id {
        q.retry_job(&id).await?;
        p.either(&json!({"retried": [id]}), &format!("retried job {id}"));
        return Ok(ExitCode::SUCCESS);
    }
    let total = q.get_job_counts().await?.failed;
    let moved = q.retry_all_failed(queue_core::tooling::DEFAULT_BATCH, |n| p.progress("retrying", n, total)).await?;
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
    let q = queue(c, g, &args.queue)?;
    confirm(&format!("remove {} jobs older than {} ms from {}", state, args.grace, args.queue), g.force)?;
    // Clean in batches so a huge set neither blocks Redis for long nor hides progress.
    let limit = if args.limit == 0 { usize::MAX } else { args.limit };
    let total = match state {
        JobState::Completed => q.get_job_counts().await?.completed,
        JobState::Failed => q.get_job_counts().await?.failed,
        JobState::Delayed => q.get_job_counts().await?.delayed,
        JobState::Waiting => q.get_job_counts().await?.waiting,
        JobState::Paused => q.get_job_counts().await?.paused,
        JobState::Active => q.get_job_counts().await?.active,
        JobState::Stuck => 0,
    }
    .min(limit as u64);
    let mut removed = Vec::new();
    loop {
        let batch = (limit - removed.len()).min(queue_core::tooling::DEFAULT_BATCH);
        let ids = q.clean(Duration::from_millis(args.grace), state, batch).await?;
        let done = ids.len() < batch;
        removed.extend(ids);
        p.progress("cleaning", removed.len() as u64, total.max(removed.len() as u64));
        if done || removed.len() >= limit {
            break;
        }
    }
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
    let q = queue(c, g, &args.queue)?;
    let counts = q.get_job_counts().await?;
    // Checked here too, not only by the script: `QueueAdmin::obliterate` pauses the queue before the
    // script refuses, and a refusal must leave the queue as it was (and name the right flag).
    if counts.active > 0 && !args.include_active {
        let (name, active) = (&args.queue, counts.active);
        anyhow::bail!("queue {name} has {active} active jobs; pass --include-active to delete them too");
    }
    let total = counts.waiting + counts.active + counts.completed + counts.failed + counts.delayed + counts.paused;
    let batches = total.div_ceil(queue_core::tooling::DEFAULT_BATCH as u64).max(1);
    q.obliterate(args.include_active, |n| p.progress("obliterating", (n as u64).min(batches), batches)).await?;
    p.either(&json!({"obliterated": args.queue}), &format!("obliterated {}", args.queue));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn promote(c: &Connections, g: &Global, p: &Printer, args: JobArgs) -> anyhow::Result<ExitCode> {
    queue(c, g, &args.queue)?.promote(&args.id).await?;
    p.either(&json!({"promoted": args.id}), &format!("promoted job {}", args.id));
    Ok(ExitCode::SUCCESS)
}
