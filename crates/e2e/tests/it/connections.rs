//! api-svc and worker-svc together hold three Redis connections (api-svc's command connection;
//! worker-svc's command and subscriber connections in zero-blocking mode), however many requests
//! come in: none is opened per request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{Stack, StackOptions};
use test_support::{RedisServer, resp_command};
use tokio::task::JoinSet;

const UPLOADS: usize = 200;

/// `(id, name)` of every client in `CLIENT LIST` except the connection asking.
fn clients(port: u16) -> Vec<(u64, String)> {
    let reply = resp_command(port, &["CLIENT", "LIST"]);
    reply
        .lines()
        .filter(|line| line.starts_with("id=") && !line.contains("cmd=client|list"))
        .map(|line| {
            let field = |key: &str| line.split(' ').find_map(|f| f.strip_prefix(key)).unwrap_or_default().to_owned();
            (field("id=").parse().unwrap(), field("name="))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_hold_three_redis_connections_during_200_concurrent_uploads() {
    let redis = RedisServer::start();
    let stack = Arc::new(Stack::start(StackOptions { redis_url: Some(redis.url()), ..StackOptions::default() }).await);

    // Sample CLIENT LIST every 5 ms from a thread of its own until the uploads are processed.
    let port = redis.port();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let done = done.clone();
        move || {
            // Each connection's name as last seen: a connection may be sampled between its
            // connect and its `CLIENT SETNAME`.
            let (mut most, mut names) = (0, BTreeMap::new());
            while !done.load(Ordering::Relaxed) {
                let now = clients(port);
                most = most.max(now.len());
                for (id, name) in now {
                    let seen: &mut String = names.entry(id).or_default();
                    if !name.is_empty() {
                        *seen = name;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (most, names)
        }
    });

    let mut uploads = JoinSet::new();
    for i in 0..UPLOADS {
        let stack = stack.clone();
        uploads.spawn(async move {
            stack.accepted(&format!("f{i}.txt"), "text/plain", format!("{i}\n").into_bytes()).await
        });
    }
    let ids = uploads.join_all().await;
    for id in &ids {
        assert_eq!(stack.finished(*id, Duration::from_secs(120)).await["status"], "done");
    }
    done.store(true, Ordering::Relaxed);
    let (most, names) = sampler.join().unwrap();

    assert!(most <= 3, "at most 3 connections at once, saw {most}: {names:?}");
    assert_eq!(names.len(), 3, "the same 3 connections all along (none per request): {names:?}");
    let names: BTreeSet<&str> = names.values().map(String::as_str).collect();
    let expected = ["api-svc:command:0", "worker-svc:command:0", "worker-svc:subscriber:0"];
    assert_eq!(names, BTreeSet::from(expected));
}
