//! The deployment files hold the post-mortem's lessons: the compose file is read and every
//! invariant of `deploy/docker-compose.yml`'s header checked; the Dockerfile passes hadolint;
//! the CI workflow passes action-validator; the ACL file turns the default user off and gives
//! no service user every command. (The ACL file is also run for real: `acl.rs`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `deploy/docker-compose.yml` as JSON (read by PyYAML, which scripts/test installs).
fn compose() -> Value {
    let path = root().join("deploy/docker-compose.yml");
    let out = Command::new("python3")
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "the compose file is YAML: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn env_of<'a>(service: &'a Value, name: &str) -> Option<&'a str> {
    service["environment"][name].as_str()
}

/// The value after `flag` in Redis's command line.
fn redis_arg<'a>(command: &'a [Value], flag: &str) -> Option<&'a str> {
    let at = command.iter().position(|a| a.as_str() == Some(flag))?;
    command.get(at + 1)?.as_str()
}

#[test]
fn the_compose_file_keeps_every_lesson() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    let redis = &services["redis"];
    let command: Vec<Value> = redis["command"].as_array().unwrap().clone();
    assert_eq!(redis_arg(&command, "--appendonly"), Some("yes"), "AOF on");
    assert_eq!(redis_arg(&command, "--save"), Some(""), "RDB snapshots off");
    assert!(matches!(redis_arg(&command, "--appendfsync"), Some("everysec" | "always")));
    assert_eq!(redis_arg(&command, "--maxmemory-policy"), Some("noeviction"));
    assert!(redis_arg(&command, "--maxmemory").is_some_and(|m| !m.is_empty() && m != "0"), "a maxmemory");
    assert_eq!(redis_arg(&command, "--aclfile"), Some("/etc/redis/users.acl"));
    let maxclients: usize = redis_arg(&command, "--maxclients").expect("maxclients set").parse().unwrap();
    assert!(redis.get("ports").is_none(), "Redis is not published");
    assert!(services["postgres"].get("ports").is_none(), "Postgres is not published");
    assert!(services["postgres"]["volumes"].as_array().is_some_and(|v| !v.is_empty()), "Postgres keeps a volume");
    for name in ["redis", "postgres", "api", "worker", "health"] {
        assert!(services[name]["healthcheck"]["test"].is_array(), "{name} has a healthcheck");
    }

    let mut budgets = 0;
    let mut hosts = BTreeSet::new();
    for name in ["api", "worker", "health"] {
        let s = &services[name];
        for dependency in ["redis", "postgres"] {
            assert_eq!(s["depends_on"][dependency]["condition"], "service_healthy", "{name} waits for {dependency}");
        }
        assert!(s["restart"].is_string(), "{name} has a restart policy");
        let budget: usize = env_of(s, "REDIS_MAX_CONNECTIONS").expect("a budget").parse().unwrap();
        budgets += budget;
        let url = env_of(s, "REDIS_URL").expect("REDIS_URL");
        let user = url.strip_prefix("redis://").and_then(|u| u.split(':').next()).unwrap();
        assert_eq!(user, format!("{name}-svc"), "{name} connects as its own Redis user");
        hosts.insert(url.rsplit('@').next().unwrap().to_owned());
        if name != "api" {
            for port in s["ports"].as_array().into_iter().flatten() {
                assert!(port.as_str().unwrap().starts_with("127.0.0.1:"), "{name} is published on loopback only");
            }
        }
    }
    assert_eq!(hosts, BTreeSet::from(["redis:6379".to_owned()]), "one Redis URL host for every service");
    assert!(budgets < maxclients / 2, "budgets {budgets} leave room under maxclients {maxclients}");
    assert!(services["api"]["ports"].as_array().is_some_and(|p| !p.is_empty()), "the API is published");

    let worker = &services["worker"];
    let limits = &worker["deploy"]["resources"]["limits"];
    assert!(limits["cpus"].is_string() && limits["memory"].is_string(), "the worker is limited: {limits}");
    let drain_ms: u64 = env_of(worker, "WORKER_DRAIN_DEADLINE_MS").unwrap().parse().unwrap();
    let grace_s: u64 = worker["stop_grace_period"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(grace_s * 1000 > drain_ms, "grace {grace_s} s longer than the drain deadline {drain_ms} ms");
}

#[test]
fn the_acl_file_turns_the_default_user_off_and_gives_no_service_everything() {
    let acl = std::fs::read_to_string(root().join("deploy/redis/users.acl")).unwrap();
    assert!(acl.lines().any(|l| l.trim() == "user default off"), "{acl}");
    for line in acl.lines() {
        let user = line.split_whitespace().nth(1).unwrap();
        if user.ends_with("-svc") {
            assert!(line.contains("-@dangerous") && line.contains("-script|flush"), "{line}");
            assert!(!line.contains("~*") && !line.contains("+@all"), "{user} is limited: {line}");
        }
    }
}

/// Runs a linter the test command installs; its output when it fails.
fn lint(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/test installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_compose_validates_the_compose_file_where_it_installs() {
    let installed = Command::new("sh").args(["-c", "command -v docker-compose"]).output().unwrap().status.success();
    if !installed {
        eprintln!("SKIPPED: docker-compose is not installed here (scripts/test installs Debian's)");
        return;
    }
    lint("docker-compose", &["-f", "deploy/docker-compose.yml", "--env-file", "deploy/.env.example", "config", "-q"]);
}

#[test]
fn the_dockerfile_passes_hadolint() {
    lint("hadolint", &["docker/Dockerfile"]);
}

#[test]
fn the_ci_workflow_passes_action_validator() {
    lint("tools/lint/node_modules/.bin/action-validator", &[".github/workflows/ci.yml"]);
}
