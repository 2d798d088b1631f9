//! Accepted uploads: the row is committed, the content stored by id, the job enqueued with the
//! file id as its Bull job id; idempotency keys replay the first answer.

use platform::jobs::{FILE_ATTEMPTS, FileJob};
use platform::storage::Storage;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::support::{TOKEN, expect_error, spawn_app};

#[tokio::test]
async fn a_raw_upload_is_stored_recorded_and_enqueued_before_202() {
    let app = spawn_app().await;
    let body = b"hello, api-svc\n".repeat(1000);
    let response = app.upload_raw("notes.txt", "text/plain", body.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let json: Value = response.json().await.unwrap();
    let id: Uuid = json["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(json["status"], "queued");
    assert_eq!(json["links"]["self"], format!("/v1/files/{id}"));
    assert_eq!(json["links"]["content"], format!("/v1/files/{id}/content"));
    assert_eq!(location, format!("/v1/files/{id}"));

    let row = app.row(id).await.expect("row committed before the answer");
    assert_eq!(row.status, "queued");
    assert_eq!(row.filename, "notes.txt");
    assert_eq!(row.content_type.as_deref(), Some("text/plain"));
    assert_eq!(row.size, body.len() as i64);
    assert_eq!(row.sha256, hex::encode(Sha256::digest(&body)));
    assert_eq!(row.token_id.len(), 32);
    assert!(!row.token_id.contains(TOKEN));

    let job = app.job(id).await.expect("job enqueued");
    assert_eq!(job.id, id.to_string());
    assert_eq!(serde_json::from_value::<FileJob>(job.data).unwrap(), FileJob::new(id));
    assert_eq!(job.opts.attempts, Some(FILE_ATTEMPTS));

    let stored = std::fs::read(app.storage_dir.path().join(Storage::original_key(id).as_ref())).unwrap();
    assert_eq!(stored, body);
}

#[tokio::test]
async fn a_multipart_upload_with_a_callback_is_recorded_with_it() {
    let app = crate::support::spawn_with(crate::support::Options {
        vars: vec![
            ("WEBHOOK_SECRET", crate::support::WEBHOOK_SECRET.to_owned()),
            ("CALLBACK_ALLOWED_HOSTS", "127.0.0.1:9".to_owned()),
        ],
        ..Default::default()
    })
    .await;
    let response =
        app.upload_multipart("report.txt", b"multipart body".to_vec(), Some("http://127.0.0.1:9/hook")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let json: Value = response.json().await.unwrap();
    let id: Uuid = json["id"].as_str().unwrap().parse().unwrap();
    let row = app.row(id).await.unwrap();
    assert_eq!(row.filename, "report.txt");
    assert_eq!(row.content_type.as_deref(), Some("text/plain"));
    assert_eq!(row.size, 14);
    assert_eq!(row.callback_url.as_deref(), Some("http://127.0.0.1:9/hook"));
    assert_eq!(row.delivery_state.as_deref(), Some("pending"));
    assert!(app.job(id).await.is_some());

    let view: Value = app.get(&format!("/v1/files/{id}")).await.json().await.unwrap();
    assert_eq!(view["callback"]["url"], "http://127.0.0.1:9/hook");
    assert_eq!(view["callback"]["state"], "pending");
    assert_eq!(view["callback"]["deliveries"], serde_json::json!([]));

    // The raw form takes the callback from the query string.
    let response = app
        .client
        .post(app.url("/v1/files?callback_url=http%3A%2F%2F127.0.0.1%3A9%2Fraw"))
        .bearer_auth(TOKEN)
        .header("x-filename", "raw.bin")
        .body("raw")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id: Uuid = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.row(id).await.unwrap().callback_url.as_deref(), Some("http://127.0.0.1:9/raw"));
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_replay_the_first_answer() {
    let app = spawn_app().await;
    let send = |key: &'static str, body: &'static str, token: &'static str| {
        app.client
            .post(app.url("/v1/files"))
            .bearer_auth(token)
            .header("x-filename", "a.txt")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let first = send("order-1", "same body", TOKEN).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();

    let again = send("order-1", "same body", TOKEN).await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(app.rows().await, 1);
    assert_eq!(app.stored_files().len(), 1, "the replay's content is not kept");

    let other = send("order-1", "another body", TOKEN).await.unwrap();
    expect_error(other, StatusCode::CONFLICT, "idempotency_key_reused").await;
    assert_eq!(app.rows().await, 1);
    assert_eq!(app.stored_files().len(), 1);

    // Keys are scoped by token: another caller's key of the same name is its own.
    let theirs = send("order-1", "same body", crate::support::OTHER_TOKEN).await.unwrap();
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["id"], first["id"]);
    assert_eq!(app.rows().await, 2);
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_make_one_file() {
    let app = spawn_app().await;
    let requests = (0..8).map(|_| {
        app.client
            .post(app.url("/v1/files"))
            .bearer_auth(TOKEN)
            .header("x-filename", "race.txt")
            .header("idempotency-key", "race")
            .body("racing body")
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::BTreeSet::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        ids.insert(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.rows().await, 1);
    assert_eq!(app.stored_files().len(), 1);
}
