//! A running ffmpeg is killed, with its whole process group, when its job times out or its lock
//! is lost, and what follows is a retry (timeout) or nothing at all (lock lost).

use std::time::Duration;

use test_support::RedisServer;

use crate::shutdown::processes;
use test_support::Media;

use crate::support::{Place, TestApp, eventually};

const LIMIT: Duration = Duration::from_secs(90);

/// ffmpeg processes started by this test process (in-process worker-svc), as `(pid, pgrp)`.
fn our_ffmpegs() -> Vec<(i32, i32)> {
    let me = std::process::id() as i32;
    processes().into_iter().filter(|p| p.1 == me && p.3 == "ffmpeg").map(|p| (p.0, p.2)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_killed_and_retried() {
    let app = TestApp::spawn(&[("WORKER_PREVIEW_SECONDS", "600"), ("WORKER_JOB_TIMEOUT_MS", "1500")]).await;
    let id = app.upload(&Media::new().video("long.mp4", 600, "64x48"), "long.mp4", None).await;
    let row = eventually(LIMIT, "the timeout to be recorded", async || {
        let row = app.db.get_file(id).await.unwrap().unwrap();
        row.error.as_deref().is_some_and(|e| e.contains("timed out")).then_some(row)
    })
    .await;
    assert_eq!(row.status, "queued", "retried, with backoff: {row:?}");
    assert_eq!(row.error.as_deref(), Some("processing timed out after 1500 ms"));
    // The retry waits for its backoff (5 s), so any ffmpeg now would be the one that timed out.
    assert!(our_ffmpegs().is_empty(), "ffmpeg outlived its job: {:?}", our_ffmpegs());
    assert_eq!(app.executions(id).await, [(1, Some("retry".to_owned()))]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lock_is_lost_stops_its_ffmpeg_and_writes_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_at(
        Place::new(Some(redis.url())).await,
        &[
            ("WORKER_PREVIEW_SECONDS", "600"),
            ("WORKER_LOCK_DURATION_MS", "1000"),
            ("WORKER_STALLED_INTERVAL_MS", "60000"),
        ],
    )
    .await;
    let id = app.upload(&Media::new().video("long.mp4", 600, "64x48"), "long.mp4", None).await;
    eventually(LIMIT, "the preview to be under way", async || {
        let job = app.files.get_job(&id.to_string()).await.unwrap()?;
        (job.progress.as_f64().unwrap_or(0.0) > 25.0).then_some(())
    })
    .await;
    let (_, group) = eventually(LIMIT, "the preview's ffmpeg", async || our_ffmpegs().into_iter().next()).await;

    // Another worker's stalled check could take the job now: the lock is gone.
    let lock = format!("{}:files:{id}:lock", app.place.prefix);
    assert_eq!(redis.command(&["DEL", &lock]), ":1\r\n");

    eventually(LIMIT, "the lost lock to be noticed", async || {
        let executions = app.executions(id).await;
        (executions.last().and_then(|e| e.1.as_deref()) == Some("lock lost")).then_some(())
    })
    .await;
    let survivors: Vec<_> = processes().into_iter().filter(|p| p.2 == group).collect();
    assert!(survivors.is_empty(), "the ffmpeg group outlived the lock: {survivors:?}");
    let row = app.db.get_file(id).await.unwrap().unwrap();
    assert_eq!(row.status, "processing", "nothing written for a job another worker may own: {row:?}");
    assert_eq!(row.error, None);
    assert_eq!(app.service_connections.stats().command.planned, 1);
    app.stop().await;
}
