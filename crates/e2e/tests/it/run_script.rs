//! `scripts/run`, the README's first command: it starts the stack, prints a token and a curl
//! that uploads a sample, and on Ctrl-C stops everything it started.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{eventually, free_addr};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// The process ids whose process group is `group`.
fn members(group: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid pgrp ...`; comm may contain spaces.
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.get(2).and_then(|f| f.parse::<i32>().ok()) == Some(group) {
            out.push(stat.split(' ').next().unwrap().parse().unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_starts_the_stack_prints_a_working_curl_and_stops_on_ctrl_c() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin_dir = e2e::binary("api-svc").parent().unwrap().to_owned();
    e2e::binary("worker-svc");
    e2e::binary("health-svc");
    let ops = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (listen, metrics) = (free_addr(), free_addr());
    let mut script = Command::new("bash")
        .arg(root.join("scripts/run"))
        .current_dir(&root)
        .env("STACK_BIN_DIR", &bin_dir)
        .env("REDIS_URL", test_support::redis_url())
        .env("DATABASE_URL", test_support::fresh_database().await)
        .env("QUEUE_PREFIX", test_support::unique("run"))
        .env("LISTEN_ADDR", listen.to_string())
        .env("METRICS_ADDR", metrics.to_string())
        .env("OPS_LISTEN_ADDR", ops.to_string())
        .env("STORAGE_DIR", dir.path().join("storage"))
        .env_remove("API_TOKENS")
        .env_remove("API_TOKENS_FILE")
        .env_remove("WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own process group, as a terminal gives a command: Ctrl-C signals the whole group.
        .process_group(0)
        .spawn()
        .unwrap();
    let group = script.id() as i32;
    let output = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let printed = eventually(LIMIT, "scripts/run to print how to try it", async || {
        let out = output();
        assert!(script.try_wait().unwrap().is_none(), "scripts/run exited early:\n{out}");
        out.contains("Ctrl-C stops every service").then_some(out)
    })
    .await;
    let token = printed.lines().find_map(|l| l.trim().strip_prefix("Token:")).expect("a token line").trim().to_owned();
    let upload = printed.lines().find(|l| l.contains("-F file=@")).expect("an upload curl").trim().to_owned();
    assert!(printed.contains(&format!("http://{listen}")), "{printed}");
    assert!(printed.contains(&format!("http://{ops}/ops")), "{printed}");
    let page = reqwest::get(format!("http://{ops}/ops")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Redis connections by service and role"));

    // The printed curl, pasted into a shell.
    let answer = Command::new("sh").args(["-c", &upload]).output().unwrap();
    assert!(answer.status.success(), "{upload}: {}", String::from_utf8_lossy(&answer.stderr));
    let accepted: Value = serde_json::from_slice(&answer.stdout).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    assert_eq!(accepted["status"], "queued", "{accepted}");
    let url = format!("http://{listen}/v1/files/{}", accepted["id"].as_str().unwrap());
    let client = reqwest::Client::new();
    let file = eventually(LIMIT, "the sample to be processed", async || {
        let file: Value = client.get(&url).bearer_auth(&token).send().await.ok()?.json().await.ok()?;
        matches!(file["status"].as_str(), Some("done" | "failed")).then_some(file)
    })
    .await;
    assert_eq!((file["status"].as_str(), file["result"]["kind"].as_str()), (Some("done"), Some("video")), "{file}");

    // Ctrl-C: the whole group gets SIGINT; the script exits 130, as an interrupted command does,
    // and leaves no process behind.
    assert!(members(group).len() >= 4, "the script and the three services run in its group");
    kill(Pid::from_raw(-group), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = script.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "scripts/run still runs after Ctrl-C:\n{}", output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(130), "{}", output());
    let left = eventually(Duration::from_secs(10), "the group to be empty", async || {
        let left = members(group);
        left.is_empty().then_some(left)
    })
    .await;
    assert!(left.is_empty());
    assert!(output().contains("worker-svc stopped"), "{}", output());
}
