//! Connection roles, the hard budget, reconnects and timeouts.

use queue_core::tooling;
use queue_core::tooling::keys_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use queue_core::tooling::SubscriberEvent;
use queue_core::{Connections, Error, JobOptions, Queue};
use redis::AsyncCommands;
use serde_json::json;
use test_support::RedisServer;

use crate::support::{clients_of, config, raw};

#[test]
fn a_plan_over_budget_fails_when_built_naming_each_role() {
    let err =
        Connections::builder(config("redis://127.0.0.1:1", 3), "svc").subscriber(true).blocking(2).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "connection budget exceeded: 4 connections needed (command 1, subscriber 1, blocking 2) but REDIS_MAX_CONNECTIONS is 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_process_never_shows_more_connections_than_its_budget() {
    let url = test_support::redis_url();
    let service = test_support::unique("budget");
    let connections = Connections::builder(config(&url, 4), &service).subscriber(true).blocking(2).build().unwrap();
    let q = Queue::new(&connections, "files").unwrap();
    let subscriber = tooling::subscriber(&connections).unwrap().clone();
    subscriber.psubscribe(&keys_of(&q).waiting_pattern()).await.unwrap();

    // An observer outside the budget samples CLIENT LIST while the process is busy.
    let max_seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observer = {
        let (max_seen, done, service, url) = (max_seen.clone(), done.clone(), service.clone(), url.clone());
        tokio::spawn(async move {
            let mut r = raw(&url).await;
            while !done.load(Ordering::Relaxed) {
                let n = clients_of(&mut r, &service).await.len();
                max_seen.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Blocking pops on both blocking connections, and a third that has to wait for one.
    let mut poppers = Vec::new();
    for _ in 0..3 {
        let blocking = tooling::blocking(&connections).unwrap().clone();
        let (src, dst) = (keys_of(&q).key("side"), keys_of(&q).key("side-done"));
        poppers.push(tokio::spawn(async move { blocking.blmove(&src, &dst, Duration::from_secs(2)).await }));
    }
    let mut tasks = Vec::new();
    for t in 0..200 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                q.add(
                    "__default__",
                    json!({"i": t * 5 + i, "path": format!("/data/file{}.mp4", t * 5 + i)}),
                    JobOptions::default(),
                )
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut r = raw(&url).await;
    for _ in 0..3 {
        let _: () = r.lpush(keys_of(&q).key("side"), "x").await.unwrap();
    }
    for popper in poppers {
        assert_eq!(popper.await.unwrap().unwrap().as_deref(), Some("x"));
    }
    done.store(true, Ordering::Relaxed);
    observer.await.unwrap();
    assert_eq!(q.get_job_counts().await.unwrap().waiting, 1000);
    let max = max_seen.load(Ordering::Relaxed);
    assert!(max <= 4, "saw {max} connections of a process with a budget of 4");
    assert!(max >= 3, "the observer should have seen command, subscriber and blocking connections, saw {max}");
    let stats = connections.stats();
    assert_eq!((stats.command.open, stats.subscriber.open), (1, 1));
    assert!(stats.blocking.open <= 2);
    assert!(stats.open <= 4);
    let mut names: Vec<String> = clients_of(&mut r, &service).await.into_iter().map(|(_, name)| name).collect();
    names.sort();
    assert_eq!(&names[..2], [format!("{service}:blocking:0"), format!("{service}:blocking:1")]);
    assert!(
        names.contains(&format!("{service}:command:0")) && names.contains(&format!("{service}:subscriber:0")),
        "{names:?}"
    );
}

#[tokio::test]
async fn every_role_survives_client_kill() {
    let url = test_support::redis_url();
    let service = test_support::unique("kill");
    let connections = Connections::builder(config(&url, 3), &service).subscriber(true).blocking(1).build().unwrap();
    let q = Queue::new(&connections, "q").unwrap();
    let subscriber = tooling::subscriber(&connections).unwrap();
    let mut events = subscriber.events();
    let channel = keys_of(&q).key("hint");
    subscriber.subscribe(&channel).await.unwrap();
    q.add("a", json!({}), JobOptions::default()).await.unwrap();
    let blocking = tooling::blocking(&connections).unwrap();
    let mut r = raw(&url).await;
    let _: () = r.lpush(keys_of(&q).key("src"), "one").await.unwrap();
    assert_eq!(
        blocking
            .blmove(&keys_of(&q).key("src"), &keys_of(&q).key("dst"), Duration::from_secs(1))
            .await
            .unwrap()
            .as_deref(),
        Some("one")
    );

    let before = clients_of(&mut r, &service).await;
    assert_eq!(before.len(), 3, "{before:?}");
    for (id, _) in &before {
        let _: () = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut r).await.unwrap();
    }
    // The kill is asynchronous for the client. The server closed the three sockets at once; once
    // the subscriber has seen its EOF and come back (connect, HELLO, SETNAME, SUBSCRIBE), the
    // command and blocking drivers have seen theirs. Nothing else tells when a driver saw an EOF.
    let mut reconnected = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reconnected && Instant::now() < deadline {
        if let Ok(Ok(SubscriberEvent::Reconnected)) =
            tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            reconnected = true;
        }
    }
    assert!(reconnected, "the subscriber did not come back");

    q.add("b", json!({}), JobOptions::default()).await.expect("the next command reconnects and succeeds");
    let _: () = r.lpush(keys_of(&q).key("src"), "two").await.unwrap();
    assert_eq!(
        blocking
            .blmove(&keys_of(&q).key("src"), &keys_of(&q).key("dst"), Duration::from_secs(1))
            .await
            .unwrap()
            .as_deref(),
        Some("two"),
        "the next blocking call reconnects and succeeds"
    );
    // The subscriber came back by itself, resubscribed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = false;
    while Instant::now() < deadline && !received {
        let _: () = r.publish(&channel, "ping").await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Ok(SubscriberEvent::Reconnected)) => reconnected = true,
            Ok(Ok(SubscriberEvent::Message(m))) if m.channel == channel && reconnected => received = true,
            _ => {}
        }
    }
    assert!(reconnected && received, "reconnected={reconnected} received={received}");
    let after = clients_of(&mut r, &service).await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.iter().all(|a| !before.contains(a)), "new connections replace the killed ones");
    let stats = connections.stats();
    assert_eq!((stats.command.reconnects, stats.subscriber.reconnects, stats.blocking.reconnects), (1, 1, 1));
}

#[tokio::test]
async fn blocking_calls_outlive_the_drivers_default_response_timeout() {
    let url = test_support::redis_url();
    let connections =
        Connections::builder(config(&url, 2), &test_support::unique("block")).blocking(1).build().unwrap();
    let q = Queue::new(&connections, "q").unwrap();
    let (src, dst) = (keys_of(&q).key("src"), keys_of(&q).key("dst"));
    let pusher = {
        let (url, src) = (url.clone(), src.clone());
        tokio::spawn(async move {
            // Later than redis-rs's default response timeout (500 ms): that is what is tested.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut r = raw(&url).await;
            let _: () = r.lpush(&src, "late").await.unwrap();
        })
    };
    let got = tooling::blocking(&connections).unwrap().blmove(&src, &dst, Duration::from_secs(5)).await.unwrap();
    pusher.await.unwrap();
    assert_eq!(got.as_deref(), Some("late"));
    // And an empty pop returns None at its block time instead of an error.
    assert_eq!(
        tooling::blocking(&connections).unwrap().blmove(&src, &dst, Duration::from_millis(100)).await.unwrap(),
        None
    );
}

async fn timed_add(q: &Queue) -> (Duration, queue_core::Result<String>) {
    let started = Instant::now();
    let result = q.add("a", json!({}), JobOptions::default()).await;
    (started.elapsed(), result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_makes_add_time_out_then_recover_by_itself() {
    let server = RedisServer::start();
    let mut cfg = config(&server.url(), 1);
    let timeout = Duration::from_millis(500);
    cfg.command_timeout = timeout;
    let connections = Connections::builder(cfg, "frozen").build().unwrap();
    let q = Queue::new(&connections, "q").unwrap();
    q.add("a", json!({}), JobOptions::default()).await.unwrap();

    // CLIENT PAUSE answers once the pause is in effect; DEBUG SLEEP answers when it is over.
    for (freeze, answers_at_once) in [(["DEBUG", "SLEEP", "2"], false), (["CLIENT", "PAUSE", "2000"], true)] {
        let port = server.port();
        let mut freezer = Some(std::thread::spawn(move || test_support::resp_command(port, &freeze)));
        if answers_at_once {
            freezer.take().unwrap().join().unwrap();
        }
        // Until the server has read DEBUG SLEEP it answers, and an add then says nothing about a
        // frozen server: add until one meets the freeze.
        let (elapsed, err) = loop {
            let (elapsed, result) = timed_add(&q).await;
            match result {
                Err(err) => break (elapsed, err),
                Ok(_) => assert!(
                    freezer.as_ref().is_some_and(|f| !f.is_finished()),
                    "{freeze:?}: add must fail while Redis is frozen"
                ),
            }
        };
        assert!(err.is_timeout(), "{freeze:?}: {err}");
        assert!(elapsed < timeout.mul_f64(1.2), "{freeze:?}: failed after {elapsed:?}, limit {timeout:?} + 20%");
        if let Some(freezer) = freezer {
            freezer.join().unwrap();
        }
        // CLIENT PAUSE returns at once; wait until the pause is over.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, result) = timed_add(&q).await;
            match result {
                Ok(_) => break,
                Err(e) if e.is_timeout() && Instant::now() < deadline => continue,
                Err(e) => panic!("{freeze:?}: add did not recover: {e}"),
            }
        }
    }
    assert!(connections.stats().command.timeouts >= 2);
}

#[tokio::test]
async fn acl_users_work_and_passwords_stay_out_of_errors_and_debug() {
    let server = RedisServer::start();
    assert_eq!(server.command(&["ACL", "SETUSER", "app", "on", ">s3cret-pw", "~*", "&*", "+@all"]), "+OK\r\n");
    let url = format!("redis://app:s3cret-pw@127.0.0.1:{}", server.port());
    let connections = Connections::builder(config(&url, 1), "acl").build().unwrap();
    assert!(!format!("{connections:?}").contains("s3cret-pw"));
    Queue::new(&connections, "q").unwrap().add("a", json!({}), JobOptions::default()).await.unwrap();

    let wrong = format!("redis://app:wrong-pw@127.0.0.1:{}", server.port());
    let bad = Connections::builder(config(&wrong, 1), "acl").build().unwrap();
    let err = Queue::new(&bad, "q").unwrap().add("a", json!({}), JobOptions::default()).await.unwrap_err();
    assert!(!err.to_string().contains("wrong-pw") && !format!("{err:?}").contains("wrong-pw"), "{err:?}");
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_as_a_connection_error() {
    // Port 1 refuses connections on loopback.
    let connections = Connections::builder(config("redis://127.0.0.1:1", 1), "down").build().unwrap();
    let err = Queue::new(&connections, "q").unwrap().add("a", json!({}), JobOptions::default()).await.unwrap_err();
    assert!(err.is_connection_error() || err.is_timeout(), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(connections.stats().open, 0, "a failed connect holds no permit");
}

#[tokio::test]
async fn rediss_urls_speak_tls() {
    let dir = tempfile_dir();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl").args(args).current_dir(&dir).output().unwrap();
        assert!(status.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&status.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (cert, key) = (format!("{dir}/cert.pem"), format!("{dir}/key.pem"));
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &cert,
        "--tls-auth-clients",
        "no",
    ]);
    // A self-signed certificate: verification is skipped with redis-rs's `#insecure` marker.
    let url = format!("rediss://127.0.0.1:{tls_port}/#insecure");
    let connections = Connections::builder(config(&url, 1), "tls").build().unwrap();
    let q = Queue::new(&connections, "q").unwrap();
    q.add("a", json!({}), JobOptions::default()).await.unwrap();
    // The job is really there, read over the plain port.
    let mut r = raw(&server.url()).await;
    let waiting: u64 = r.llen(keys_of(&q).wait()).await.unwrap();
    assert_eq!(waiting, 1);
    // And the plain port refuses to serve a TLS client's bytes: TLS was really spoken.
    let mut plain_cfg = config(&format!("rediss://127.0.0.1:{}/#insecure", server.port()), 1);
    plain_cfg.connect_timeout = Duration::from_millis(500);
    let plain = Connections::builder(plain_cfg, "tls").build().unwrap();
    assert!(Queue::new(&plain, "q").unwrap().add("a", json!({}), JobOptions::default()).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(test_support::unique("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_server_without_hello_never_sees_the_password_echoed_in_errors() {
    let server = RedisServer::start_with(&["--rename-command", "HELLO", ""]);
    assert_eq!(server.command(&["CONFIG", "SET", "requirepass", "s3cret-pw"]), "+OK\r\n");
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", server.port());
    let connections = Connections::builder(config(&url, 1), "nohello").build().unwrap();
    let err = Queue::new(&connections, "q").unwrap().add("a", json!({}), JobOptions::default()).await.unwrap_err();
    assert!(!err.to_string().contains("s3cret-pw") && !format!("{err:?}").contains("s3cret-pw"), "{err:?}");
    assert!(err.to_string().contains("***"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_maxclients_is_named_in_the_error_and_the_connection_comes_back_when_raised() {
    let server = RedisServer::start();
    // An admin seat taken first: only new clients are refused.
    let mut admin = test_support::RespConnection::open(server.port());
    admin.command(&["CONFIG", "SET", "maxclients", "1"]);
    let connections = Connections::builder(config(&server.url(), 1), "full").heartbeat(None).build().unwrap();
    let q = Queue::new(&connections, "q").unwrap();
    let err = q.add("a", json!({}), JobOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("max number of clients reached") && err.to_string().contains("maxclients"),
        "{err}"
    );
    assert!(err.is_connection_error() && err.is_retryable(), "a refusal is retried like a dropped connection");

    admin.command(&["CONFIG", "SET", "maxclients", "100"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match q.add("b", json!({}), JobOptions::default()).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no recovery after maxclients was raised: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connections.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_still_loading_its_dataset_is_retried_not_fatal() {
    let mut server = RedisServer::start();
    // 20,000 keys in the AOF, so that loading them again takes a while.
    let filled = server.command(&["EVAL", "for i = 1, 20000 do redis.call('SET', 'k' .. i, 'v') end", "0"]);
    assert_eq!(filled, "$-1\r\n");
    tokio::task::block_in_place(|| server.restart_loading_slowly(Duration::from_micros(200)));
    let connections = Connections::builder(config(&server.url(), 1), "loading").heartbeat(None).build().unwrap();
    let err = connections.ping().await.expect_err("the server is still loading (4 s at 200 µs a key)");
    assert!(err.to_string().contains("loading the dataset"), "{err}");
    assert!(err.is_server_busy() && err.is_retryable(), "waiting is what a loading server asks for: {err:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = connections.ping().await {
        assert!(e.is_retryable(), "{e:?}");
        assert!(Instant::now() < deadline, "still loading after 30 s: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connections.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_busy_with_a_long_script_is_retried_not_fatal() {
    let server = RedisServer::start();
    assert_eq!(server.command(&["CONFIG", "SET", "busy-reply-threshold", "100"]), "+OK\r\n");
    let connections = Connections::builder(config(&server.url(), 1), "busy").heartbeat(None).build().unwrap();
    connections.ping().await.unwrap();
    let port = server.port();
    // A script that never ends on its own, until SCRIPT KILL.
    let script = std::thread::spawn(move || test_support::resp_command(port, &["EVAL", "while true do end", "0"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match connections.ping().await {
            Err(e) => break e,
            Ok(()) => assert!(Instant::now() < deadline, "the script never made the server busy"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(err.is_server_busy() && err.is_retryable(), "a busy server asks to wait: {err:?}");
    assert_eq!(server.command(&["SCRIPT", "KILL"]), "+OK\r\n");
    assert!(script.join().unwrap().starts_with("-"), "the script was killed");
    connections.ping().await.expect("the server serves again");
    connections.close().await;
}
