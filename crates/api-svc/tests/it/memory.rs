//! Memory stays flat whatever the size: an upload streams through in chunks.

use std::time::Instant;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::spawn_app;

const CHUNK: usize = 64 * 1024;

/// A field of `/proc/self/status` (`VmRSS`: resident now; `VmHWM`: the peak), in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets `VmHWM` to the current RSS (Linux 4.0+), so it then records the peak of what follows.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `total` bytes of a repeating pattern, produced chunk by chunk (the client holds none of it).
fn body(total: usize) -> (reqwest::Body, String) {
    let pattern: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut hasher = Sha256::new();
    for _ in 0..total / CHUNK {
        hasher.update(&pattern);
    }
    let chunk = Bytes::from(pattern);
    let stream = futures_util::stream::iter((0..total / CHUNK).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    (reqwest::Body::wrap_stream(stream), hex::encode(hasher.finalize()))
}

#[tokio::test]
async fn a_large_upload_does_not_raise_memory() {
    let app = spawn_app().await;
    // Warm up: allocator arenas, the store's buffers, the connections.
    let (warm, _) = body(16 << 20);
    assert_eq!(app.upload_raw("warm.bin", "application/octet-stream", warm).await.status(), StatusCode::ACCEPTED);

    let before = status_kib("VmRSS:");
    let peak_known = reset_peak();
    let total = 128 << 20;
    let (big, sha256) = body(total);
    let started = Instant::now();
    let response = app.upload_raw("big.bin", "application/octet-stream", big).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let (after, peak) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    let id: uuid::Uuid = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let row = app.row(id).await.unwrap();
    assert_eq!((row.size, row.sha256.as_str()), (total as i64, sha256.as_str()));
    // Client and server both live in this process: what either buffered would show.
    let highest = if peak_known { peak.max(after) } else { after };
    let grew = highest.saturating_sub(before);
    eprintln!(
        "128 MiB upload in {:?}: RSS {before} KiB before, {after} KiB after, peak {peak} KiB (reset: {peak_known})",
        started.elapsed()
    );
    assert!(grew < 8 * 1024, "RSS grew by {grew} KiB during a 128 MiB upload");
}
