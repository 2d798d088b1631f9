//! The deployment files hold the post-mortem's lessons: the compose file is read and every
//! invariant of `deploy/docker-compose.yml`'s header checked; the Dockerfile passes hadolint;
//! the CI workflow passes action-validator; the ACL file turns the default user off and gives
//! no service user every command. (The ACL file is also run for real: `acl.rs`.) The `s3`
//! profile's Garage is private, keeps its data in volumes and its secrets out of the repository,
//! and `deploy/garage/garage.toml` is run by the real `garage` with `deploy/.env.example`'s
//! values.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let config = ["-f", "deploy/docker-compose.yml", "--env-file", "deploy/.env.example"];
    lint("docker-compose", &[&config[..], &["config", "-q"]].concat());
    lint("docker-compose", &[&config[..], &["--profile", "s3", "config", "-q"]].concat());
    // With the s3 block of .env.example uncommented, as an operator would.
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("s3.env");
    let example = std::fs::read_to_string(root().join("deploy/.env.example")).unwrap();
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(assignment) if assignment.split_once('=').is_some_and(|(k, _)| is_variable_name(k)) => assignment,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env_file, uncommented).unwrap();
    let env_file = env_file.to_str().unwrap();
    lint("docker-compose", &["-f", "deploy/docker-compose.yml", "--env-file", env_file, "config", "-q"]);
    lint(
        "docker-compose",
        &["-f", "deploy/docker-compose.yml", "--env-file", env_file, "--profile", "s3", "config", "-q"],
    );
    // What the services then get: the example's S3 variables, the same key in Garage.
    let out = Command::new("sh")
        .args(["-c", "docker-compose -f deploy/docker-compose.yml --env-file \"$1\" --profile s3 config | python3 -c \"import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))\"", "sh", env_file])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    let resolved: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s3 = s3_example();
    for name in ["api", "worker"] {
        for var in S3_VARIABLES {
            assert_eq!(env_of(&resolved["services"][name], var), Some(s3[var].as_str()), "{name} gets {var}");
        }
    }
    let garage = &resolved["services"]["garage"];
    assert_eq!(env_of(garage, "GARAGE_DEFAULT_ACCESS_KEY"), Some(s3["AWS_ACCESS_KEY_ID"].as_str()));
    assert_eq!(env_of(garage, "GARAGE_DEFAULT_SECRET_KEY"), Some(s3["AWS_SECRET_ACCESS_KEY"].as_str()));
    assert_eq!(env_of(garage, "GARAGE_RPC_SECRET"), Some(s3["GARAGE_RPC_SECRET"].as_str()));
}

#[test]
fn the_dockerfile_passes_hadolint() {
    lint("hadolint", &["docker/Dockerfile"]);
}

#[test]
fn the_ci_workflow_passes_action_validator() {
    lint("tools/lint/node_modules/.bin/action-validator", &[".github/workflows/ci.yml"]);
}

fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The variables of deploy/.env.example's commented-out S3 block (`# NAME=value` lines).
fn s3_example() -> BTreeMap<String, String> {
    let example = std::fs::read_to_string(root().join("deploy/.env.example")).unwrap();
    example
        .lines()
        .filter_map(|l| l.strip_prefix("# ")?.split_once('='))
        .filter(|(k, _)| is_variable_name(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `deploy/garage/garage.toml` as JSON (read by Python's tomllib).
fn garage_toml() -> Value {
    let path = root().join("deploy/garage/garage.toml");
    let out = Command::new("python3")
        .args(["-c", "import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))))"])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "garage.toml is TOML: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `${NAME:-}` or `${NAME:-default}`: the name, if `value` is only a reference to a variable.
fn variable_of(value: &str) -> Option<&str> {
    let inner = value.strip_prefix("${")?.strip_suffix('}')?;
    let name = inner.split_once(":-").map_or(inner, |(name, _)| name);
    is_variable_name(name).then_some(name)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit())
}

const S3_VARIABLES: [&str; 5] =
    ["STORAGE_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"];

#[test]
fn the_s3_profile_runs_a_private_garage_with_its_secrets_from_the_environment() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    let garage = &services["garage"];
    assert_eq!(garage["profiles"], serde_json::json!(["s3"]), "Garage runs only in the s3 profile");
    for (name, service) in services {
        if name != "garage" {
            assert!(service.get("profiles").is_none(), "{name} runs in every profile");
            assert!(service["depends_on"].get("garage").is_none(), "{name} does not depend_on the optional Garage");
        }
    }
    assert!(garage.get("ports").is_none(), "Garage is not published");
    let image = garage["image"].as_str().unwrap();
    let version = image.strip_prefix("dxflrs/garage:v").expect("the official image");
    let (major, minor) = {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    assert!((major, minor) >= (2, 3), "--single-node and --default-bucket need Garage 2.3 or later: {image}");
    let command: Vec<&str> = garage["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(command, ["/garage", "server", "--single-node", "--default-bucket"]);
    assert!(garage["healthcheck"]["test"].is_array(), "Garage has a healthcheck");
    assert!(garage["restart"].is_string(), "Garage has a restart policy");

    // The config read-only at Garage's default path; metadata and data in named volumes.
    let toml = garage_toml();
    let volumes: Vec<&str> = garage["volumes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(volumes.contains(&"./garage/garage.toml:/etc/garage.toml:ro"), "{volumes:?}");
    let named = c["volumes"].as_object().unwrap();
    for dir in ["metadata_dir", "data_dir"] {
        let path = toml[dir].as_str().unwrap();
        let mount = volumes
            .iter()
            .find(|v| v.split(':').nth(1) == Some(path))
            .unwrap_or_else(|| panic!("{dir} {path} is mounted"));
        let source = mount.split(':').next().unwrap();
        assert!(named.contains_key(source), "{dir} is in a named volume: {mount}");
    }
    assert_eq!(toml["replication_factor"], 1);
    assert_eq!(toml["db_engine"], "sqlite");
    assert_eq!(toml["s3_api"]["api_bind_addr"], "0.0.0.0:3900");
    assert!(toml["rpc_bind_addr"].as_str().unwrap().ends_with(":3901"));
    let raw = std::fs::read_to_string(root().join("deploy/garage/garage.toml")).unwrap();
    for secret in ["rpc_secret", "admin_token", "metrics_token"] {
        assert!(!raw.lines().any(|l| l.trim_start().starts_with(secret)), "no {secret} in garage.toml");
    }

    // Its RPC secret and S3 key come from the environment, the key being the services' own.
    let env = |name: &str| garage["environment"][name].as_str().unwrap_or_else(|| panic!("garage has {name}"));
    for name in ["GARAGE_RPC_SECRET", "GARAGE_DEFAULT_ACCESS_KEY", "GARAGE_DEFAULT_SECRET_KEY", "GARAGE_DEFAULT_BUCKET"]
    {
        assert!(variable_of(env(name)).is_some(), "{name} is taken from the environment: {}", env(name));
    }
    assert_eq!(variable_of(env("GARAGE_DEFAULT_ACCESS_KEY")), Some("AWS_ACCESS_KEY_ID"));
    assert_eq!(variable_of(env("GARAGE_DEFAULT_SECRET_KEY")), Some("AWS_SECRET_ACCESS_KEY"));
    for secret in ["GARAGE_RPC_SECRET", "GARAGE_DEFAULT_SECRET_KEY"] {
        assert!(env(secret).ends_with(":-}"), "{secret} has no default value: {}", env(secret));
    }

    // api and worker pass the S3 variables through; empty (unset) keeps local files.
    for name in ["api", "worker"] {
        for var in S3_VARIABLES {
            assert_eq!(env_of(&services[name], var), Some(format!("${{{var}:-}}").as_str()), "{name} passes {var}");
        }
        assert_eq!(
            env_of(&services[name], "STORAGE_DIR"),
            Some("/data/storage"),
            "{name} keeps local files by default"
        );
    }

    // .env.example: local files unless its S3 block is uncommented; that block fits Garage.
    let example = std::fs::read_to_string(root().join("deploy/.env.example")).unwrap();
    for var in S3_VARIABLES.iter().chain(&["GARAGE_RPC_SECRET", "COMPOSE_PROFILES"]) {
        assert!(!example.lines().any(|l| l.starts_with(&format!("{var}="))), "{var} is not set by default");
    }
    let s3 = s3_example();
    assert_eq!(s3["COMPOSE_PROFILES"], "s3");
    let key = &s3["AWS_ACCESS_KEY_ID"];
    assert!(key.strip_prefix("GK").is_some_and(|h| is_hex(h, 24)), "Garage's key id format (GK + 24 hex): {key}");
    assert!(is_hex(&s3["AWS_SECRET_ACCESS_KEY"], 64), "Garage's secret key format (64 hex)");
    assert!(is_hex(&s3["GARAGE_RPC_SECRET"], 64), "Garage's RPC secret format (64 hex)");
    let bucket = s3["STORAGE_URL"].strip_prefix("s3://").and_then(|r| r.split('/').next()).unwrap();
    assert_eq!(bucket, s3["GARAGE_BUCKET"], "STORAGE_URL names the bucket Garage creates");
    assert_eq!(variable_of(env("GARAGE_DEFAULT_BUCKET")), Some("GARAGE_BUCKET"));
    assert_eq!(s3["AWS_ENDPOINT_URL"], "http://garage:3900", "the services reach Garage's S3 port by its service name");
    assert_eq!(
        s3["AWS_REGION"],
        toml["s3_api"]["s3_region"].as_str().unwrap(),
        "requests are signed for Garage's region"
    );
}

/// A `garage server` child, killed on drop (a failing assertion leaves no process behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_garage_config_runs_with_the_example_values() {
    let Some(garage) = test_support::garage_binary() else {
        eprintln!("SKIPPED: garage is not installed here (scripts/test runs cargo install garage --locked)");
        return;
    };
    // The committed file, with its directories and ports moved to a temp dir and free ports.
    let dir = tempfile::Builder::new().prefix("deploy-garage-").tempdir().unwrap();
    let toml = garage_toml();
    let mut text = std::fs::read_to_string(root().join("deploy/garage/garage.toml")).unwrap();
    let (s3_addr, rpc_addr) = (e2e::free_addr(), e2e::free_addr());
    let mut replace = |from: String, to: String| {
        assert!(text.contains(&from), "garage.toml has {from}");
        text = text.replace(&from, &to);
    };
    for (key, sub) in [("metadata_dir", "meta"), ("data_dir", "data")] {
        let path = toml[key].as_str().unwrap();
        replace(format!("\"{path}\""), format!("\"{}\"", dir.path().join(sub).display()));
    }
    replace(format!("\"{}\"", toml["s3_api"]["api_bind_addr"].as_str().unwrap()), format!("\"{s3_addr}\""));
    replace(format!("\"{}\"", toml["rpc_bind_addr"].as_str().unwrap()), format!("\"{rpc_addr}\""));
    let config = dir.path().join("garage.toml");
    std::fs::write(&config, text).unwrap();

    // The environment the compose file gives it, from .env.example's S3 block.
    let s3 = s3_example();
    let env = [
        ("GARAGE_RPC_SECRET", s3["GARAGE_RPC_SECRET"].clone()),
        ("GARAGE_DEFAULT_ACCESS_KEY", s3["AWS_ACCESS_KEY_ID"].clone()),
        ("GARAGE_DEFAULT_SECRET_KEY", s3["AWS_SECRET_ACCESS_KEY"].clone()),
        ("GARAGE_DEFAULT_BUCKET", s3["GARAGE_BUCKET"].clone()),
    ];
    let log = dir.path().join("garage.log");
    let out = std::fs::File::create(&log).unwrap();
    let _server = Running(
        Command::new(&garage)
            .arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("garage starts"),
    );
    let log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(s3_addr).is_err() {
        assert!(Instant::now() < deadline, "Garage's S3 port did not answer; its log:\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // The compose healthcheck's command, then the bucket and key it was told to create.
    let cli = |args: &[&str]| {
        Command::new(&garage)
            .arg("-c")
            .arg(&config)
            .args(args)
            .env("GARAGE_RPC_SECRET", &s3["GARAGE_RPC_SECRET"])
            .output()
            .expect("garage runs")
    };
    let health = loop {
        let out = cli(&["health", "--quiet"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(health.status.success(), "garage health: {}\nlog:\n{}", String::from_utf8_lossy(&health.stderr), log());
    let bucket = cli(&["bucket", "info", &s3["GARAGE_BUCKET"]]);
    let info = String::from_utf8_lossy(&bucket.stdout);
    assert!(bucket.status.success(), "the bucket exists: {}", String::from_utf8_lossy(&bucket.stderr));
    assert!(info.contains(&s3["AWS_ACCESS_KEY_ID"]), "the example key may use the bucket:\n{info}");
}
