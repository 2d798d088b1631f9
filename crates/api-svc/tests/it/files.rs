//! Status, progress, listing and deletion.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TOKEN, expect_error, spawn_app};

async fn set_status(app: &crate::support::TestApp, id: Uuid, status: &str) {
    sqlx::query("UPDATE files SET status = $2 WHERE id = $1")
        .bind(id)
        .bind(status)
        .execute(app.db.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_file_shows_its_status_and_live_progress_while_processing() {
    let app = spawn_app().await;
    let id = app.uploaded("clip.txt", b"some content").await;

    let view: Value = app.get(&format!("/v1/files/{id}")).await.json().await.unwrap();
    assert_eq!(view["id"], id.to_string());
    assert_eq!(view["status"], "queued");
    assert_eq!(view["filename"], "clip.txt");
    assert_eq!(view["size"], 12);
    assert_eq!(view["callback"], Value::Null);
    assert!(view.get("progress").is_none(), "{view}");

    // A worker took it and reports progress on its job.
    set_status(&app, id, "processing").await;
    app.files.update_progress(&id.to_string(), &json!(42)).await.unwrap();
    let view: Value = app.get(&format!("/v1/files/{id}")).await.json().await.unwrap();
    assert_eq!(view["status"], "processing");
    assert_eq!(view["progress"], 42);

    // Done: the result and its artifacts' links, no progress.
    let result = json!({"kind": "text", "artifacts": ["thumbnail.jpg"]});
    assert!(app.db.mark_done(id, "text/plain", &result).await.unwrap());
    let view: Value = app.get(&format!("/v1/files/{id}")).await.json().await.unwrap();
    assert_eq!(view["status"], "done");
    assert_eq!(view["detected_type"], "text/plain");
    assert_eq!(view["result"], result);
    assert_eq!(view["links"]["artifacts"]["thumbnail.jpg"], format!("/v1/files/{id}/artifacts/thumbnail.jpg"));
    assert!(view.get("progress").is_none());
    assert!(view["finished_at"].is_string());

    // Failed: the reason.
    let failed = app.uploaded("bad.mp4", b"not a video").await;
    assert!(app.db.mark_failed(failed, "truncated mp4: moov atom not found", Some("video/mp4")).await.unwrap());
    let view: Value = app.get(&format!("/v1/files/{failed}")).await.json().await.unwrap();
    assert_eq!(view["status"], "failed");
    assert_eq!(view["error"], "truncated mp4: moov atom not found");
}

#[tokio::test]
async fn the_list_pages_with_an_opaque_cursor_and_filters_by_status() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(app.uploaded(&format!("f{n}.txt"), b"x").await);
    }
    set_status(&app, ids[1], "done").await;
    set_status(&app, ids[4], "done").await;

    let mut seen = Vec::new();
    let mut path = "/v1/files?limit=3".to_owned();
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().parse::<Uuid>().unwrap()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/files?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<Uuid> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);

    let done: Value = app.get("/v1/files?status=done&limit=1").await.json().await.unwrap();
    assert_eq!(done["items"][0]["id"], ids[4].to_string());
    let cursor = done["next_cursor"].as_str().unwrap();
    let rest: Value = app.get(&format!("/v1/files?status=done&limit=1&cursor={cursor}")).await.json().await.unwrap();
    assert_eq!(rest["items"][0]["id"], ids[1].to_string());
    assert_eq!(rest["next_cursor"], Value::Null);

    expect_error(app.get("/v1/files?status=lost").await, StatusCode::BAD_REQUEST, "invalid_query").await;
    expect_error(app.get("/v1/files?limit=0").await, StatusCode::BAD_REQUEST, "invalid_query").await;
    expect_error(app.get("/v1/files?limit=9999").await, StatusCode::BAD_REQUEST, "invalid_query").await;
    expect_error(app.get("/v1/files?cursor=forged").await, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    // Of the right shape, but naming a time before any row (and before what Postgres can
    // compare with): schemathesis found this one answering 500.
    let before_any_row = app.get("/v1/files?cursor=00000000000000000000000000000000").await;
    expect_error(before_any_row, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    // An empty value is no value.
    let first_page: Value = app.get("/v1/files?status=&limit=&cursor=").await.json().await.unwrap();
    assert_eq!(first_page["items"].as_array().unwrap().len(), ids.len());
}

#[tokio::test]
async fn deleting_a_waiting_file_removes_its_job_content_and_row() {
    let app = spawn_app().await;
    let id = app.uploaded("gone.txt", b"soon gone").await;
    assert!(app.job(id).await.is_some());
    assert_eq!(app.stored_files().len(), 1);

    let response = app.client.delete(app.url(&format!("/v1/files/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(app.row(id).await.is_none());
    assert!(app.job(id).await.is_none());
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    expect_error(app.get(&format!("/v1/files/{id}")).await, StatusCode::NOT_FOUND, "not_found").await;

    let again = app.client.delete(app.url(&format!("/v1/files/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    expect_error(again, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn deleting_a_file_while_it_is_processing_is_refused() {
    let app = spawn_app().await;
    let id = app.uploaded("busy.txt", b"in the works").await;
    set_status(&app, id, "processing").await;
    let response = app.client.delete(app.url(&format!("/v1/files/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    expect_error(response, StatusCode::CONFLICT, "file_processing").await;
    assert!(app.row(id).await.is_some());
    assert!(app.job(id).await.is_some());
    assert_eq!(app.stored_files().len(), 1);

    // Done, it can go (its finished job too).
    set_status(&app, id, "done").await;
    let response = app.client.delete(app.url(&format!("/v1/files/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(app.row(id).await.is_none());
    assert!(app.job(id).await.is_none());
}
