//! Redis connections: worker-svc consumes both queues on 2 connections in zero-blocking mode
//! (command + subscriber) and on 2 + 1 per queue in blocking mode, as `CLIENT LIST` shows.

use std::time::Duration;

use test_support::RedisServer;

use test_support::Media;

use crate::support::{Place, TestApp, eventually};

const LIMIT: Duration = Duration::from_secs(60);

/// Names of the connections `worker-svc` holds now (the test's own are `worker-svc-test:*`).
fn service_clients(redis: &RedisServer) -> Vec<String> {
    let list = redis.command(&["CLIENT", "LIST"]);
    list.split_whitespace()
        .filter_map(|field| field.strip_prefix("name="))
        .filter(|name| name.starts_with("worker-svc:") || name.contains(":worker-svc:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_blocking_mode_works_both_queues_on_two_connections() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_at(Place::new(Some(redis.url())).await, &[]).await;
    let media = Media::new();
    let png = media.png();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(app.upload(&png, &format!("{i}.png"), None).await);
        ids.push(app.upload(format!("text {i}\n").as_bytes(), "t.txt", None).await);
    }
    // Sample while the jobs run: never more than two.
    let mut most = 0;
    for id in &ids {
        eventually(LIMIT, "the files to finish", async || {
            let clients = service_clients(&redis);
            assert!(clients.len() <= 2, "worker-svc holds {clients:?}");
            most = most.max(clients.len());
            let row = app.db.get_file(*id).await.unwrap().unwrap();
            (row.status == "done").then_some(())
        })
        .await;
    }
    let mut clients = service_clients(&redis);
    clients.sort();
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert!(
        clients[0].starts_with("worker-svc:command:") && clients[1].starts_with("worker-svc:subscriber:"),
        "{clients:?}"
    );
    let stats = app.service_connections.stats();
    assert_eq!((stats.budget, stats.open, stats.blocking.planned), (2, 2, 0), "{stats:?}");

    let (status, body) = app.get("/livez").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (_, metrics) = app.get("/metrics").await;
    assert!(metrics.contains(r#"worker_redis_connections_open{role="command"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"worker_redis_connections_open{role="blocking"} 0"#), "{metrics}");
    assert!(metrics.contains("worker_redis_connection_budget 2"), "{metrics}");
    assert!(metrics.contains(r#"worker_db_pool_connections{state="idle"} "#), "{metrics}");
    assert!(metrics.contains("worker_db_pool_max_connections "), "{metrics}");
    app.stop().await;
    assert!(service_clients(&redis).is_empty(), "every connection is closed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_mode_adds_one_blocking_connection_per_queue() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_at(Place::new(Some(redis.url())).await, &[("WORKER_BLOCKING", "true")]).await;
    let id = app.upload(b"blocking\n", "b.txt", None).await;
    assert_eq!(app.finished(id, LIMIT).await.status, "done");
    let clients = eventually(LIMIT, "both blocking connections", async || {
        let clients = service_clients(&redis);
        (clients.iter().filter(|c| c.contains(":blocking:")).count() == 2).then_some(clients)
    })
    .await;
    assert_eq!(clients.len(), 4, "{clients:?}");
    assert_eq!(app.service_connections.stats().budget, 4);
    app.stop().await;
}
