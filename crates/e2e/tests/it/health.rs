//! health-svc against the running stack: readiness that follows Redis, Postgres and the canary
//! by itself; the ops facts; one Redis connection whatever the request rate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{ChaosProxy, Stack, StackOptions, eventually, through};
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::Value;
use test_support::{RedisServer, resp_command};
use tokio::task::JoinSet;

const LIMIT: Duration = Duration::from_secs(60);

/// A canary every 300 ms, overdue after 2 s.
fn canary_vars() -> Vec<(&'static str, String)> {
    vec![("HEALTH_CANARY_INTERVAL_MS", "300".to_owned()), ("HEALTH_CANARY_MAX_AGE_MS", "2000".to_owned())]
}

async fn readyz(stack: &Stack, query: &str) -> (StatusCode, Value) {
    let answer = stack.client.get(format!("{}/readyz{query}", stack.health_base)).send().await.unwrap();
    (answer.status(), answer.json().await.unwrap())
}

/// Waits until `/readyz<query>` answers `status`; how long that took, and the body.
async fn readyz_becomes(stack: &Stack, query: &str, status: StatusCode, limit: Duration) -> (Duration, Value) {
    let started = Instant::now();
    let body = eventually(limit, &format!("/readyz{query} to answer {status}"), async || {
        let (got, body) = readyz(stack, query).await;
        (got == status).then_some(body)
    })
    .await;
    (started.elapsed(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_and_the_canary_and_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let stack = Stack::start(StackOptions {
        redis_url: Some(redis.url()),
        health: true,
        health_vars: canary_vars(),
        ..StackOptions::default()
    })
    .await;
    let (_, body) = readyz_becomes(&stack, "?deep=1", StatusCode::OK, LIMIT).await;
    assert_eq!(body["canary"]["ok"], true, "{body}");

    // Redis stopped: 503 naming Redis within 2 s (cache 1 s + check timeout 1 s).
    redis.kill();
    let (took, body) = readyz_becomes(&stack, "", StatusCode::SERVICE_UNAVAILABLE, LIMIT).await;
    assert!(took <= Duration::from_millis(2500), "noticed after {took:?}");
    assert_eq!(body["checks"]["redis"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["postgres"]["ok"], true, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("redis"), "{body}");
    redis.restart();
    readyz_becomes(&stack, "", StatusCode::OK, LIMIT).await;

    // worker-svc frozen: a PING passes, the canary does not.
    stack.worker.signal(Signal::SIGSTOP);
    let (_, body) = readyz_becomes(&stack, "?deep=1", StatusCode::SERVICE_UNAVAILABLE, LIMIT).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("canary"), "{body}");
    assert_eq!(readyz(&stack, "").await.0, StatusCode::OK, "shallow readiness still passes");
    let ops: Value =
        stack.client.get(format!("{}/ops/queue", stack.health_base)).send().await.unwrap().json().await.unwrap();
    let problems = ops["problems"].to_string();
    assert!(problems.contains("canary is overdue"), "{ops}");
    stack.worker.signal(Signal::SIGCONT);
    let (_, body) = readyz_becomes(&stack, "?deep=1", StatusCode::OK, LIMIT).await;
    assert_eq!(body["canary"]["ok"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_postgres_when_it_is_unreachable_and_recovers() {
    let direct = test_support::fresh_database().await;
    let (_, upstream) = through(&direct, "127.0.0.1:1".parse().unwrap());
    let proxy = ChaosProxy::start(upstream).await;
    let (proxied, _) = through(&direct, proxy.addr());
    let stack = Stack::start(StackOptions {
        health: true,
        health_vars: vec![("DATABASE_URL", proxied)],
        ..StackOptions::default()
    })
    .await;
    proxy.cut();
    let (took, body) = readyz_becomes(&stack, "", StatusCode::SERVICE_UNAVAILABLE, LIMIT).await;
    assert!(took <= Duration::from_millis(2500), "noticed after {took:?}");
    assert_eq!(body["checks"]["postgres"]["ok"], false, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("postgres"), "{body}");
    proxy.restore();
    readyz_becomes(&stack, "", StatusCode::OK, LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_shows_queues_processes_and_connections_against_budgets() {
    let redis = RedisServer::start();
    let stack = Stack::start(StackOptions {
        redis_url: Some(redis.url()),
        health: true,
        health_vars: canary_vars(),
        ..StackOptions::default()
    })
    .await;
    readyz_becomes(&stack, "?deep=1", StatusCode::OK, LIMIT).await;
    let ops: Value = eventually(LIMIT, "every service to beat", async || {
        let ops: Value =
            stack.client.get(format!("{}/ops/queue", stack.health_base)).send().await.ok()?.json().await.ok()?;
        (ops["connections"]["services"].as_array()?.len() == 3).then_some(ops)
    })
    .await;
    let queues: Vec<&str> = ops["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(queues, ["files", "webhooks"], "{ops}");
    let services: BTreeMap<&str, (u64, u64)> = ops["connections"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap(), (s["total"].as_u64().unwrap(), s["budget"].as_u64().unwrap())))
        .collect();
    assert_eq!(
        services,
        BTreeMap::from([("api-svc", (1, 1)), ("health-svc", (1, 1)), ("worker-svc", (2, 2))]),
        "open and declared per service: {ops}"
    );
    assert!(ops["redis"]["maxclients"].as_u64().unwrap() > 0, "{ops}");
    assert!(ops["redis"]["latency"]["avg_ms"].as_f64().is_some(), "{ops}");
    assert_eq!(ops["redis"]["aof_enabled"], true, "{ops}");
    assert_eq!(ops["canary"]["ok"], true, "{ops}");
    assert!(ops["workers"].as_array().unwrap().len() >= 3, "{ops}");
    assert!(ops["problems"].as_array().unwrap().is_empty(), "{ops}");

    // A service over its budget is said in words, in the JSON and on the page.
    let mut extra = redis_client_named(redis.port(), "worker-svc:command:9");
    let (page, ops) = eventually(LIMIT, "the page to name the service over budget", async || {
        let page = stack.client.get(format!("{}/ops", stack.health_base)).send().await.ok()?.text().await.ok()?;
        let ops: Value =
            stack.client.get(format!("{}/ops/queue", stack.health_base)).send().await.ok()?.json().await.ok()?;
        page.contains("worker-svc holds 3 Redis connections but declares a budget of 2").then_some((page, ops))
    })
    .await;
    assert!(page.contains("it is over budget") && page.contains("3 of 2"), "{page}");
    assert!(ops["problems"].to_string().contains("over budget"), "{ops}");
    use std::io::Write;
    let _ = extra.write_all(b"QUIT\r\n");
}

/// A raw connection to Redis on `port` that names itself `name` and stays open.
pub(crate) fn redis_client_named(port: u16, name: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let command = format!("*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n${}\r\n{name}\r\n", name.len());
    stream.write_all(command.as_bytes()).unwrap();
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_hold_four_redis_connections_under_uploads_and_probes() {
    let redis = RedisServer::start();
    let stack = Arc::new(
        Stack::start(StackOptions { redis_url: Some(redis.url()), health: true, ..StackOptions::default() }).await,
    );
    let port = redis.port();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let done = done.clone();
        move || {
            let (mut most, mut names) = (0, BTreeMap::<u64, String>::new());
            while !done.load(Ordering::Relaxed) {
                let reply = resp_command(port, &["CLIENT", "LIST"]);
                let now: Vec<(u64, String)> = reply
                    .lines()
                    .filter(|l| l.starts_with("id=") && !l.contains("cmd=client|list"))
                    .map(|l| {
                        let field = |k: &str| l.split(' ').find_map(|f| f.strip_prefix(k)).unwrap_or("").to_owned();
                        (field("id=").parse().unwrap(), field("name="))
                    })
                    .collect();
                most = most.max(now.len());
                for (id, name) in now {
                    let seen = names.entry(id).or_default();
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
    for i in 0..200 {
        let stack = stack.clone();
        uploads.spawn(async move {
            stack.accepted(&format!("f{i}.txt"), "text/plain", format!("{i}\n").into_bytes()).await
        });
    }
    // 1,000 of each, from 50 clients at a time (as probes and scrapes come: many, not all at
    // once), while the uploads go on.
    let mut probes = JoinSet::new();
    for client_no in 0..50 {
        let (client, base) = (stack.client.clone(), stack.health_base.clone());
        probes.spawn(async move {
            for round in 0..40 {
                let path = if (client_no + round) % 2 == 0 { "/readyz" } else { "/ops/queue" };
                let answer = client.get(format!("{base}{path}")).send().await.unwrap();
                assert_eq!(answer.status(), StatusCode::OK, "{path}");
            }
        });
    }
    let ids = uploads.join_all().await;
    probes.join_all().await;
    for id in ids {
        assert_eq!(stack.finished(id, Duration::from_secs(120)).await["status"], "done");
    }
    done.store(true, Ordering::Relaxed);
    let (most, names) = sampler.join().unwrap();
    assert!(most <= 4, "at most 4 connections at once, saw {most}: {names:?}");
    let named: BTreeSet<&str> = names.values().map(String::as_str).collect();
    let expected = ["api-svc:command:0", "health-svc:command:0", "worker-svc:command:0", "worker-svc:subscriber:0"];
    assert_eq!(names.len(), 4, "the same 4 connections all along: {names:?}");
    assert_eq!(named, BTreeSet::from(expected));
}
