//! A runnable demo of the library: a worker on the `files` and `webhooks` queues of
//! `QUEUE_PREFIX`, a producer adding a few jobs to each, and the connection budget in use.
//!
//! `scripts/run` starts it (and a local Redis if `REDIS_URL` is unset). Stop it with Ctrl-C: the
//! worker finishes the jobs in hand first.

use std::time::Duration;

use queue_core::{
    Backoff, Connections, JobOptions, Outcome, Queue, QueueSpec, RedisConfig, Worker, WorkerSettings, handler,
};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = RedisConfig::from_env()?;
    // Command + subscriber + one blocking connection per queue.
    let connections = Connections::builder(config, "demo").subscriber(true).blocking(2).build()?;
    let files = Queue::new(&connections, "files")?;
    let webhooks = Queue::new(&connections, "webhooks")?;

    let process_file = handler(|job| async move {
        job.progress(json!(50)).await.ok();
        let path = job.data()["path"].as_str().unwrap_or_default().to_owned();
        if path.ends_with(".bad") {
            return Outcome::Unrecoverable(format!("cannot process {path}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Outcome::Completed(json!({"path": path, "bytes": path.len()}))
    });
    let deliver = handler(|job| async move {
        tracing::info!(data = %job.data(), "pretending to deliver a webhook");
        Outcome::Completed(json!({"status": 200}))
    });
    let worker = Worker::start(
        &connections,
        WorkerSettings::default(),
        vec![QueueSpec::new(files.clone(), 4, process_file), QueueSpec::new(webhooks.clone(), 2, deliver)],
    )
    .await?;

    for i in 0..5 {
        let path = if i == 4 { "/data/file4.bad".to_owned() } else { format!("/data/file{i}.mp4") };
        let opts = JobOptions::default().attempts(3).backoff(Backoff::exponential(500));
        let id = files.add("__default__", json!({"i": i, "path": path}), opts).await?;
        webhooks.add("__default__", json!({"file_job": id}), JobOptions::default()).await?;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let (f, w) = (files.get_job_counts().await?, webhooks.get_job_counts().await?);
                let stats = connections.stats();
                tracing::info!(files = ?f, webhooks = ?w, connections_open = stats.open, budget = stats.budget, "status");
            }
        }
    }
    worker.close(Duration::from_secs(10)).await;
    Ok(())
}
