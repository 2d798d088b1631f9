//! Secrets never reach the logs: the three services run on a Redis with a password, with a
//! distinctive API token and webhook secret, through uploads, a refused token, a refused
//! callback URL, a retried callback, a failed file, forced Redis reconnections and every
//! probe, at `debug` level; then everything they printed is read, and none of the secret values
//! may be in it (nor in what the probes answered). A wrong Redis password is not printed either.

use std::io::{Read, Write};
use std::time::Duration;

use e2e::receiver::{Answer, Receiver, verify};
use e2e::{Service, Stack, StackOptions, eventually};
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::Value;
use test_support::{Media, RedisServer};

const LIMIT: Duration = Duration::from_secs(90);
const REDIS_PASSWORD: &str = "redis-pw-Vq7Kx2Lm9Zt4Hd6";
/// The token this test's requests use, beside the stack's own `e2e::TOKEN`.
const API_TOKEN: &str = "api-token-Hs8Wd3Nf6Rb1Yc5J";
/// A token api-svc does not know (a caller's typo of a real one is as secret as the real one).
const WRONG_TOKEN: &str = "api-token-Hs8Wd3Nf6Rb1Yc5X";
/// The webhook key, in clear: `WEBHOOK_KEY_BASE64` decoded.
const WEBHOOK_KEY: &str = "whkey-Pg4Tm7Qz2Xv9Ln5Rb8";
const WEBHOOK_KEY_BASE64: &str = "d2hrZXktUGc0VG03UXoyWHY5TG41UmI4";

fn webhook_secret() -> String {
    format!("whsec_{WEBHOOK_KEY_BASE64}")
}

/// Every value that must not be printed, with what it is.
fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("the Redis password", REDIS_PASSWORD.to_owned()),
        ("the API token", API_TOKEN.to_owned()),
        ("the refused token", WRONG_TOKEN.to_owned()),
        ("the webhook secret", webhook_secret()),
        ("the webhook secret's base64", WEBHOOK_KEY_BASE64.to_owned()),
        ("the webhook key", WEBHOOK_KEY.to_owned()),
    ]
}

/// Panics naming every secret found in `text` (what `source` printed or answered).
fn assert_no_secret(source: &str, text: &str) {
    for (what, value) in secrets() {
        if let Some(at) = text.find(&value) {
            let from = text[..at].rfind('\n').map_or(0, |n| n + 1);
            let to = text[at..].find('\n').map_or(text.len(), |n| at + n);
            panic!("{source} contains {what}:\n{}", &text[from..to]);
        }
    }
}

/// `value` percent-encoded for a query, all but RFC 3986's unreserved bytes.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Authenticates on a raw connection and closes every other client's connection, so each
/// service reconnects (and authenticates again) while it runs.
fn kill_redis_clients(port: u16) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let commands = format!("AUTH {REDIS_PASSWORD}\r\nCLIENT KILL TYPE normal SKIPME yes\r\nQUIT\r\n");
    stream.write_all(commands.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("+OK\r\n:"), "AUTH then CLIENT KILL: {reply:?}");
}

/// SIGTERM, then everything `service` printed once it has exited.
async fn stop(service: &mut Service) -> String {
    service.signal(Signal::SIGTERM);
    let status = service.exited(LIMIT).await.unwrap_or_else(|| panic!("{} stops on SIGTERM", service.name()));
    assert!(status.success(), "{} exits 0 on SIGTERM: {status:?}", service.name());
    service.log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_ever_printed_or_answered() {
    let redis = RedisServer::start();
    assert_eq!(redis.command(&["CONFIG", "SET", "requirepass", REDIS_PASSWORD]), "+OK\r\n");
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port());
    let receiver = Receiver::start(vec![Answer::status(500)]);
    let common = vec![("WEBHOOK_SECRET", webhook_secret()), ("RUST_LOG", "debug".to_owned())];
    let mut api_vars = common.clone();
    api_vars.extend([
        ("API_TOKENS", format!("{},{API_TOKEN}", e2e::TOKEN)),
        ("CALLBACK_ALLOWED_HOSTS", receiver.addr.to_string()),
    ]);
    let mut worker_vars = common.clone();
    worker_vars.push(("CALLBACK_ALLOWED_HOSTS", receiver.addr.to_string()));
    let mut stack = Stack::start(StackOptions {
        redis_url: Some(redis_url),
        api_vars,
        worker_vars,
        health: true,
        health_vars: common,
        ..StackOptions::default()
    })
    .await;
    let mut answered = String::new();
    let upload = |name: &str, token: &str, body: Vec<u8>, content_type: &str, callback: Option<String>| {
        let query = callback.map(|url| format!("?callback_url={}", encode(&url))).unwrap_or_default();
        stack
            .client
            .post(format!("{}/v1/files{query}", stack.api_base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .header("x-filename", name)
            .body(body)
            .send()
    };

    // A refused token: 401, and the answer does not repeat it.
    let refused = upload("no.txt", WRONG_TOKEN, b"no\n".to_vec(), "text/plain", None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    answered.push_str(&refused.text().await.unwrap());

    // An upload refused for its callback URL: 400.
    let bad = Some("https://127.0.0.1/hook".to_owned());
    let refused = upload("bad.txt", API_TOKEN, b"bad\n".to_vec(), "text/plain", bad).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    answered.push_str(&refused.text().await.unwrap());

    // A file with a callback refused once (500) then accepted, signed with the secret.
    let callback = receiver.url("/hooks?from=secrets");
    let answer = upload("note.txt", API_TOKEN, b"call me back\n".to_vec(), "text/plain", Some(callback)).await.unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let body: Value = answer.json().await.unwrap();
    let noted: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();

    // Redis drops every connection: each service reconnects with the password.
    kill_redis_clients(redis.port());
    for service in [&stack.api, &stack.worker, stack.health.as_ref().unwrap()] {
        eventually(LIMIT, &format!("{} to reconnect to Redis", service.name()), async || {
            service.log().contains("redis command connection re-established").then_some(())
        })
        .await;
    }

    // A file that fails: half a video.
    let media = Media::new();
    let clip = media.video("clip.mp4", 1, "64x48");
    let answer = upload("broken.mp4", API_TOKEN, clip[..clip.len() / 2].to_vec(), "video/mp4", None).await.unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let body: Value = answer.json().await.unwrap();
    let broken: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();

    let file = stack.finished(broken, LIMIT).await;
    assert_eq!(file["status"], "failed", "{file}");
    let file = eventually(LIMIT, "the callback to be delivered", async || {
        let file = stack.file(noted).await;
        (file["callback"]["state"] == "delivered").then_some(file)
    })
    .await;
    assert_eq!(file["status"], "done", "{file}");
    answered.push_str(&file.to_string());
    let received = receiver.received();
    assert_eq!(received.len(), 2, "one refused POST, one accepted");
    verify(&webhook_secret(), &received[1]).expect("signed with this test's secret");
    for request in &received {
        answered.push_str(&format!("{:?}", request.headers));
        answered.push_str(&String::from_utf8_lossy(&request.body));
    }

    // Every probe of every service.
    let probes = [
        format!("{}/readyz", stack.api_base),
        format!("{}/metrics", stack.api_base),
        format!("{}/livez", stack.metrics_base),
        format!("{}/metrics", stack.metrics_base),
        format!("{}/readyz", stack.health_base),
        format!("{}/readyz?deep=1", stack.health_base),
        format!("{}/ops", stack.health_base),
        format!("{}/ops/queue", stack.health_base),
        format!("{}/metrics", stack.health_base),
    ];
    for url in probes {
        let answer = stack.client.get(&url).send().await.unwrap();
        assert!(answer.status().is_success() || url.contains("deep"), "GET {url}: {}", answer.status());
        answered.push_str(&answer.text().await.unwrap());
    }
    assert_no_secret("what the services answered", &answered);

    let health = stack.health.as_mut().unwrap();
    let health_log = stop(health).await;
    let worker_log = stop(&mut stack.worker).await;
    let api_log = stop(&mut stack.api).await;
    receiver.stop().await;
    for (name, log) in [("api-svc", &api_log), ("worker-svc", &worker_log), ("health-svc", &health_log)] {
        assert_no_secret(&format!("{name}'s log"), log);
        // The logs are not empty: each names its Redis endpoint, password hidden.
        let endpoint = format!(":***@127.0.0.1:{}", redis.port());
        assert!(log.contains(&endpoint), "{name} logs its Redis endpoint as {endpoint}:\n{log}");
    }

    // And they show what happened.
    let evidence = [format!("file_id={noted}"), format!("file_id={broken}"), "status=401".into(), "status=400".into()];
    for evidence in evidence {
        assert!(api_log.contains(&evidence), "api-svc's log shows {evidence}:\n{api_log}");
    }
    for evidence in [noted.to_string(), broken.to_string(), "500 Internal Server Error".to_owned()] {
        assert!(worker_log.contains(&evidence), "worker-svc's log shows {evidence}:\n{worker_log}");
    }
    assert!(health_log.contains("health-svc stopped"), "{health_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_is_not_printed_either() {
    const WRONG_PASSWORD: &str = "redis-pw-Wrong3Ux8Ge1Ka";
    let redis = RedisServer::start();
    assert_eq!(redis.command(&["CONFIG", "SET", "requirepass", REDIS_PASSWORD]), "+OK\r\n");
    let stack = Stack::start(StackOptions {
        redis_url: Some(format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port())),
        ..StackOptions::default()
    })
    .await;
    let mut env = stack.worker_env();
    for (name, value) in &mut env {
        match name.as_str() {
            "REDIS_URL" => *value = format!("redis://:{WRONG_PASSWORD}@127.0.0.1:{}", redis.port()),
            "METRICS_ADDR" => *value = e2e::free_addr().to_string(),
            _ => {}
        }
    }
    env.push(("RUST_LOG".to_owned(), "debug".to_owned()));
    let logs = tempfile::tempdir().unwrap();
    let mut worker = Service::start("worker-svc", &env, logs.path());
    eventually(LIMIT, "worker-svc to report the refused password", async || {
        worker.log().contains("WRONGPASS").then_some(())
    })
    .await;
    if worker.running() {
        worker.signal(Signal::SIGTERM);
        worker.exited(LIMIT).await.expect("it stops on SIGTERM");
    }
    let log = worker.log();
    assert!(!log.contains(WRONG_PASSWORD), "worker-svc printed the password it was given:\n{log}");
    assert!(log.contains(&format!(":***@127.0.0.1:{}", redis.port())), "{log}");
}
