//! TLS to Redis across the stack: a private `redis-server` with a TLS port and a certificate
//! from a CA made in the test, the three services on `rediss://` trusting that CA
//! (`REDIS_TLS_CA_FILE`). Every connection they hold is on the TLS port, uploads are processed,
//! and a service that does not trust the server's CA says so, naming the variable.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{Service, Stack, StackOptions, free_addr};
use reqwest::StatusCode;
use test_support::RedisServer;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A server certificate for 127.0.0.1 and localhost signed by CA `ca`: `server.pem`, `server.key`.
fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_talks_to_redis_over_tls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    for ca in ["test-ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
            ],
        );
    }
    make_server_cert(dir, "test-ca");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let tls_port = free_addr().port();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path("server.pem"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("test-ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    let ca = || vec![("REDIS_TLS_CA_FILE", path("test-ca.pem"))];
    let stack = Stack::start(StackOptions {
        redis_url: Some(format!("rediss://127.0.0.1:{tls_port}")),
        api_vars: ca(),
        worker_vars: ca(),
        health: true,
        health_vars: ca(),
        ..StackOptions::default()
    })
    .await;

    let id = stack.accepted("secure.txt", "text/plain", b"over TLS\n".to_vec()).await;
    assert_eq!(stack.finished(id, LIMIT).await["status"], "done");
    let ready = stack.client.get(format!("{}/readyz?deep=1", stack.health_base)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "{}", ready.text().await.unwrap());

    // Every connection of the three services is on the TLS port; none on the plain one.
    let clients = redis.command(&["CLIENT", "LIST"]);
    let ours: Vec<&str> = clients.lines().filter(|l| l.contains("-svc:")).collect();
    for service in ["api-svc", "worker-svc", "health-svc"] {
        assert!(ours.iter().any(|l| l.contains(&format!("name={service}:"))), "{service} is connected: {clients}");
    }
    for line in &ours {
        assert!(line.contains(&format!("laddr=127.0.0.1:{tls_port}")), "over TLS: {line}");
    }

    // A service that trusts another CA refuses the server and says why.
    let mut env = stack.worker_env();
    env.retain(|(k, _)| k != "REDIS_TLS_CA_FILE" && k != "METRICS_ADDR");
    let metrics = free_addr();
    env.push(("REDIS_TLS_CA_FILE".to_owned(), path("other-ca.pem")));
    env.push(("METRICS_ADDR".to_owned(), metrics.to_string()));
    let logs = tempfile::tempdir().unwrap();
    let mut api_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("WORKER_") && !["METRICS_ADDR", "WEBHOOK_TIMEOUT_MS"].contains(&k.as_str()))
        .cloned()
        .collect();
    api_env.push(("LISTEN_ADDR".to_owned(), free_addr().to_string()));
    api_env.push(("API_TOKENS".to_owned(), e2e::TOKEN.to_owned()));
    // Waiting cannot make the certificate trusted: start-up ends, non-zero, with the reason.
    for (name, env) in [("worker-svc", &env), ("api-svc", &api_env)] {
        let mut stranger = Service::start(name, env, logs.path());
        let status = stranger.exited(LIMIT).await.unwrap_or_else(|| panic!("an untrusting {name} exits"));
        assert!(!status.success(), "{name}: {status:?}");
        let log = stranger.log();
        // The last word, not a warning on the way.
        let why = log
            .lines()
            .find(|l| l.contains("not start") && l.contains("not trusted"))
            .unwrap_or_else(|| panic!("{name} says why it stops:\n{log}"));
        assert!(why.contains("REDIS_TLS_CA_FILE") && why.contains("UnknownIssuer"), "{name} names the variable: {why}");
        eprintln!("an untrusting {name} says: {why}");
    }

    // REDIS_TLS_CA_FILE without rediss:// is a configuration error, named.
    let mut plain = stack.worker_env();
    plain.retain(|(k, _)| k != "REDIS_URL" && k != "REDIS_TLS_CA_FILE");
    plain.push(("REDIS_URL".to_owned(), redis.url()));
    plain.push(("REDIS_TLS_CA_FILE".to_owned(), path("test-ca.pem")));
    let mut refused = Service::start("worker-svc", &plain, logs.path());
    let status = refused.exited(Duration::from_secs(20)).await.expect("a bad configuration stops start-up");
    assert!(!status.success());
    assert!(refused.log().contains("REDIS_TLS_CA_FILE"), "{}", refused.log());
}
