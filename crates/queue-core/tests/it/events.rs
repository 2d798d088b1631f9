//! `QueueEvents` and `wait_until_finished` against real Redis: events published by our own
//! scripts, by the real Node `bull@4.16.5` worker, and by hand.

use queue_core::tooling::keys_of;
use std::time::Duration;

use queue_core::tooling::now_ms;
use queue_core::{Connections, Error, JobOptions, QueueAdmin, QueueEvent, QueueEvents, Role, wait_until_finished};
use serde_json::{Value, json};
use test_support::NodePeer;

use crate::support::{client_list, config, eventually, raw};

/// The bound on every wait, so a broken test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// Connections with a subscriber (budget 2) under a unique prefix, and the peer's base arguments.
fn setup() -> (Connections, Value) {
    let cfg = config(&test_support::redis_url(), 2);
    let peer = json!({"redis": test_support::redis_url(), "prefix": cfg.prefix});
    (Connections::builder(cfg, "events").subscriber(true).build().unwrap(), peer)
}

/// Runs a bull-peer command on `queue` off the async runtime, so events keep flowing meanwhile.
fn node(peer: &Value, queue: &str, command: &'static str, extra: Value) -> tokio::task::JoinHandle<Value> {
    let mut args = peer.clone();
    args["queue"] = json!(queue);
    for (key, value) in extra.as_object().unwrap() {
        args[key] = value.clone();
    }
    tokio::task::spawn_blocking(move || NodePeer::run(command, args))
}

/// Receives events until `done` holds for all received so far; panics after [`WAIT`].
async fn until(events: &mut QueueEvents, done: impl Fn(&[QueueEvent]) -> bool) -> Vec<QueueEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("the subscriber is gone; received {seen:#?}"),
            Err(_) => panic!("timed out; received {seen:#?}"),
        }
    }
    seen
}

fn position(seen: &[QueueEvent], event: &QueueEvent) -> usize {
    seen.iter().position(|e| e == event).unwrap_or_else(|| panic!("{event:?} not received; received {seen:#?}"))
}

fn waiting(queue: &str, id: &str) -> QueueEvent {
    QueueEvent::Waiting { queue: queue.into(), job_id: id.into() }
}

fn active(queue: &str, id: &str) -> QueueEvent {
    QueueEvent::Active { queue: queue.into(), job_id: id.into() }
}

fn completed(queue: &str, id: &str, return_value: Value) -> QueueEvent {
    QueueEvent::Completed { queue: queue.into(), job_id: id.into(), return_value }
}

fn failed(queue: &str, id: &str, reason: &str) -> QueueEvent {
    QueueEvent::Failed { queue: queue.into(), job_id: id.into(), reason: reason.into() }
}

#[tokio::test]
async fn events_of_jobs_run_by_a_node_worker_arrive_typed() {
    let (connections, peer) = setup();
    let q = QueueAdmin::new(&connections, "work").unwrap();
    let mut events = QueueEvents::new(&connections, &[&q]).await.unwrap();
    let plain = JobOptions::default();
    let ret = q.add("ret", json!({"ret": {"a": [1, 2]}}), plain.clone()).await.unwrap();
    let progress = q.add("progress", json!({"progress": true}), plain.clone()).await.unwrap();
    let fail = q.add("fail", json!({"failAlways": true}), plain).await.unwrap();

    let worker = node(&peer, "work", "process", json!({"expect": 3, "timeoutMs": 20000}));
    let seen = until(&mut events, |seen| {
        seen.iter().filter(|e| matches!(e, QueueEvent::Completed { .. } | QueueEvent::Failed { .. })).count() == 3
    })
    .await;
    let run = worker.await.unwrap();
    assert_eq!(run["timedOut"], false, "{run}");

    for (id, outcome) in [
        (&ret, completed("work", &ret, json!({"a": [1, 2]}))),
        (&progress, completed("work", &progress, json!({"ok": true, "id": progress}))),
        (&fail, failed("work", &fail, "always")),
    ] {
        let (w, a, o) =
            (position(&seen, &waiting("work", id)), position(&seen, &active("work", id)), position(&seen, &outcome));
        assert!(w < a && a < o, "job {id}: waiting, active, finished out of order in {seen:#?}");
    }
    let reported = QueueEvent::Progress { queue: "work".into(), job_id: progress.clone(), progress: json!(50) };
    assert!(
        position(&seen, &reported)
            < position(&seen, &completed("work", &progress, json!({"ok": true, "id": progress})))
    );
}

#[tokio::test]
async fn pause_resume_and_delayed_adds_are_typed() {
    let (connections, peer) = setup();
    let q = QueueAdmin::new(&connections, "ops").unwrap();
    let mut events = QueueEvents::new(&connections, &[&q]).await.unwrap();

    q.pause().await.unwrap();
    q.resume().await.unwrap();
    let before = now_ms();
    let later = q.add("later", json!({}), JobOptions::default().delay(5000)).await.unwrap();
    let after = now_ms();
    let seen = until(&mut events, |seen| seen.iter().any(|e| matches!(e, QueueEvent::Delayed { .. }))).await;

    let paused = QueueEvent::Paused { queue: "ops".into() };
    let resumed = QueueEvent::Resumed { queue: "ops".into() };
    assert!(position(&seen, &paused) < position(&seen, &resumed), "{seen:#?}");
    let Some(QueueEvent::Delayed { queue, due_ms }) = seen.last() else { unreachable!() };
    assert_eq!(queue, "ops");
    assert!((before + 5000..=after + 5000).contains(due_ms), "due {due_ms}, added between {before} and {after}");
    // A delayed job is not waiting yet.
    assert!(!seen.contains(&waiting("ops", &later)), "{seen:#?}");

    // Node Bull's own pause script publishes the same.
    node(&peer, "ops", "pause", json!({})).await.unwrap();
    assert_eq!(until(&mut events, |seen| !seen.is_empty()).await, [paused]);
}

#[tokio::test]
async fn hand_built_payloads_of_other_publishers_are_understood() {
    let (connections, _) = setup();
    let q = QueueAdmin::new(&connections, "hand").unwrap();
    let mut events = QueueEvents::new(&connections, &[&q]).await.unwrap();
    let mut conn = raw(&test_support::redis_url()).await;
    let k = keys_of(&q);
    for (channel, payload) in [
        // The stall check's failure, hand-built JSON with a space after the comma.
        (k.key("failed"), r#"{"jobId":"4", "val": "job stalled more than maxStalledCount"}"#),
        // Bull's legacy progress form.
        (k.key("progress"), r#"5,{"step":2}"#),
        (k.key("stalled@"), "6"),
        (k.key("drained"), ""),
        // Skipped: Bull has no global:waiting without a token; not JSON.
        (k.key("waiting@"), "7"),
        (k.key("completed"), "garbage"),
        (k.key("delayed"), "1796028475047.0005"),
        (k.key("resumed"), "resumed"),
    ] {
        let _: i64 = redis::cmd("PUBLISH").arg(channel).arg(payload).query_async(&mut conn).await.unwrap();
    }
    let seen = until(&mut events, |seen| seen.len() == 6).await;
    let queue = || "hand".to_owned();
    assert_eq!(
        seen,
        [
            failed("hand", "4", "job stalled more than maxStalledCount"),
            QueueEvent::Progress { queue: queue(), job_id: "5".into(), progress: json!({"step": 2}) },
            QueueEvent::Stalled { queue: queue(), job_id: "6".into() },
            QueueEvent::Drained { queue: queue() },
            QueueEvent::Delayed { queue: queue(), due_ms: 1_796_028_475_048 },
            QueueEvent::Resumed { queue: queue() },
        ]
    );
}

#[tokio::test]
async fn two_queues_share_one_subscriber_connection_and_events_name_their_queue() {
    let (connections, peer) = setup();
    let a = QueueAdmin::new(&connections, "a").unwrap();
    let b = QueueAdmin::new(&connections, "b").unwrap();
    let other = QueueAdmin::new(&connections, "other").unwrap();
    let mut both = QueueEvents::new(&connections, &[&a, &b]).await.unwrap();
    let mut only_b = QueueEvents::new(&connections, &[&b]).await.unwrap();

    let plain = JobOptions::default();
    other.add("x", json!({}), plain.clone()).await.unwrap();
    other.pause().await.unwrap();
    let job_a = a.add("x", json!({"ret": "from a"}), plain.clone()).await.unwrap();
    let job_b = b.add("x", json!({}), plain).await.unwrap();
    b.pause().await.unwrap();
    let worker = node(&peer, "a", "process", json!({"expect": 1, "timeoutMs": 20000}));
    let done = completed("a", &job_a, json!("from a"));
    let seen = until(&mut both, |seen| seen.contains(&done)).await;
    worker.await.unwrap();

    position(&seen, &waiting("a", &job_a));
    position(&seen, &active("a", &job_a));
    position(&seen, &waiting("b", &job_b));
    position(&seen, &QueueEvent::Paused { queue: "b".into() });
    // `other` published before everything above, on the same server connection.
    assert!(seen.iter().all(|e| e.queue() != Some("other")), "{seen:#?}");
    assert!(!seen.contains(&QueueEvent::Paused { queue: "a".into() }), "{seen:#?}");

    let seen_b = until(&mut only_b, |seen| seen.contains(&QueueEvent::Paused { queue: "b".into() })).await;
    assert!(seen_b.iter().all(|e| e.queue() == Some("b")), "{seen_b:#?}");
    assert_eq!(seen_b[0], waiting("b", &job_b));

    wait_until_finished(&a, &connections, &job_a, Some(WAIT)).await.unwrap().unwrap();
    let stats = connections.stats();
    assert_eq!(stats.subscriber.open, 1, "{stats:?}");
}

#[tokio::test]
async fn wait_until_finished_follows_a_node_worker_and_resolves_at_once_when_already_done() {
    let (connections, peer) = setup();
    let q = QueueAdmin::new(&connections, "fin").unwrap();
    let plain = JobOptions::default();
    let ok = q.add("ok", json!({"ret": 7}), plain.clone()).await.unwrap();
    let bad = q.add("bad", json!({"failAlways": true}), plain).await.unwrap();
    let waiter = |id: String| {
        let (q, connections) = (q.clone(), connections.clone());
        tokio::spawn(async move { wait_until_finished(&q, &connections, &id, Some(3 * WAIT)).await })
    };
    let (wait_ok, wait_bad) = (waiter(ok.clone()), waiter(bad.clone()));

    let run = node(&peer, "fin", "process", json!({"expect": 2, "timeoutMs": 20000})).await.unwrap();
    assert_eq!(run["timedOut"], false, "{run}");
    assert_eq!(wait_ok.await.unwrap().unwrap(), Ok(json!(7)));
    assert_eq!(wait_bad.await.unwrap().unwrap(), Err("always".to_owned()));

    // Finished before the call: answered by the first read.
    assert_eq!(wait_until_finished(&q, &connections, &ok, Some(WAIT)).await.unwrap(), Ok(json!(7)));
    assert_eq!(wait_until_finished(&q, &connections, &bad, Some(WAIT)).await.unwrap(), Err("always".to_owned()));
}

#[tokio::test]
async fn wait_until_finished_resolves_without_a_message_through_its_watchdog() {
    // A service name of its own, to find this test's command connection in CLIENT LIST.
    let service = test_support::unique("events");
    let connections =
        Connections::builder(config(&test_support::redis_url(), 2), &service).subscriber(true).build().unwrap();
    let q = QueueAdmin::new(&connections, "quiet").unwrap();
    let id = q.add("x", json!({}), JobOptions::default()).await.unwrap();
    // A last command on the connection that the waiter's first read (a script) will replace.
    assert!(q.get_job(&id).await.unwrap().is_some());
    let waiter = {
        let (q, connections, id) = (q.clone(), connections.clone(), id.clone());
        tokio::spawn(async move { wait_until_finished(&q, &connections, &id, Some(WAIT)).await })
    };

    // Let the waiter subscribe and make its first read, which finds the job waiting: nothing else
    // runs a script on this test's command connection now.
    let mut conn = raw(&test_support::redis_url()).await;
    let k = keys_of(&q);
    let command_connection = format!("{service}:command:0");
    let first_read = eventually(WAIT, async || {
        let clients = client_list(&mut conn).await;
        clients.iter().any(|c| c["name"] == command_connection && matches!(c["cmd"].as_str(), "evalsha" | "eval"))
    })
    .await;
    assert!(first_read, "the waiter never read the job's state");
    let (_, subscribers): (String, u64) =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(k.key("completed")).query_async(&mut conn).await.unwrap();
    assert!(subscribers > 0, "the waiter subscribes before its first read");
    assert!(!waiter.is_finished(), "{:?}", waiter.await);

    // Complete the job by hand, publishing nothing.
    let now = now_ms();
    let _: () = redis::pipe()
        .atomic()
        .lrem(k.wait(), 0, &id)
        .zadd(k.completed(), &id, now)
        .hset_multiple(k.job(&id), &[("returnvalue", r#"{"by":"hand"}"#.to_owned()), ("finishedOn", now.to_string())])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), Ok(json!({"by": "hand"})));
}

#[tokio::test]
async fn wait_until_finished_reports_missing_jobs_timeouts_and_a_missing_subscriber() {
    let (connections, _) = setup();
    let q = QueueAdmin::new(&connections, "errs").unwrap();
    let missing = wait_until_finished(&q, &connections, "404", Some(WAIT)).await.unwrap_err();
    assert!(matches!(&missing, Error::JobNotFound(id) if id == "404"), "{missing:?}");

    let id = q.add("never-run", json!({}), JobOptions::default()).await.unwrap();
    let limit = Duration::from_millis(300);
    let timeout = wait_until_finished(&q, &connections, &id, Some(limit)).await.unwrap_err();
    assert!(
        matches!(timeout, Error::Timeout { role: Role::Subscriber, what: "wait", after } if after == limit),
        "{timeout:?}"
    );
    assert!(timeout.is_timeout(), "{timeout:?}");

    let command_only = Connections::builder(config(&test_support::redis_url(), 1), "events").build().unwrap();
    let q = QueueAdmin::new(&command_only, "errs").unwrap();
    let no_events = QueueEvents::new(&command_only, &[&q]).await.unwrap_err();
    assert!(matches!(no_events, Error::Config { var: "subscriber", .. }), "{no_events:?}");
    let no_wait = wait_until_finished(&q, &command_only, &id, None).await.unwrap_err();
    assert!(matches!(no_wait, Error::Config { var: "subscriber", .. }), "{no_wait:?}");
    assert_eq!(command_only.stats().open, 0);
}
