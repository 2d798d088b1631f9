//! `cargo run --release -p queue-bench -- --jobs N --concurrency C [--redis-url U]`
//!
//! Prints one JSON line: add and process rates, Redis commands and CPU per processed job (deltas
//! of `INFO commandstats` and `INFO cpu` over the processing phase), the connections the process
//! held, and pickup latency (add to handler start) measured in a separate phase at a low rate on
//! an idle queue. Handler: no-op. Job data: `{"i": n, "path": "/data/file<n>.mp4"}`.
//!
//! The processing phase resets Redis statistics (`CONFIG RESETSTAT`): run it on a Redis that
//! nothing else uses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use queue_core::tooling::Raw;
use queue_core::{
    Connections, JobOptions, Outcome, Queue, QueueAdmin, QueueSpec, RedisConfig, RedisUrl, Worker, WorkerSettings,
    handler,
};
use serde_json::json;

/// Benchmark options.
#[derive(Debug, Parser)]
struct Args {
    /// Jobs to add and process.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Worker concurrency.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Redis to use (its statistics are reset).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Adds in flight during the add phase.
    #[arg(long, default_value_t = 100)]
    in_flight: usize,
    /// Samples of the latency phase.
    #[arg(long, default_value_t = 500)]
    latency_samples: usize,
    /// Fetch mode: blocking (one blocking connection) or zero-blocking.
    #[arg(long, default_value = "blocking")]
    mode: String,
}

async fn info(c: &Connections, section: &str) -> anyhow::Result<HashMap<String, String>> {
    let text: String = Raw::new(c).query(&["INFO", section]).await?;
    Ok(text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_owned(), v.trim().to_owned())).collect())
}

/// Total calls in `INFO commandstats`, and CPU seconds of the server.
async fn redis_cost(c: &Connections) -> anyhow::Result<(u64, f64)> {
    let stats = info(c, "commandstats").await?;
    let calls = stats
        .values()
        .filter_map(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")).and_then(|n| n.parse::<u64>().ok()))
        .sum();
    let cpu = info(c, "cpu").await?;
    let secs = |k: &str| cpu.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((calls, secs("used_cpu_sys") + secs("used_cpu_user")))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn job_data(i: u64) -> serde_json::Value {
    json!({"i": i, "path": format!("/data/file{i}.mp4")})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = RedisConfig::new(RedisUrl::parse(&args.redis_url)?);
    config.prefix = format!("bench-{}", std::process::id());
    config.max_connections = Some(3);
    let blocking = usize::from(args.mode == "blocking");
    let connections = Connections::builder(config, "queue-bench").subscriber(true).blocking(blocking).build()?;
    let q = Queue::new(&connections, "bench")?;

    // Add phase: `in_flight` adds outstanding at any time.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.jobs {
        // Join as we go: a finished task's memory is only freed when it is joined.
        if tasks.len() >= args.in_flight {
            tasks.join_next().await.expect("tasks in flight")??;
        }
        let q = q.clone();
        tasks.spawn(async move { q.add("__default__", job_data(i), JobOptions::default()).await });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let add_secs = started.elapsed().as_secs_f64();

    // Processing phase.
    let done = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let noop = {
        let (done, all_done, total) = (done.clone(), all_done.clone(), args.jobs);
        handler(move |_| {
            let (done, all_done) = (done.clone(), all_done.clone());
            async move {
                if done.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    all_done.notify_one();
                }
                Outcome::Completed(serde_json::Value::Null)
            }
        })
    };
    let _: () = Raw::new(&connections).query(&["CONFIG", "RESETSTAT"]).await?;
    let (calls_before, cpu_before) = redis_cost(&connections).await?;
    let started = Instant::now();
    let worker =
        Worker::start(&connections, WorkerSettings::default(), vec![QueueSpec::new(q.clone(), args.concurrency, noop)])
            .await?;
    all_done.notified().await;
    // The last completions are written after their handlers return.
    while worker.stats().completed < args.jobs {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let process_secs = started.elapsed().as_secs_f64();
    let (calls_after, cpu_after) = redis_cost(&connections).await?;
    let clients = connections.stats().open;
    worker.close(Duration::from_secs(5)).await;

    // Latency phase: an idle queue, one job at a time.
    let lq = Queue::new(&connections, "bench-latency")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let stamp = handler(move |job| {
        let tx = tx.clone();
        async move {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()
                as f64;
            let added = job.data()["t"].as_f64().unwrap_or(now);
            let _ = tx.send((now - added) / 1000.0);
            Outcome::Completed(serde_json::Value::Null)
        }
    });
    let worker =
        Worker::start(&connections, WorkerSettings::default(), vec![QueueSpec::new(lq.clone(), 1, stamp)]).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut samples = Vec::with_capacity(args.latency_samples);
    for i in 0..args.latency_samples {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as f64;
        lq.add("__default__", json!({"i": i, "t": t}), JobOptions::default()).await?;
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(ms)) => samples.push(ms),
            _ => anyhow::bail!("latency job {i} was not picked up within 10 s"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.close(Duration::from_secs(5)).await;
    samples.sort_by(f64::total_cmp);

    // Clean up this run's keys.
    QueueAdmin::from_queue(q).obliterate(true, |_| {}).await?;
    QueueAdmin::from_queue(lq).obliterate(true, |_| {}).await?;

    let jobs = args.jobs as f64;
    // Peak resident memory of this process (worker + producer), from the kernel.
    let rss_mb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").to_owned()))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0);
    println!(
        "{}",
        json!({
            "impl": "queue-core",
            "mode": args.mode,
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "add_jobs_per_s": (jobs / add_secs).round(),
            "process_jobs_per_s": (jobs / process_secs).round(),
            "redis_clients": clients,
            "redis_cmds_per_job_process": ((calls_after.saturating_sub(calls_before)) as f64 / jobs * 100.0).round() / 100.0,
            "redis_cpu_us_per_job_process": ((cpu_after - cpu_before) * 1e6 / jobs * 10.0).round() / 10.0,
            "p50_pickup_ms": (percentile(&samples, 50.0) * 1000.0).round() / 1000.0,
            "p99_pickup_ms": (percentile(&samples, 99.0) * 1000.0).round() / 1000.0,
            "rss_mb": rss_mb,
        })
    );
    Ok(())
}
