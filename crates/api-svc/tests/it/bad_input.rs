//! Bad input: each a 4xx with a JSON body, nothing left behind, and the service keeps serving.

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Options, TOKEN, TestApp, WEBHOOK_SECRET, expect_error, spawn_app, spawn_with};

async fn still_serving(app: &TestApp) {
    let id = app.uploaded("after.txt", b"still here").await;
    assert_eq!(app.row(id).await.unwrap().status, "queued");
    assert_eq!(app.client.get(app.url("/livez")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401() {
    let app = spawn_app().await;
    let url = app.url("/v1/files");
    let none = app.client.post(&url).header("x-filename", "a").body("x").send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    expect_error(none, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong = app.client.post(&url).bearer_auth("not-the-token").header("x-filename", "a").body("x").send().await;
    expect_error(wrong.unwrap(), StatusCode::UNAUTHORIZED, "unauthorized").await;
    let prefix = app.client.get(&url).bearer_auth(&TOKEN[..TOKEN.len() - 1]).send().await.unwrap();
    expect_error(prefix, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let basic = app.client.get(&url).header("authorization", format!("Basic {TOKEN}")).send().await.unwrap();
    expect_error(basic, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let id = uuid::Uuid::new_v4();
    for path in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content")] {
        expect_error(app.client.get(app.url(&path)).send().await.unwrap(), StatusCode::UNAUTHORIZED, "unauthorized")
            .await;
    }
    assert_eq!(app.rows().await, 0);
    still_serving(&app).await;
}

#[tokio::test]
async fn too_large_uploads_get_413_and_leave_nothing() {
    let app = spawn_with(Options { vars: vec![("MAX_UPLOAD_BYTES", "1000".to_owned())], ..Default::default() }).await;
    // Streamed without a length: found while streaming.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..50).map(|_| Ok(Bytes::from(vec![b'x'; 100]))).collect();
    let streamed = app
        .upload_raw(
            "big.bin",
            "application/octet-stream",
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        )
        .await;
    expect_error(streamed, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // Declared too large: refused before a byte is stored.
    let declared = app.upload_raw("big.bin", "application/octet-stream", vec![b'x'; 5000]).await;
    expect_error(declared, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // Multipart, with a part after the file: the rest is read and discarded, not waited out
    // (the drain's own limit is 10 s).
    let started = std::time::Instant::now();
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(vec![b'y'; 5000]).file_name("big.txt"))
        .text("callback_url", "");
    let multipart = app.client.post(app.url("/v1/files")).bearer_auth(TOKEN).multipart(form).send().await.unwrap();
    expect_error(multipart, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    // Exactly the limit is fine.
    let exact = app.upload_raw("exact.bin", "application/octet-stream", vec![b'z'; 1000]).await;
    assert_eq!(exact.status(), StatusCode::ACCEPTED);

    assert_eq!(app.rows().await, 1, "only the upload at the limit is recorded");
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    still_serving(&app).await;
}

#[tokio::test]
async fn a_hostile_filename_is_metadata_only() {
    let app = spawn_app().await;
    let passwd_before = std::fs::read("/etc/passwd").ok();
    let raw = app.upload_raw("../../etc/passwd", "text/plain", "root::0:0::/:/bin/sh\n").await;
    assert_eq!(raw.status(), StatusCode::ACCEPTED);
    let id: uuid::Uuid = raw.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.row(id).await.unwrap().filename, "../../etc/passwd");

    let multipart = app.upload_multipart("/etc/\u{202E}dwssap\t.txt", b"payload".to_vec(), None).await;
    assert_eq!(multipart.status(), StatusCode::ACCEPTED);
    let other: uuid::Uuid = multipart.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.row(other).await.unwrap().filename, "/etc/dwssap.txt", "control characters are dropped");

    assert_eq!(std::fs::read("/etc/passwd").ok(), passwd_before);
    let root = app.storage_dir.path().canonicalize().unwrap();
    let files = app.stored_files();
    assert_eq!(files.len(), 2);
    for file in files {
        let file = file.canonicalize().unwrap();
        assert!(file.starts_with(&root) && file.ends_with("original"), "{}", file.display());
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn empty_and_broken_bodies_get_400() {
    let app = spawn_app().await;
    expect_error(app.upload_raw("empty.txt", "text/plain", "").await, StatusCode::BAD_REQUEST, "empty_body").await;
    let empty_stream =
        reqwest::Body::wrap_stream(futures_util::stream::iter(Vec::<Result<Bytes, std::io::Error>>::new()));
    expect_error(app.upload_raw("empty.txt", "text/plain", empty_stream).await, StatusCode::BAD_REQUEST, "empty_body")
        .await;
    expect_error(app.upload_multipart("empty.txt", Vec::new(), None).await, StatusCode::BAD_REQUEST, "empty_body")
        .await;

    let no_name = app.client.post(app.url("/v1/files")).bearer_auth(TOKEN).body("x").send().await.unwrap();
    expect_error(no_name, StatusCode::BAD_REQUEST, "missing_filename").await;

    let multipart = |content_type: &'static str, body: &'static str| {
        app.client.post(app.url("/v1/files")).bearer_auth(TOKEN).header("content-type", content_type).body(body).send()
    };
    let garbage = multipart("multipart/form-data; boundary=XYZ", "this is not multipart at all").await.unwrap();
    expect_error(garbage, StatusCode::BAD_REQUEST, "invalid_multipart").await;
    let no_boundary = multipart("multipart/form-data", "--\r\n").await.unwrap();
    expect_error(no_boundary, StatusCode::BAD_REQUEST, "invalid_multipart").await;
    let truncated = multipart(
        "multipart/form-data; boundary=XYZ",
        "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello, and then noth",
    )
    .await
    .unwrap();
    expect_error(truncated, StatusCode::BAD_REQUEST, "invalid_multipart").await;
    let no_file = multipart(
        "multipart/form-data; boundary=XYZ",
        "--XYZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XYZ--\r\n",
    )
    .await
    .unwrap();
    expect_error(no_file, StatusCode::BAD_REQUEST, "unexpected_field").await;
    let nothing = multipart("multipart/form-data; boundary=XYZ", "--XYZ--\r\n").await.unwrap();
    expect_error(nothing, StatusCode::BAD_REQUEST, "missing_file").await;

    let bad_key = app
        .client
        .post(app.url("/v1/files"))
        .bearer_auth(TOKEN)
        .header("x-filename", "a.txt")
        .header("idempotency-key", "x".repeat(300))
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(bad_key, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;

    assert_eq!(app.rows().await, 0);
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    still_serving(&app).await;
}

#[tokio::test]
async fn unknown_ids_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4();
    expect_error(app.get(&format!("/v1/files/{id}")).await, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(app.get("/v1/files/not-a-uuid").await, StatusCode::NOT_FOUND, "not_found").await;
    let delete = app.client.delete(app.url(&format!("/v1/files/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    expect_error(delete, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(app.get("/v2/nothing").await, StatusCode::NOT_FOUND, "not_found").await;
    let put = app.client.put(app.url("/v1/files")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(put.headers()["allow"], "GET, POST", "a 405 names the methods (RFC 9110)");
    expect_error(put, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let post = app.client.post(app.url(&format!("/v1/files/{id}/content"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    expect_error(post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let post = app.client.post(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(post.headers()["allow"], "GET");
    expect_error(post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    still_serving(&app).await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_with_another_body_gets_409() {
    let app = spawn_app().await;
    let send = |body: &'static str| {
        app.client
            .post(app.url("/v1/files"))
            .bearer_auth(TOKEN)
            .header("x-filename", "a.txt")
            .header("idempotency-key", "k-1")
            .body(body)
            .send()
    };
    assert_eq!(send("first").await.unwrap().status(), StatusCode::ACCEPTED);
    expect_error(send("second").await.unwrap(), StatusCode::CONFLICT, "idempotency_key_reused").await;
    assert_eq!(app.rows().await, 1);
    assert_eq!(app.stored_files().len(), 1);
    still_serving(&app).await;
}

#[tokio::test]
async fn callbacks_are_refused_when_disabled_or_not_allowed() {
    let disabled = spawn_app().await;
    let response = disabled.upload_multipart("a.txt", b"x".to_vec(), Some("https://hooks.example.com/x")).await;
    expect_error(response, StatusCode::BAD_REQUEST, "callbacks_disabled").await;
    let raw = disabled
        .client
        .post(disabled.url("/v1/files?callback_url=https%3A%2F%2Fhooks.example.com%2Fx"))
        .bearer_auth(TOKEN)
        .header("x-filename", "a.txt")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(raw, StatusCode::BAD_REQUEST, "callbacks_disabled").await;
    assert_eq!(disabled.rows().await, 0);
    assert!(disabled.stored_files().is_empty());
    still_serving(&disabled).await;

    let app =
        spawn_with(Options { vars: vec![("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned())], ..Default::default() }).await;
    for url in [
        "http://127.0.0.1/hook",
        "https://127.0.0.1/hook",
        "https://[::1]:8443/hook",
        "https://localhost/hook",
        "http://hooks.example.com/hook",
        "https://169.254.169.254/latest/meta-data",
        "ftp://hooks.example.com/",
        "https://user:pw@hooks.example.com/",
    ] {
        let response = app.upload_multipart("a.txt", b"x".to_vec(), Some(url)).await;
        expect_error(response, StatusCode::BAD_REQUEST, "callback_refused").await;
    }
    // A callback field after the file: the stored content is removed again.
    let late = app
        .client
        .post(app.url("/v1/files"))
        .bearer_auth(TOKEN)
        .multipart(
            reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(b"late".to_vec()).file_name("late.txt"))
                .text("callback_url", "http://127.0.0.1/hook"),
        )
        .send()
        .await
        .unwrap();
    expect_error(late, StatusCode::BAD_REQUEST, "callback_refused").await;
    assert_eq!(app.rows().await, 0);
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    still_serving(&app).await;
}

#[tokio::test]
async fn a_client_that_goes_away_mid_upload_leaves_nothing() {
    let app = spawn_app().await;
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(body, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let request = app
        .client
        .post(app.url("/v1/files"))
        .bearer_auth(TOKEN)
        .header("x-filename", "partial.bin")
        .header("content-length", "1000000")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let request = tokio::spawn(request);
    chunks.send(Ok(Bytes::from(vec![b'p'; 100_000]))).await.unwrap();
    assert!(
        crate::support::eventually(std::time::Duration::from_secs(10), async || !app.stored_files().is_empty()).await,
        "the upload reached the store"
    );
    request.abort();
    drop(chunks);
    let gone = crate::support::eventually(std::time::Duration::from_secs(10), async || app.stored_files().is_empty());
    assert!(gone.await, "left behind: {:?}", app.stored_files());
    assert_eq!(app.rows().await, 0);
    still_serving(&app).await;
}
