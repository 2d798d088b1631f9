//! Redis or Postgres unreachable. The decision (README, "Redis down"): an upload while Redis is
//! unreachable is still acknowledged (202) once its row is committed, within the command
//! timeout, and worker-svc's reconciler enqueues it later; with Postgres unreachable nothing is
//! acknowledged (503 with Retry-After) and nothing is kept.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use test_support::RedisServer;
use uuid::Uuid;

use e2e::{ChaosProxy, through};

use crate::support::{Options, TestApp, eventually, expect_error, spawn_with};

/// The apps' `REDIS_COMMAND_TIMEOUT_MS` (see `spawn_with`).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);
/// What an answer may take beyond the timeout that bounds it (a debug build on a busy machine).
const MARGIN: Duration = Duration::from_millis(1500);

async fn accepted_id(app: &TestApp, name: &str) -> (Uuid, Duration) {
    let started = Instant::now();
    let response = app.upload_raw(name, "text/plain", "acknowledged").await;
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    (response.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap(), took)
}

async fn ready(app: &TestApp) -> bool {
    app.client.get(app.url("/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
}

#[tokio::test]
async fn uploads_are_acknowledged_while_redis_is_down_or_frozen() {
    let mut redis = RedisServer::start();
    let app = spawn_with(Options { redis_url: Some(redis.url()), ..Default::default() }).await;
    let (before, _) = accepted_id(&app, "before.txt").await;
    assert!(app.job(before).await.is_some());

    // Killed: the connection is refused.
    redis.kill();
    let (down, took) = accepted_id(&app, "down.txt").await;
    assert!(took < COMMAND_TIMEOUT + MARGIN, "took {took:?}");
    assert_eq!(app.row(down).await.unwrap().status, "queued", "the row is the acknowledgement");
    assert_eq!(app.stored_files().len(), 2);
    let readiness = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body = expect_error(readiness, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("redis"), "{body}");
    // Reading a file does not need Redis.
    assert_eq!(app.get(&format!("/v1/files/{down}")).await.status(), StatusCode::OK);
    // Deleting a waiting file does (its job must go too): 503, and the file stays.
    let delete = app.client.delete(app.url(&format!("/v1/files/{before}"))).bearer_auth(crate::support::TOKEN).send();
    let delete = delete.await.unwrap();
    assert!(delete.headers().contains_key("retry-after"));
    expect_error(delete, StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable").await;
    assert!(app.row(before).await.is_some());

    // Back: the service recovers by itself; the file acknowledged meanwhile has no job yet
    // (worker-svc's reconciler enqueues it).
    redis.restart();
    assert!(eventually(Duration::from_secs(15), async || ready(&app).await).await, "ready again");
    assert!(app.job(down).await.is_none());
    let (after, _) = accepted_id(&app, "after.txt").await;
    assert!(app.job(after).await.is_some());

    // Frozen (SIGSTOP): the enqueue waits out the command timeout, no longer.
    redis.pause();
    let (frozen, took) = accepted_id(&app, "frozen.txt").await;
    redis.resume();
    assert!(took < COMMAND_TIMEOUT + MARGIN, "took {took:?}");
    assert_eq!(app.row(frozen).await.unwrap().status, "queued");
}

#[tokio::test]
async fn uploads_get_503_and_leave_nothing_while_postgres_is_unreachable() {
    let direct = test_support::fresh_database().await;
    let (_, upstream) = through(&direct, "127.0.0.1:1".parse().unwrap());
    let proxy = ChaosProxy::start(upstream).await;
    let (proxied, _) = through(&direct, proxy.addr());
    let app = spawn_with(Options {
        database_url: Some(proxied),
        direct_database_url: Some(direct),
        vars: vec![("DATABASE_ACQUIRE_TIMEOUT_MS", "1000".to_owned()), ("DATABASE_TIMEOUT_MS", "2000".to_owned())],
        ..Default::default()
    })
    .await;
    let (kept, _) = accepted_id(&app, "kept.txt").await;

    proxy.cut();
    let started = Instant::now();
    let response = app.upload_raw("lost.txt", "text/plain", "not acknowledged").await;
    let took = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "5");
    let body = expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
    assert!(!body.to_string().contains("127.0.0.1"), "nothing internal in a 5xx: {body}");
    assert!(took < Duration::from_millis(2000) + MARGIN, "took {took:?}");
    assert_eq!(app.rows().await, 1);
    assert_eq!(app.stored_files().len(), 1, "the refused upload's content is gone: {:?}", app.stored_files());
    let status = app.get(&format!("/v1/files/{kept}")).await;
    expect_error(status, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
    let readiness = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body = expect_error(readiness, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("postgres"), "{body}");

    proxy.restore();
    assert!(eventually(Duration::from_secs(15), async || ready(&app).await).await, "ready again");
    let (after, _) = accepted_id(&app, "after.txt").await;
    assert!(app.row(after).await.is_some());
}
