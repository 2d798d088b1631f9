//! health-svc's `/ops` page in a real browser (headless Chromium, which scripts/test installs):
//! it renders every queue and every service's connections against its budget, and says in words
//! which service is over budget. A screenshot is left in the target directory to look at.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use e2e::{Stack, StackOptions, eventually};
use serde_json::Value;
use test_support::RedisServer;

const LIMIT: Duration = Duration::from_secs(60);

/// Debian's `chromium`, if installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let out = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

/// Runs headless Chromium on `url` with `args` (a screenshot, or the rendered DOM on stdout).
fn browse(browser: &PathBuf, profile: &std::path::Path, args: &[&str], url: &str) -> String {
    let out = Command::new("timeout")
        .arg("90")
        .arg(browser)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1366,1000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_page_in_chromium_shows_queues_budgets_and_what_is_over_budget() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed here (scripts/test installs Debian's chromium)");
        return;
    };
    let redis = RedisServer::start();
    let stack = Stack::start(StackOptions {
        redis_url: Some(redis.url()),
        health: true,
        health_vars: vec![("HEALTH_CANARY_INTERVAL_MS", "300".to_owned())],
        ..StackOptions::default()
    })
    .await;
    // One connection more under worker-svc's name than it declares.
    let _extra = crate::health::redis_client_named(redis.port(), "worker-svc:command:9");
    let ops_url = format!("{}/ops/queue", stack.health_base);
    eventually(LIMIT, "the ops report to see the extra connection and the canary", async || {
        let ops: Value = stack.client.get(&ops_url).send().await.ok()?.json().await.ok()?;
        (ops["problems"].to_string().contains("over budget") && ops["canary"]["state"]["last_success_ms"].is_u64())
            .then_some(())
    })
    .await;

    let profile = tempfile::tempdir().unwrap();
    let url = format!("{}/ops", stack.health_base);
    let dom = browse(&browser, profile.path(), &["--dump-dom"], &url);
    for text in ["files", "webhooks", "api-svc", "worker-svc", "health-svc", "3 of 2", "1 of 1"] {
        assert!(dom.contains(text), "the page shows {text:?}:\n{dom}");
    }
    assert!(
        dom.contains("worker-svc holds 3 Redis connections but declares a budget of 2: it is over budget."),
        "the page says in words what is over budget:\n{dom}"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ops-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(&browser, profile.path(), &[&format!("--screenshot={}", shot.display())], &url);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}
