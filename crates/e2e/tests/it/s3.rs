//! S3 mode (`STORAGE_URL=s3://…`) against a real Garage node: the media suite passes as in
//! local mode; two workers that share no filesystem with api-svc or each other share the queue
//! and the bucket, each file processed exactly once, no scratch file left; with Garage stopped,
//! uploads get 503 naming storage and `/readyz` says why, and what was acknowledged before is
//! processed once Garage is back, without a restart.

use std::time::Duration;

use e2e::{Service, Stack, StackOptions, eventually, free_addr};
use reqwest::StatusCode;
use serde_json::Value;
use test_support::{Garage, files_under};

use crate::processing::media_suite;

const LIMIT: Duration = Duration::from_secs(120);

/// The stack on `garage`, under a prefix of its own, with no STORAGE_DIR in common with api-svc.
async fn stack_on(garage: &Garage) -> Stack {
    let s3 = garage.env(&test_support::unique("stack"));
    let mut worker_vars = s3.clone();
    worker_vars.push(("STORAGE_DIR", "/nonexistent/worker-has-no-shared-disk".to_owned()));
    Stack::start(StackOptions { api_vars: s3, worker_vars, ..StackOptions::default() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_suite_passes_with_files_in_s3() {
    let garage = Garage::start();
    let stack = stack_on(&garage).await;
    assert!(stack.api.log().contains("S3 bucket files"), "api-svc stores in S3:\n{}", stack.api.log());
    media_suite(&stack).await;
    // Nothing was written to the local storage directory.
    let local: Vec<_> = files_under(&stack.storage_dir());
    assert!(local.is_empty(), "S3 mode leaves the local store empty: {local:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_without_a_shared_disk_process_every_upload_exactly_once() {
    let garage = Garage::start();
    let stack = stack_on(&garage).await;
    // A second worker-svc with its own scratch directory: the bucket is all the workers share.
    let scratch = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut env = stack.worker_env();
    env.retain(|(k, _)| k != "METRICS_ADDR" && k != "WORKER_SCRATCH_DIR");
    env.push(("WORKER_SCRATCH_DIR".to_owned(), scratch.path().to_str().unwrap().to_owned()));
    let second_metrics = free_addr();
    env.retain(|(k, _)| k != "METRICS_ADDR");
    env.push(("METRICS_ADDR".to_owned(), second_metrics.to_string()));
    let second = Service::start("worker-svc", &env, logs.path());
    eventually(LIMIT, "the second worker to be live", async || {
        let answer = stack.client.get(format!("http://{second_metrics}/livez")).send().await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;

    // Short videos (ffmpeg takes a moment each) among text files, so that one worker cannot
    // take everything before the other wakes.
    let media = test_support::Media::new();
    let clip = media.video("short.mp4", 1, "64x48");
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(stack.accepted(&format!("v{i}.mp4"), "video/mp4", clip.clone()).await);
    }
    for i in 0..14 {
        ids.push(stack.accepted(&format!("n{i}.txt"), "text/plain", format!("file {i}\n").into_bytes()).await);
    }
    for id in &ids {
        assert_eq!(stack.finished(*id, LIMIT).await["status"], "done");
        assert_eq!(stack.executions(*id).await, 1, "file {id} ran exactly once");
    }
    let workers: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT worker FROM executions").fetch_all(&stack.db).await.unwrap();
    assert_eq!(workers.len(), 2, "both workers took files: {workers:?}");
    drop(second);
    let left = files_under(scratch.path());
    assert!(left.is_empty(), "no scratch file remains: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_garage_stopped_uploads_get_503_and_what_was_acknowledged_is_processed_after() {
    let mut garage = Garage::start();
    let mut stack = stack_on(&garage).await;
    // Acknowledged, then the store goes away before the worker can read it... (the worker may be
    // quicker: either way the file must end done).
    let before = stack.accepted("before.txt", "text/plain", b"stored before the outage\n".to_vec()).await;
    garage.stop();

    let started = std::time::Instant::now();
    let answer = stack.upload("during.txt", "text/plain", b"refused".to_vec(), None).await;
    let took = started.elapsed();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    let body: Value = answer.json().await.unwrap();
    assert!(body.to_string().contains("storage"), "{body}");
    assert!(took < Duration::from_secs(20), "answered within the store's limits, after {took:?}");
    let ready = stack.client.get(format!("{}/readyz", stack.api_base)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert!(ready.to_string().contains("storage"), "/readyz names the store: {ready}");

    garage.restart();
    assert_eq!(stack.finished(before, LIMIT).await["status"], "done", "acknowledged before the outage");
    eventually(LIMIT, "api-svc to be ready again", async || {
        let ready = stack.client.get(format!("{}/readyz", stack.api_base)).send().await.ok()?;
        (ready.status() == StatusCode::OK).then_some(())
    })
    .await;
    let after = stack.accepted("after.txt", "text/plain", b"after the outage\n".to_vec()).await;
    assert_eq!(stack.finished(after, LIMIT).await["status"], "done");
    assert!(stack.api.running() && stack.worker.running(), "no service was restarted");
}
