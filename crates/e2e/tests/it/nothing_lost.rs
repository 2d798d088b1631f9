//! Nothing acknowledged is lost: api-svc acknowledges an upload once its row is committed, and
//! worker-svc's reconciler gives back to Redis what Redis lost. Neither service is restarted.

use std::path::PathBuf;
use std::time::Duration;

use e2e::{Stack, StackOptions};
use test_support::RedisServer;
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(60);

/// The stack on a private Redis, with a reconciler that looks every half second at rows older
/// than a second.
async fn stack_on(redis: &RedisServer) -> Stack {
    Stack::start(StackOptions {
        redis_url: Some(redis.url()),
        worker_vars: vec![
            ("WORKER_RECONCILE_INTERVAL_MS", "500".to_owned()),
            ("WORKER_RECONCILE_MIN_AGE_MS", "1000".to_owned()),
        ],
        ..StackOptions::default()
    })
    .await
}

async fn upload_texts(stack: &Stack, label: &str, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(
            stack.accepted(&format!("{label}-{i}.txt"), "text/plain", format!("{label} {i}\n").into_bytes()).await,
        );
    }
    ids
}

/// Every file of `ids` reaches `done`, and both services are still the processes they were.
async fn all_done(stack: &mut Stack, ids: &[Uuid]) {
    for id in ids {
        let file = stack.finished(*id, LIMIT).await;
        assert_eq!(file["status"], "done", "{file}");
        assert!(stack.executions(*id).await >= 1);
    }
    assert!(stack.api.running() && stack.worker.running(), "no service was restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_acknowledged_while_redis_is_down_are_processed_when_it_returns() {
    let mut redis = RedisServer::start();
    let mut stack = stack_on(&redis).await;
    let before = upload_texts(&stack, "before", 1).await;
    all_done(&mut stack, &before).await;

    redis.kill();
    let down = upload_texts(&stack, "down", 5).await;
    for id in &down {
        assert_eq!(stack.file(*id).await["status"], "queued", "acknowledged, waiting for Redis");
    }
    redis.restart();
    all_done(&mut stack, &down).await;
    let log = stack.worker.log();
    assert!(log.contains("reconciled Postgres with Redis"), "the reconciler enqueued them: {log}");
}

/// The AOF file Redis appends to now (`appendonlydir/<name>.<n>.incr.aof`, the highest `n`).
fn appended_aof(redis: &RedisServer) -> PathBuf {
    let dir = redis.dir().join("appendonlydir");
    let number = |path: &PathBuf| {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        name.strip_suffix(".incr.aof").and_then(|n| n.rsplit('.').next()?.parse::<u64>().ok())
    };
    let files = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path());
    files.filter(|p| number(p).is_some()).max_by_key(|p| number(p)).expect("an incremental AOF file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_acknowledged_just_before_redis_loses_its_last_second_of_aof_are_all_processed() {
    let mut redis = RedisServer::start_with(&["--appendfsync", "everysec"]);
    let mut stack = stack_on(&redis).await;
    // The queue is paused so that the jobs are still waiting when Redis dies.
    let files = stack.queue("files");
    files.pause().await.unwrap();
    let aof = appended_aof(&redis);
    let synced = std::fs::metadata(&aof).unwrap().len();
    let ids = upload_texts(&stack, "acked", 20).await;
    // A crash of the machine with `appendfsync everysec` loses what was written to the AOF but
    // not yet fsynced (a killed process alone loses nothing: the kernel keeps its writes).
    // Simulated: killed, and the AOF cut back to what it held before the uploads.
    redis.kill();
    std::fs::OpenOptions::new().write(true).open(&aof).unwrap().set_len(synced).unwrap();
    redis.restart();
    for id in &ids {
        assert_eq!(files.get_job_state(&id.to_string()).await.unwrap(), None, "lost with the AOF's tail");
    }
    files.resume().await.unwrap();
    all_done(&mut stack, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_whose_jobs_a_flushall_removed_are_processed() {
    let redis = RedisServer::start();
    let mut stack = stack_on(&redis).await;
    let files = stack.queue("files");
    files.pause().await.unwrap();
    let ids = upload_texts(&stack, "flushed", 5).await;
    for id in &ids {
        assert!(files.get_job_state(&id.to_string()).await.unwrap().is_some(), "enqueued before the flush");
    }
    assert_eq!(redis.command(&["FLUSHALL"]), "+OK\r\n");
    for id in &ids {
        assert_eq!(files.get_job_state(&id.to_string()).await.unwrap(), None, "gone from Redis");
    }
    all_done(&mut stack, &ids).await;
}
