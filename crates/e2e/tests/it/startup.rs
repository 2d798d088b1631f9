//! Start-up of the binaries: each starts with only the variables it cannot guess; a bad or
//! misspelt variable stops it, naming the variable; the endpoints it uses are logged with their
//! passwords hidden.

use std::time::Duration;

use e2e::{Service, eventually, free_addr};
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use test_support::RedisServer;

const LIMIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "e2e-s3cret-redis-password";

/// The variables `name` cannot guess (plus `METRICS_ADDR` for worker-svc, so that it cannot
/// collide with another instance on this machine).
fn essentials(name: &str, redis_url: &str, database_url: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("REDIS_URL", redis_url.to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
        ("STORAGE_DIR", dir.join("storage").to_str().unwrap().to_owned()),
    ];
    if name == "api-svc" {
        env.extend([("LISTEN_ADDR", free_addr().to_string()), ("API_TOKENS", "e2e-token-0123456789abcdef".to_owned())]);
    } else {
        env.extend([("METRICS_ADDR", free_addr().to_string())]);
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    &env.iter().find(|(k, _)| k == name).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_starts_with_only_what_it_cannot_guess_and_hides_passwords() {
    let redis = RedisServer::start();
    assert_eq!(redis.command(&["CONFIG", "SET", "requirepass", PASSWORD]), "+OK\r\n");
    let redis_url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port());
    let database_url = test_support::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    for (name, health) in [("api-svc", "/readyz"), ("worker-svc", "/livez")] {
        let env = essentials(name, &redis_url, &database_url, dir.path());
        let addr = if name == "api-svc" { value(&env, "LISTEN_ADDR") } else { value(&env, "METRICS_ADDR") };
        let url = format!("http://{addr}{health}");
        let mut service = Service::start(name, &env, dir.path());
        eventually(LIMIT, &url, async || {
            let answer = client.get(&url).send().await.ok()?;
            (answer.status() == StatusCode::OK).then_some(())
        })
        .await;
        // The container's HEALTHCHECK: the binary asks its running self.
        let var = if name == "api-svc" { "LISTEN_ADDR" } else { "METRICS_ADDR" };
        let healthcheck = || {
            std::process::Command::new(e2e::binary(name))
                .arg("--healthcheck")
                .env_clear()
                .env(var, addr)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(healthcheck(), "{name} --healthcheck passes while it serves");
        service.signal(Signal::SIGTERM);
        let status = service.exited(LIMIT).await.expect("it stops on SIGTERM");
        assert!(!healthcheck(), "{name} --healthcheck fails once it is gone");
        assert!(status.success(), "{name} exits 0 on SIGTERM: {status:?}\n{}", service.log());
        let log = service.log();
        assert!(!log.contains(PASSWORD), "{name} printed the Redis password:\n{log}");
        assert!(log.contains(&format!("127.0.0.1:{}", redis.port())), "{name} logs its Redis endpoint:\n{log}");
        assert!(log.contains("***"), "{name} logs its endpoints with the password hidden:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_missing_or_misspelt_variable_stops_start_up_naming_it() {
    let database_url = test_support::database_url();
    let dir = tempfile::tempdir().unwrap();
    for name in ["api-svc", "worker-svc"] {
        let cases: [(&str, Option<&str>); 4] = [
            ("REDIS_COMMAND_TIMEOUT_MS", Some("soon")),
            ("REDIS_URI", Some("redis://127.0.0.1:6379")),
            ("STORAGE_DIR", None),
            ("DATABASE_URL", None),
        ];
        for (variable, setting) in cases {
            let mut env = essentials(name, &test_support::redis_url(), &database_url, dir.path());
            env.retain(|(k, _)| k != variable);
            if let Some(setting) = setting {
                env.push((variable.to_owned(), setting.to_owned()));
            }
            let logs = tempfile::tempdir().unwrap();
            let mut service = Service::start(name, &env, logs.path());
            let status =
                service.exited(LIMIT).await.unwrap_or_else(|| panic!("{name} with {variable} {setting:?} runs"));
            let log = service.log();
            assert!(!status.success(), "{name} refuses {variable} {setting:?}");
            assert!(log.contains(variable), "{name} names {variable}:\n{log}");
        }
    }
}
