//! Probes, the request id, and a graceful stop.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{eventually, spawn_app};

#[tokio::test]
async fn probes_answer_and_requests_carry_an_id() {
    let app = spawn_app().await;
    let live = app.client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let generated = live.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    let ready = app.client.get(app.url("/readyz")).header("x-request-id", "trace-42").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.headers()["x-request-id"], "trace-42");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"], serde_json::json!({"postgres": "ok", "redis": "ok", "storage": "ok"}));

    let unauthorized = app.client.get(app.url("/v1/files")).header("x-request-id", "bad id!").send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_ne!(unauthorized.headers()["x-request-id"], "bad id!");
}

#[tokio::test]
async fn a_stop_lets_the_upload_in_flight_finish_then_closes_everything() {
    let mut app = spawn_app().await;
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(body, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let request = app
        .client
        .post(app.url("/v1/files"))
        .bearer_auth(crate::support::TOKEN)
        .header("x-filename", "slow.bin")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let request = tokio::spawn(request);
    chunks.send(Ok(Bytes::from_static(b"first half, "))).await.unwrap();
    // The upload is in the store's hands (its staging file exists) when the stop comes.
    assert!(eventually(Duration::from_secs(10), async || !app.stored_files().is_empty()).await);
    let running = app.shut_down().await;
    chunks.send(Ok(Bytes::from_static(b"second half"))).await.unwrap();
    drop(chunks);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id: uuid::Uuid = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.row(id).await.unwrap().size, 23);

    let stopped = tokio::time::timeout(Duration::from_secs(20), running).await.expect("run_until returns");
    stopped.unwrap().unwrap();
    assert_eq!(app.connections.stats().open, 0, "the Redis connection is closed");
    assert!(app.client.get(app.url("/livez")).send().await.is_err(), "no longer listening");
}
