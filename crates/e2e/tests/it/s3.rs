//! S3 mode (`STORAGE_URL=s3://…`) against a real Garage node: the media suite passes as in
//! local mode; two workers that share no filesystem with api-svc or each other share the queue
//! and the bucket, each file processed exactly once, no scratch file left; with Garage stopped,
//! uploads get 503 naming storage and `/readyz` says why, and what was acknowledged before is
//! processed once Garage is back, without a restart. A 500 MB upload keeps api-svc's memory
//! flat; one cut off halfway leaves neither an object nor an unfinished multipart upload; in a
//! three-node cluster (replication 3), one node killed stops neither uploads nor processing.

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
    Stack::start(StackOptions { api_vars: s3, worker_vars, health: true, ..StackOptions::default() }).await
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
    // The failure is counted in api-svc's /metrics, and health-svc's /ops reports it from
    // api-svc's heartbeat.
    let metrics = e2e::scrape(&stack.client, &stack.api_base).await;
    assert!(metrics.sum("storage_errors_total", &[]) >= 1.0, "{}", metrics.text);
    assert_eq!(metrics.value("storage_backend", &[("backend", "s3")]), Some(1.0), "{}", metrics.text);
    eventually(LIMIT, "/ops to report the store's failure", async || {
        let ops: Value =
            stack.client.get(format!("{}/ops/queue", stack.health_base)).send().await.ok()?.json().await.ok()?;
        let problems = ops["problems"].to_string();
        let api = ops["workers"].as_array()?.iter().find(|w| w["service"] == "api-svc")?.clone();
        let errors: u64 = api["storage"]["ops"].as_object()?.values().filter_map(|o| o["errors"].as_u64()).sum();
        (problems.contains("the file store failed") && errors >= 1 && api["storage"]["backend"] == "s3").then_some(())
    })
    .await;

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

/// Bytes of the generated body, a pattern that does not compress.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((offset + i).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// `POST /v1/files` on a raw connection with a `Content-Length` of `total`, sending the body in
/// 1 MiB writes: all of it, or only `send` bytes before waiting for `paused` and then dropping
/// the connection. Returns the response's status line and body, if the whole was sent.
async fn raw_upload(
    api: &str,
    total: u64,
    send: u64,
    paused: impl AsyncFnOnce(),
) -> Option<(String, sha2::digest::Output<sha2::Sha256>)> {
    use sha2::Digest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: \
         application/octet-stream\r\nx-filename: big.bin\r\ncontent-length: {total}\r\n\r\n",
        e2e::TOKEN
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut sent = 0u64;
    while sent < send {
        let chunk = pattern(sent, (send - sent).min(1 << 20) as usize);
        hasher.update(&chunk);
        stream.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    if sent < total {
        paused().await;
        drop(stream);
        return None;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is small; read until the JSON body has closed.
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        answer.extend_from_slice(&buf[..n]);
        if n == 0 || answer.ends_with(b"}") {
            break;
        }
    }
    Some((String::from_utf8_lossy(&answer).into_owned(), hasher.finalize()))
}

/// `VmRSS` or `VmHWM` of process `pid`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_mb_upload_keeps_api_svc_memory_flat_in_s3_and_on_local_disk() {
    let garage = Garage::start();
    let grew = big_upload(&stack_on(&garage).await, "S3").await;
    // One 5 MiB part being filled while the previous one is sent, and the allocator's slack.
    assert!(grew < 16 * 1024, "api-svc's RSS grew by {grew} KiB during a 500 MB upload to S3");
    let grew = big_upload(&Stack::start(StackOptions::default()).await, "local files").await;
    assert!(grew < 16 * 1024, "api-svc's RSS grew by {grew} KiB during a 500 MB upload to local files");
}

/// Uploads 500 MB to `stack` after a warm-up and returns by how much api-svc's RSS rose (KiB),
/// its peak included; checks the stored size and sha256.
async fn big_upload(stack: &Stack, mode: &str) -> u64 {
    let pid = stack.api.pid().expect("api-svc runs");
    // Warm up: allocator arenas, the S3 client's connections.
    let warm = raw_upload(&stack.api_base, 16 << 20, 16 << 20, async || {}).await.unwrap();
    assert!(warm.0.starts_with("HTTP/1.1 202"), "{}", warm.0);

    let before = status_kib(pid, "VmRSS:");
    // Resets the peak (VmHWM) to the current RSS (proc(5), clear_refs).
    let peak_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let total: u64 = 500 * 1000 * 1000;
    let started = std::time::Instant::now();
    let (answer, sha256) = raw_upload(&stack.api_base, total, total, async || {}).await.unwrap();
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let (after, peak) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    let highest = if peak_reset { peak.max(after) } else { after };
    let grew = highest.saturating_sub(before);
    eprintln!(
        "500 MB upload to {mode} in {took:?}: api-svc RSS {before} KiB before, {after} KiB after, peak {peak} KiB \
         (peak reset: {peak_reset}), grew {grew} KiB"
    );
    let id = answer.rsplit_once("\"id\":\"").and_then(|(_, rest)| rest.split('"').next()).unwrap();
    let row: (i64, String) = sqlx::query_as("SELECT size, sha256 FROM files WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(row, (total as i64, hex(&sha256)), "stored whole");
    grew
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_halfway_leaves_no_object_and_no_unfinished_upload() {
    let garage = Garage::start();
    let stack = stack_on(&garage).await;
    let before = garage.bucket_counts();
    let total: u64 = 64 << 20;
    // Half the body, then the client goes away. While it waits, the upload is under way in
    // Garage: the count below can see an unfinished upload, so it can also see one left behind.
    let seen = raw_upload(&stack.api_base, total, total / 2, async || {
        eventually(LIMIT, "Garage to hold the unfinished upload", async || {
            (garage.bucket_counts().unfinished_multipart_uploads == before.unfinished_multipart_uploads + 1)
                .then_some(())
        })
        .await;
    })
    .await;
    assert!(seen.is_none());
    let after = eventually(LIMIT, "the upload to be aborted", async || {
        let counts = garage.bucket_counts();
        (counts.unfinished_multipart_uploads == before.unfinished_multipart_uploads).then_some(counts)
    })
    .await;
    assert_eq!(after.objects, before.objects, "no object was left: {after:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&stack.db).await.unwrap();
    assert_eq!(rows, 0, "nothing was recorded");
    let metrics = e2e::scrape(&stack.client, &stack.api_base).await;
    assert_eq!(metrics.value("storage_requests_total", &[("op", "abort_upload")]), Some(1.0), "{}", metrics.text);
    assert_eq!(metrics.value("storage_requests_total", &[("op", "complete_upload")]), Some(0.0), "{}", metrics.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_garage_nodes_one_killed_uploads_and_processing_go_on() {
    let mut nodes = Garage::cluster(3);
    let stack = stack_on(&nodes[0]).await;
    let mut before = Vec::new();
    for i in 0..4 {
        let body = format!("stored on three nodes {i}\n").into_bytes();
        before.push((stack.accepted(&format!("b{i}.txt"), "text/plain", body.clone()).await, body));
    }
    for (id, _) in &before {
        assert_eq!(stack.finished(*id, LIMIT).await["status"], "done");
    }

    // One node of three gone for good: every object has two copies left, a quorum.
    nodes[2].stop();
    // The first uploads meet a node Garage does not know is gone yet: its rpc_timeout_msec (2 s
    // here, 300 s by default) decides how long a request waits for it before asking another.
    let media = test_support::Media::new();
    let killed = std::time::Instant::now();
    let mut after = vec![stack.accepted("clip.mp4", "video/mp4", media.video("clip.mp4", 1, "64x48")).await];
    for i in 0..4 {
        after.push(stack.accepted(&format!("a{i}.txt"), "text/plain", format!("after {i}\n").into_bytes()).await);
    }
    let uploaded = killed.elapsed();
    for id in &after {
        assert_eq!(stack.finished(*id, LIMIT).await["status"], "done", "file {id} with a node down");
    }
    eprintln!(
        "with a node killed: 5 uploads acknowledged in {uploaded:?}, processed {:?} after the kill",
        killed.elapsed()
    );
    for (id, body) in &before {
        assert_eq!(&stack.download(&format!("/v1/files/{id}/content")).await, body, "read back with a node down");
    }
    let ready = stack.client.get(format!("{}/readyz", stack.api_base)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "api-svc stays ready: {}", ready.text().await.unwrap());
    let metrics = e2e::scrape(&stack.client, &stack.api_base).await;
    assert_eq!(metrics.sum("storage_errors_total", &[]), 0.0, "no request failed: {}", metrics.text);
}
