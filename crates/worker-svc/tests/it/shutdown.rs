//! SIGTERM to the `worker-svc` binary while ffmpeg works: the ffmpeg process group dies, the
//! process exits 0 within its drain deadline, and the job is retried later (not failed).

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use test_support::Media;

use crate::support::{Fixture, Place, TestApp, eventually};

const LIMIT: Duration = Duration::from_secs(90);
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// `(pid, ppid, pgrp, comm)` of every process.
pub(crate) fn processes() -> Vec<(i32, i32, i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid pgrp ...`; comm may contain spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let (Ok(pid), Some(Ok(ppid)), Some(Ok(pgrp))) =
            (stat[..open].trim().parse(), fields.get(1).map(|f| f.parse()), fields.get(2).map(|f| f.parse()))
        else {
            continue;
        };
        out.push((pid, ppid, pgrp, stat[open + 1..close].to_owned()));
    }
    out
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_ffmpeg_kills_its_group_exits_zero_and_leaves_the_job_to_be_retried() {
    let fixture = Fixture::new(Place::new(None).await).await;
    // Twenty minutes of tiny video, previewed in full: ffmpeg works for many seconds.
    let video = Media::new().video("long.mp4", 1200, "64x48");
    let id = fixture.upload(&video, "long.mp4", None).await;

    let deadline_ms = DRAIN_DEADLINE.as_millis().to_string();
    let env = fixture.place.env(&[
        ("WORKER_PREVIEW_SECONDS", "1200"),
        ("WORKER_LOCK_DURATION_MS", "2000"),
        ("WORKER_DRAIN_DEADLINE_MS", &deadline_ms),
        ("RUST_LOG", "info"),
    ]);
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("worker-svc.log");
    let mut service = Command::new(env!("CARGO_BIN_EXE_worker-svc"))
        .env_clear()
        .envs(env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let service_pid = service.id() as i32;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // The preview is being made (progress past the thumbnail's 25) by an ffmpeg of the service.
    eventually(LIMIT, "the preview to be under way", async || {
        let job = fixture.files.get_job(&id.to_string()).await.unwrap()?;
        (job.progress.as_f64().unwrap_or(0.0) > 25.0).then_some(())
    })
    .await;
    let (ffmpeg, group) = eventually(LIMIT, "the service's ffmpeg", async || {
        processes().into_iter().find(|p| p.1 == service_pid && p.3 == "ffmpeg").map(|p| (p.0, p.2))
    })
    .await;
    assert_eq!(ffmpeg, group, "ffmpeg leads a process group of its own");
    assert_ne!(Some(group), processes().iter().find(|p| p.0 == service_pid).map(|p| p.2));

    let signalled = Instant::now();
    kill(Pid::from_raw(service_pid), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_for_exit(&mut service, DRAIN_DEADLINE + Duration::from_secs(5));
        if status.is_none() {
            let _ = service.kill();
        }
        status
    })
    .await
    .unwrap();
    let took = signalled.elapsed();
    eprintln!("worker-svc exited {took:?} after SIGTERM");
    let status = status.unwrap_or_else(|| panic!("worker-svc did not exit; its log:\n{}", log_text()));
    assert!(status.success(), "exit status {status}; log:\n{}", log_text());
    assert!(took < DRAIN_DEADLINE, "exited after {took:?}, past its drain deadline");
    let survivors: Vec<_> = processes().into_iter().filter(|p| p.2 == group).collect();
    assert!(survivors.is_empty(), "the ffmpeg group outlived the service: {survivors:?}");

    // The job is not failed: the row waits for its retry, the job for its lock to expire.
    let row = fixture.db.get_file(id).await.unwrap().unwrap();
    assert_eq!(row.status, "queued", "{row:?}");
    assert!(row.error.as_deref().unwrap().contains("shutdown"), "{row:?}");
    assert_eq!(fixture.executions(id).await, [(1, Some("interrupted".to_owned()))]);
    let scratch_left: Vec<_> = std::fs::read_dir(fixture.place.scratch_dir.path()).unwrap().flatten().collect();
    assert!(scratch_left.is_empty(), "scratch removed: {scratch_left:?}");

    // Another worker recovers it once the lock expires, and finishes it (with a short preview).
    let app = TestApp::spawn_with(fixture, &[("WORKER_STALLED_INTERVAL_MS", "500")]).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row.status, "done", "{row:?}");
    let result = row.result.unwrap();
    assert!((result["media"]["duration_s"].as_f64().unwrap() - 1200.0).abs() < 1.0, "{result}");
    // The execution's outcome is written just after the row (the ledger, then the job in Redis).
    let outcomes = eventually(LIMIT, "the second execution's outcome", async || {
        let outcomes: Vec<Option<String>> = app.executions(id).await.into_iter().map(|e| e.1).collect();
        outcomes.iter().all(Option::is_some).then_some(outcomes)
    })
    .await;
    assert_eq!(outcomes, [Some("interrupted".to_owned()), Some("done".to_owned())]);
    let job = app.files.get_job(&id.to_string()).await.unwrap().unwrap();
    assert_eq!(job.stalled_counter, 1, "recovered by the stalled check, not by a failed attempt");
    app.stop().await;
}
