//! Downloads: streamed with Content-Length, a strong ETag, single ranges.

use platform::storage::Storage;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::support::{TOKEN, expect_error, spawn_app};

const BODY: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[tokio::test]
async fn content_downloads_with_etag_and_single_ranges() {
    let app = spawn_app().await;
    let id = app.uploaded("../../etc/alphabet.txt", BODY).await;
    let path = format!("/v1/files/{id}/content");

    let full = app.get(&path).await;
    assert_eq!(full.status(), StatusCode::OK);
    let etag = full.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", hex::encode(Sha256::digest(BODY))));
    assert_eq!(full.headers()["content-length"], BODY.len().to_string().as_str());
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-type"], "text/plain");
    let disposition = full.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment") && disposition.contains("alphabet.txt"), "{disposition}");
    assert!(!disposition.contains(".."), "{disposition}");
    assert_eq!(full.bytes().await.unwrap().as_ref(), BODY);

    // HEAD: the same headers, no body; a token is still needed.
    let head = app.client.head(app.url(&path)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], BODY.len().to_string().as_str());
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    assert!(head.bytes().await.unwrap().is_empty());
    let anonymous = app.client.head(app.url(&path)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let ranged = |range: &'static str| app.client.get(app.url(&path)).bearer_auth(TOKEN).header("range", range).send();
    let part = ranged("bytes=10-15").await.unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 10-15/36");
    assert_eq!(part.headers()["content-length"], "6");
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"abcdef");

    let tail = ranged("bytes=-4").await.unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), b"wxyz");

    let open = ranged("bytes=30-").await.unwrap();
    assert_eq!(open.headers()["content-range"], "bytes 30-35/36");

    let beyond = ranged("bytes=36-40").await.unwrap();
    assert_eq!(beyond.headers()["content-range"], "bytes */36");
    expect_error(beyond, StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable").await;

    let several = ranged("bytes=0-1,4-5").await.unwrap();
    assert_eq!(several.status(), StatusCode::OK, "several ranges are answered with the whole content");

    let cached = app.client.get(app.url(&path)).bearer_auth(TOKEN).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    let stale = app
        .client
        .get(app.url(&path))
        .bearer_auth(TOKEN)
        .header("range", "bytes=0-1")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK, "If-Range with another validator gets the whole content");

    expect_error(
        app.get(&format!("/v1/files/{}/content", uuid::Uuid::new_v4())).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn artifacts_are_served_by_name() {
    let app = spawn_app().await;
    let id = app.uploaded("clip.txt", BODY).await;
    let storage = Storage::local(app.storage_dir.path()).unwrap();
    let made = app.storage_dir.path().join("made.png");
    std::fs::write(&made, b"\x89PNG fake").unwrap();
    storage.put_file(&Storage::artifact_key(id, "waveform.png"), &made).await.unwrap();

    let response = app.get(&format!("/v1/files/{id}/artifacts/waveform.png")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["content-length"], "9");
    assert!(response.headers().contains_key("etag"));
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"\x89PNG fake");

    let part = app
        .client
        .get(app.url(&format!("/v1/files/{id}/artifacts/waveform.png")))
        .bearer_auth(TOKEN)
        .header("range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"PNG");

    expect_error(app.get(&format!("/v1/files/{id}/artifacts/missing.jpg")).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    expect_error(app.get(&format!("/v1/files/{id}/artifacts/..%2Foriginal")).await, StatusCode::NOT_FOUND, "not_found")
        .await;
}
