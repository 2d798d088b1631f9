//! `deploy/redis/users.acl` is real: a `redis-server` loads it, the stack runs with each service
//! logged in as its own user (uploads to `done`, a callback, the canary, the ops facts), Redis
//! refuses none of their commands (`ACL LOG` stays empty), and every service user is refused
//! the dangerous commands.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::receiver::Receiver;
use e2e::{Stack, StackOptions, free_addr};
use reqwest::StatusCode;
use serde_json::Value;
use test_support::Media;

const LIMIT: Duration = Duration::from_secs(60);
/// The development passwords whose hashes `users.acl` holds (see `deploy/.env.example`).
const USERS: &[(&str, &str)] = &[
    ("api-svc", "api-svc-dev-password"),
    ("worker-svc", "worker-svc-dev-password"),
    ("health-svc", "health-svc-dev-password"),
    ("queuectl", "queuectl-dev-password"),
];

fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).unwrap().1
}

/// A `redis-server` with the ACL file, killed on drop.
struct AclRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for AclRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one RESP reply as text (arrays flattened, one element per line).
fn reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let (kind, rest) = line.trim_end().split_at(1);
    match kind {
        "+" | "-" | ":" => line.trim_end().to_owned(),
        "$" => {
            let len: i64 = rest.parse().unwrap();
            if len < 0 {
                return "$-1".to_owned();
            }
            let mut body = vec![0; len as usize + 2];
            reader.read_exact(&mut body).unwrap();
            String::from_utf8_lossy(&body[..len as usize]).into_owned()
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            (0..n.max(0)).map(|_| reply(reader)).collect::<Vec<_>>().join("\n")
        }
        other => panic!("unexpected RESP reply {other}{rest}"),
    }
}

/// Runs `args` on the server logged in as `user`; the reply as text.
fn as_user(port: u16, user: &str, args: &[&str]) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let encode = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        out
    };
    writer.write_all(encode(&["AUTH", user, password(user)]).as_bytes()).unwrap();
    assert_eq!(reply(&mut reader), "+OK", "AUTH {user}");
    writer.write_all(encode(args).as_bytes()).unwrap();
    reply(&mut reader)
}

fn start_redis() -> AclRedis {
    let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/redis/users.acl").canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        // So that ACL, not this setting, is what refuses DEBUG.
        .args(["--enable-debug-command", "yes"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--aclfile")
        .arg(&acl)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let redis = AclRedis { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server with users.acl does not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    redis
}

fn url(user: &str, port: u16) -> String {
    format!("redis://{user}:{}@127.0.0.1:{port}", password(user))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_runs_as_its_own_redis_user_and_nothing_is_refused() {
    let redis = start_redis();
    let port = redis.port;
    assert!(as_user(port, "queuectl", &["PING"]).contains("PONG"));
    let receiver = Receiver::start(vec![]);
    let allowed = receiver.addr.to_string();
    let stack = Stack::start(StackOptions {
        redis_url: Some(url("queuectl", port)),
        // The prefix users.acl grants.
        prefix: Some("bull".to_owned()),
        api_vars: vec![("REDIS_URL", url("api-svc", port)), ("CALLBACK_ALLOWED_HOSTS", allowed.clone())],
        worker_vars: vec![("REDIS_URL", url("worker-svc", port)), ("CALLBACK_ALLOWED_HOSTS", allowed)],
        health: true,
        health_vars: vec![
            ("REDIS_URL", url("health-svc", port)),
            ("HEALTH_CANARY_INTERVAL_MS", "300".to_owned()),
            ("HEALTH_CANARY_MAX_AGE_MS", "5000".to_owned()),
        ],
        database_url: None,
    })
    .await;

    let note = stack.upload("note.txt", "text/plain", b"as my own user\n".to_vec(), Some(&receiver.url("/hook"))).await;
    assert_eq!(note.status(), StatusCode::ACCEPTED);
    let note: uuid::Uuid = note.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let image = stack.accepted("image.png", "image/png", Media::new().png()).await;
    for id in [note, image] {
        assert_eq!(stack.finished(id, LIMIT).await["status"], "done");
    }
    e2e::eventually(LIMIT, "the callback to be delivered", async || {
        (stack.file(note).await["callback"]["state"] == "delivered").then_some(())
    })
    .await;
    let deep = e2e::eventually(LIMIT, "deep readiness", async || {
        let answer = stack.client.get(format!("{}/readyz?deep=1", stack.health_base)).send().await.ok()?;
        (answer.status() == StatusCode::OK).then_some(())
    });
    deep.await;
    let ops: Value =
        stack.client.get(format!("{}/ops/queue", stack.health_base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ops["connections"]["services"].as_array().unwrap().len(), 3, "CLIENT LIST as health-svc: {ops}");
    assert!(ops["redis"]["maxclients"].as_u64().is_some(), "INFO as health-svc: {ops}");

    let log = as_user(port, "queuectl", &["ACL", "LOG"]);
    assert!(log.is_empty(), "Redis refused something of the stack:\n{log}");

    for user in ["api-svc", "worker-svc", "health-svc"] {
        for command in [
            &["FLUSHALL"][..],
            &["FLUSHDB"],
            &["CONFIG", "GET", "maxclients"],
            &["KEYS", "*"],
            &["DEBUG", "SLEEP", "0"],
            &["SCRIPT", "FLUSH"],
        ] {
            let answer = as_user(port, user, command);
            assert!(answer.starts_with("-NOPERM"), "{user} may not run {command:?}, got {answer}");
        }
    }
    receiver.stop().await;
}
