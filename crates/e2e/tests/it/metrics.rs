//! The three services' `/metrics`, read by the Prometheus reference parser, count exactly what a
//! known workload did: five uploads (one a truncated MP4 that fails for good) and seven
//! readiness probes. health-svc's gauges of readiness, Redis and the queues follow a frozen
//! worker.

use std::time::Duration;

use e2e::{Exposition, Stack, StackOptions, eventually, scrape};
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use test_support::Media;

const LIMIT: Duration = Duration::from_secs(90);
const PROBES: usize = 7;

/// The three expositions of a stack, in the order api-svc, worker-svc, health-svc.
async fn scrape_all(stack: &Stack) -> [Exposition; 3] {
    [
        scrape(&stack.client, &stack.api_base).await,
        scrape(&stack.client, &stack.metrics_base).await,
        scrape(&stack.client, &stack.health_base).await,
    ]
}

/// Every sample belongs to a family its `TYPE` line declared; the Redis connections are there
/// by role, with what the service plans (`prefix` is worker-svc's `worker_`).
fn check_shape(service: &str, exposition: &Exposition, prefix: &str, open: &[(&str, f64)]) {
    let text = &exposition.text;
    for sample in &exposition.samples {
        assert_ne!(sample.kind, "unknown", "{service}: {} has no TYPE: {text}", sample.name);
    }
    let name = format!("{prefix}redis_connections_open");
    for role in ["command", "subscriber", "blocking"] {
        let expected = open.iter().find(|(r, _)| *r == role).map_or(0.0, |(_, n)| *n);
        assert_eq!(
            exposition.value(&name, &[("role", role)]),
            Some(expected),
            "{service}: {name}{{role={role}}}: {text}"
        );
    }
    let budget = format!("{prefix}redis_connection_budget");
    assert_eq!(exposition.value(&budget, &[]), Some(open.iter().map(|(_, n)| n).sum()), "{service}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_count_a_known_workload_exactly() {
    let stack = Stack::start(StackOptions {
        health: true,
        health_vars: vec![("HEALTH_CANARY_INTERVAL_MS", "300".to_owned())],
        ..StackOptions::default()
    })
    .await;
    let [api, worker, health] = scrape_all(&stack).await;

    let media = Media::new();
    let clip = media.video("clip.mp4", 1, "160x120");
    let bodies: Vec<(&str, &str, Vec<u8>)> = vec![
        ("a.txt", "text/plain", b"one\n".to_vec()),
        ("b.txt", "text/plain", b"two\n".to_vec()),
        ("c.png", "image/png", media.png()),
        ("d.bin", "application/octet-stream", vec![7; 4096]),
        ("broken.mp4", "video/mp4", clip[..clip.len() / 2].to_vec()),
    ];
    let uploaded: usize = bodies.iter().map(|(_, _, body)| body.len()).sum();
    let mut ids = Vec::new();
    for (name, content_type, body) in bodies {
        ids.push(stack.accepted(name, content_type, body).await);
    }
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(stack.finished(*id, LIMIT).await["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["done", "done", "done", "done", "failed"]);
    for _ in 0..PROBES {
        let answer = stack.client.get(format!("{}/readyz", stack.health_base)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }

    // api-svc counts before it answers, so its counts are final when the uploads are.
    let api_after = scrape(&stack.client, &stack.api_base).await;
    let grew = |before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]| {
        after.sum(name, labels) - before.sum(name, labels)
    };
    let text = &api_after.text;
    assert_eq!(grew(&api, &api_after, "uploads_total", &[("outcome", "accepted")]), 5.0, "{text}");
    let posts = [("route", "/v1/files"), ("method", "POST"), ("status", "202")];
    assert_eq!(grew(&api, &api_after, "http_requests_total", &posts), 5.0, "{text}");
    let any_status = [("route", "/v1/files"), ("method", "POST")];
    assert_eq!(grew(&api, &api_after, "http_requests_total", &any_status), 5.0, "{text}");
    // The file store: five uploads completed, every byte sent in parts, nothing failed.
    let op = |op| [("op", op)];
    assert_eq!(grew(&api, &api_after, "storage_requests_total", &op("complete_upload")), 5.0, "{text}");
    assert_eq!(grew(&api, &api_after, "storage_bytes_total", &op("put_part")), uploaded as f64, "{text}");
    assert_eq!(grew(&api, &api_after, "storage_errors_total", &[]), 0.0, "{text}");
    assert_eq!(api_after.value("storage_backend", &[("backend", "local")]), Some(1.0), "{text}");

    // worker-svc writes the file's row before it counts the attempt: wait for the counts.
    let files = |outcome| [("queue", "files"), ("outcome", outcome)];
    let worker_after = eventually(LIMIT, "worker-svc to count the five attempts", async || {
        let after = scrape(&stack.client, &stack.metrics_base).await;
        (grew(&worker, &after, "worker_jobs_total", &[("queue", "files")]) >= 5.0).then_some(after)
    })
    .await;
    let text = &worker_after.text;
    assert_eq!(grew(&worker, &worker_after, "worker_jobs_total", &files("done")), 4.0, "{text}");
    assert_eq!(grew(&worker, &worker_after, "worker_jobs_total", &files("failed")), 1.0, "{text}");
    assert_eq!(grew(&worker, &worker_after, "worker_jobs_total", &[("queue", "files")]), 5.0, "{text}");
    assert_eq!(grew(&worker, &worker_after, "worker_job_duration_seconds_count", &[("queue", "files")]), 5.0);
    // Each upload read back at least once, whole; derivatives (the PNG's thumbnail) written.
    assert!(grew(&worker, &worker_after, "worker_storage_requests_total", &op("get")) >= 5.0, "{text}");
    assert!(grew(&worker, &worker_after, "worker_storage_bytes_total", &op("get")) >= uploaded as f64, "{text}");
    assert!(grew(&worker, &worker_after, "worker_storage_requests_total", &op("complete_upload")) >= 1.0, "{text}");
    assert!(grew(&worker, &worker_after, "worker_storage_request_duration_seconds_count", &op("get")) >= 5.0, "{text}");

    // health-svc: exactly the probes made since the first scrape, and canaries coming back.
    let ok = [("outcome", "ok")];
    let health_after = eventually(LIMIT, "a canary to come back", async || {
        let after = scrape(&stack.client, &stack.health_base).await;
        (grew(&health, &after, "canary_probes_total", &ok) > 0.0).then_some(after)
    })
    .await;
    let text = &health_after.text;
    let readyz = [("route", "/readyz"), ("method", "GET")];
    assert_eq!(grew(&health, &health_after, "http_requests_total", &readyz), PROBES as f64, "{text}");
    let readyz_ok = [("route", "/readyz"), ("method", "GET"), ("status", "200")];
    assert_eq!(grew(&health, &health_after, "http_requests_total", &readyz_ok), PROBES as f64, "{text}");
    assert_eq!(grew(&health, &health_after, "http_request_duration_seconds_count", &readyz), PROBES as f64);
    assert_eq!(health_after.value("canary_up", &[]), Some(1.0), "{text}");
    let routes = ["/livez", "/readyz", "/ops", "/ops/queue", "/metrics", "unmatched"];
    for (labels, _) in health_after.series("http_requests_total") {
        assert!(routes.contains(&labels["route"].as_str()), "{labels:?}: {text}");
    }

    // One connection each for api-svc and health-svc, two for worker-svc (zero-blocking).
    check_shape("api-svc", &api_after, "", &[("command", 1.0)]);
    check_shape("worker-svc", &worker_after, "worker_", &[("command", 1.0), ("subscriber", 1.0)]);
    check_shape("health-svc", &health_after, "", &[("command", 1.0)]);
}

#[test]
fn the_reference_parser_refuses_what_is_not_the_text_format() {
    let good = Exposition::parse("# TYPE a_total counter\na_total{x=\"1\"} 3\n").unwrap();
    assert_eq!(good.value("a_total", &[("x", "1")]), Some(3.0));
    assert_eq!(good.samples[0].kind, "counter");
    for bad in ["# TYPE a gauge\na{x=\"1\" 1\n", "# TYPE a gauge\na{x=1} 1\n", "# TYPE a gauge\na one\n"] {
        assert!(Exposition::parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_svc_exports_readiness_redis_and_queue_gauges() {
    let stack = Stack::start(StackOptions {
        health: true,
        health_vars: vec![("HEALTH_CANARY_INTERVAL_MS", "300".to_owned())],
        ..StackOptions::default()
    })
    .await;
    let health = scrape(&stack.client, &stack.health_base).await;
    let text = &health.text;
    for check in ["redis", "postgres"] {
        assert_eq!(health.value("health_check_up", &[("check", check)]), Some(1.0), "{check}: {text}");
    }
    let clients = health.value("redis_clients_connected", &[]).expect("redis_clients_connected");
    let max = health.value("redis_maxclients", &[]).expect("redis_maxclients");
    assert!(clients >= 4.0 && max >= clients, "{clients} of {max}: {text}");
    let ping = health.value("redis_ping_latency_seconds", &[]).expect("redis_ping_latency_seconds");
    assert!(ping > 0.0 && ping < 1.0, "{text}");
    for queue in ["files", "webhooks"] {
        assert_eq!(health.value("queue_paused", &[("queue", queue)]), Some(0.0), "{text}");
        assert!(health.value("queue_oldest_waiting_age_seconds", &[("queue", queue)]).is_some(), "{text}");
        for state in ["waiting", "active", "delayed", "paused", "completed", "failed"] {
            assert!(health.value("queue_jobs", &[("queue", queue), ("state", state)]).is_some(), "{state}: {text}");
        }
    }

    // A frozen worker: the file's job (and canaries) wait, and the next one's age grows.
    stack.worker.signal(Signal::SIGSTOP);
    let id = stack.accepted("a.txt", "text/plain", b"waits\n".to_vec()).await;
    let files = [("queue", "files")];
    let waiting = eventually(LIMIT, "the next files job to have waited 1 s", async || {
        let health = scrape(&stack.client, &stack.health_base).await;
        let age = health.value("queue_oldest_waiting_age_seconds", &files)?;
        (age >= 1.0).then_some(health)
    })
    .await;
    let text = &waiting.text;
    assert!(waiting.value("queue_jobs", &[("queue", "files"), ("state", "waiting")]).unwrap() >= 1.0, "{text}");
    stack.worker.signal(Signal::SIGCONT);
    assert_eq!(stack.finished(id, LIMIT).await["status"], "done");
    let completed = [("queue", "files"), ("state", "completed")];
    eventually(LIMIT, "the files queue to be drained", async || {
        let health = scrape(&stack.client, &stack.health_base).await;
        let drained = health.value("queue_jobs", &[("queue", "files"), ("state", "waiting")]) == Some(0.0)
            && health.value("queue_oldest_waiting_age_seconds", &files) == Some(0.0)
            && health.value("queue_jobs", &completed).is_some_and(|n| n >= 1.0);
        drained.then_some(())
    })
    .await;
}
