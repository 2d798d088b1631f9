//! The whole process uses one Redis connection (command role), however many requests run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use reqwest::StatusCode;
use test_support::RedisServer;

use crate::support::{Options, spawn_with};

/// The api-svc connections in `CLIENT LIST` (names `api-svc:<role>:<n>`).
fn api_connections(redis: &RedisServer) -> usize {
    redis.command(&["CLIENT", "LIST"]).lines().filter(|line| line.contains(" name=api-svc:")).count()
}

#[tokio::test]
async fn two_hundred_concurrent_uploads_share_one_redis_connection() {
    let redis = Arc::new(RedisServer::start());
    let app = spawn_with(Options { redis_url: Some(redis.url()), ..Default::default() }).await;

    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (redis, done, most, samples) = (redis.clone(), done.clone(), most.clone(), samples.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(api_connections(&redis), Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let names: Vec<String> = (0..200).map(|n| format!("c{n}.txt")).collect();
    let uploads = names.iter().map(|name| app.upload_raw(name, "text/plain", format!("concurrent {name}")));
    let responses = futures_util::future::join_all(uploads).await;
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    assert!(responses.iter().all(|r| r.status() == StatusCode::ACCEPTED));
    assert_eq!(app.rows().await, 200);
    assert_eq!(app.files.get_job_counts().await.unwrap().waiting, 200);
    assert!(samples.load(Ordering::SeqCst) > 0);
    assert_eq!(most.load(Ordering::SeqCst), 1, "api-svc connections seen in CLIENT LIST");
    assert_eq!(api_connections(&redis), 1);
    let stats = app.connections.stats();
    assert_eq!((stats.budget, stats.open), (1, 1), "{stats:?}");
    assert_eq!((stats.command.open, stats.subscriber.open, stats.blocking.open), (1, 0, 0));
    assert_eq!(stats.command.reconnects, 0, "{stats:?}");
}
