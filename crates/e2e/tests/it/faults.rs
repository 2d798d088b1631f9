//! The fault suite: the real binaries under faults, each scenario judged against the ledger in
//! Postgres (rows api-svc commits before its 202, one `executions` row per run by worker-svc),
//! never against the queue's own counters. Quick by default (the test command runs it); with
//! `FAULTS_SOAK_MINUTES=N` (`scripts/faults --soak N`) each scenario keeps its load and its faults
//! going for N minutes. Every scenario prints one row of the table in docs/RELIABILITY.md, and
//! appends it to `FAULTS_REPORT` when that is set.
//!
//! What a row says:
//! - acknowledged: uploads answered 202 during the run; refused: answered otherwise (503...);
//! - lost: acknowledged but neither `done` nor `failed` with a reason once the stack has had
//!   [`SETTLE`] to recover (must be 0);
//! - duplicate executions: runs beyond the first per file (bounded by the jobs in flight at the
//!   faults);
//! - duplicate effects: files that more than one run processed to the end (must be 0);
//! - stuck: jobs in Redis's `active` list without a lock at the end (must be 0);
//! - recovery: from the end of the last fault until a fresh upload is `done`;
//! - longest request: the slowest upload answer during the run (a hang shows here);
//! - restarts: services that exited, other than by the scenario's own hand, which starts
//!   again whatever it killed (must be 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{Service, Stack, StackOptions, TOKEN, eventually};
use nix::sys::signal::Signal;
use queue_core::tooling::{QueueKeys, Raw};
use reqwest::StatusCode;
use test_support::RedisServer;
use uuid::Uuid;

/// How long the stack gets, after the last fault, to finish what it acknowledged.
const SETTLE: Duration = Duration::from_secs(60);

/// `Some(minutes)` in soak mode.
fn soak() -> Option<Duration> {
    let minutes: f64 = std::env::var("FAULTS_SOAK_MINUTES").ok()?.parse().ok()?;
    (minutes > 0.0).then(|| Duration::from_secs_f64(minutes * 60.0))
}

/// How many faults of a kind a run injects: `quick` in the quick suite, `soak` in a soak.
fn faults(quick: usize, soak_count: usize) -> usize {
    if soak().is_some() { soak_count } else { quick }
}

/// One upload of the load.
#[derive(Debug)]
struct Sent {
    id: Option<Uuid>,
    status: u16,
    took: Duration,
}

/// Uploads small files one after another (text, and every `video_every`-th a short video) until
/// stopped, recording every answer. A request that gets no answer within 60 s counts as a hang.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sent>>,
}

impl Load {
    fn start(stack: &Stack, label: &'static str, video_every: usize, pace: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let url = format!("{}/v1/files", stack.api_base);
        let clip = (video_every > 0).then(|| test_support::Media::new().video("clip.mp4", 1, "64x48"));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let (name, content_type, body) = match &clip {
                    Some(clip) if i.is_multiple_of(video_every) => {
                        (format!("{label}-{i}.mp4"), "video/mp4", clip.clone())
                    }
                    _ => (format!("{label}-{i}.txt"), "text/plain", format!("{label} {i}\n").into_bytes()),
                };
                let started = Instant::now();
                let answer = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", content_type)
                    .header("x-filename", name)
                    .body(body)
                    .send()
                    .await;
                let took = started.elapsed();
                let (status, id) = match answer {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let body: serde_json::Value = answer.json().await.unwrap_or_default();
                        let id = body["id"].as_str().and_then(|id| id.parse().ok()).filter(|_| status == 202);
                        (status, id)
                    }
                    Err(_) => (0, None),
                };
                sent.push(Sent { id, status, took });
                i += 1;
                tokio::time::sleep(pace).await;
            }
            sent
        });
        Load { stop, task }
    }

    async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the load task")
    }
}

/// One scenario's figures (see the module docs).
#[derive(Debug)]
struct Report {
    scenario: String,
    acknowledged: usize,
    refused: usize,
    /// Requests with no answer at all (a hang or a reset).
    unanswered: usize,
    failed: usize,
    lost: usize,
    duplicate_executions: i64,
    duplicate_effects: i64,
    stuck: usize,
    recovery: Duration,
    longest_request: Duration,
    restarts: usize,
}

impl Report {
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.2} s | {} |",
            self.scenario,
            self.acknowledged,
            self.refused,
            self.lost,
            self.failed,
            self.duplicate_executions,
            self.duplicate_effects,
            self.stuck,
            self.recovery.as_secs_f64(),
            self.longest_request.as_secs_f64(),
            self.restarts
        )
    }

    /// Prints the row (and appends it to `FAULTS_REPORT`), then holds the promises.
    fn check(&self, max_duplicate_executions: i64) {
        let row = self.row();
        eprintln!("FAULTS {row}");
        if let Ok(path) = std::env::var("FAULTS_REPORT") {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("FAULTS_REPORT");
            // One write per row: scenarios run in parallel processes.
            file.write_all(format!("{row}\n").as_bytes()).expect("write FAULTS_REPORT");
        }
        assert_eq!(self.lost, 0, "nothing acknowledged is lost: {self:?}");
        assert_eq!(self.duplicate_effects, 0, "no file is processed to the end twice: {self:?}");
        assert_eq!(self.stuck, 0, "no job is left active without a lock: {self:?}");
        assert_eq!(self.restarts, 0, "no service needed a restart: {self:?}");
        assert_eq!(self.unanswered, 0, "every request got an answer: {self:?}");
        assert!(
            self.duplicate_executions <= max_duplicate_executions,
            "at most {max_duplicate_executions} duplicate executions (the jobs in flight at the faults): {self:?}"
        );
        assert!(self.acknowledged > 0, "the load went through: {self:?}");
    }
}

/// Counts the services that exited, waits for every acknowledged file to finish, measures
/// recovery with a fresh upload, and reads the ledger and Redis.
async fn audit(stack: &mut Stack, scenario: &str, sent: &[Sent]) -> Report {
    // Whatever a scenario killed on purpose was started again: every service must be running.
    let restarts = usize::from(!stack.api.running()) + usize::from(!stack.worker.running());
    let fault_over = Instant::now();
    let probe = stack.accepted("probe.txt", "text/plain", b"after the faults\n".to_vec()).await;
    assert_eq!(stack.finished(probe, SETTLE).await["status"], "done", "a fresh upload after the faults");
    let recovery = fault_over.elapsed();

    let acknowledged: Vec<Uuid> = sent.iter().filter_map(|s| s.id).collect();
    let deadline = Instant::now() + SETTLE;
    let statuses = loop {
        let rows: Vec<(Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, error FROM files").fetch_all(&stack.db).await.expect("read the files");
        let by_id: BTreeMap<Uuid, (String, Option<String>)> = rows.into_iter().map(|(i, s, e)| (i, (s, e))).collect();
        let open = acknowledged.iter().filter(|id| !finished(by_id.get(id))).count();
        if open == 0 || Instant::now() > deadline {
            break by_id;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let lost = acknowledged.iter().filter(|id| !finished(statuses.get(id))).count();
    let failed = acknowledged.iter().filter(|id| statuses.get(id).is_some_and(|(s, _)| s == "failed")).count();

    let duplicate_executions: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(n - 1), 0)::bigint FROM (SELECT count(*) AS n FROM executions GROUP BY file_id) runs",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    let duplicate_effects: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT file_id FROM executions WHERE outcome = 'done' \
         GROUP BY file_id HAVING count(*) > 1) twice",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();

    Report {
        scenario: scenario.to_owned(),
        acknowledged: acknowledged.len(),
        refused: sent.iter().filter(|s| s.id.is_none()).count(),
        unanswered: sent.iter().filter(|s| s.status == 0).count(),
        failed,
        lost,
        duplicate_executions,
        duplicate_effects,
        stuck: settled_stuck(stack).await,
        recovery,
        longest_request: sent.iter().map(|s| s.took).max().unwrap_or_default(),
        restarts,
    }
}

/// `done`, or `failed` with a reason.
fn finished(row: Option<&(String, Option<String>)>) -> bool {
    match row {
        Some((status, _)) if status == "done" => true,
        Some((status, Some(reason))) if status == "failed" => !reason.is_empty(),
        _ => false,
    }
}

/// Jobs left active without a lock once the stall check has had its chances (three lock
/// durations): a lock that expired during a fault is normal for a moment; one that stays so is
/// a job no one will ever run again.
async fn settled_stuck(stack: &Stack) -> usize {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let stuck = stuck_active(stack).await;
        if stuck == 0 || Instant::now() > deadline {
            return stuck;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Jobs in the `files` queue's active list whose lock is gone.
async fn stuck_active(stack: &Stack) -> usize {
    let connections = stack.connections("e2e-faults");
    let raw = Raw::new(&connections);
    let keys = QueueKeys::new(&stack.prefix, "files").expect("the files queue");
    let active: Vec<String> = raw.query(&["LRANGE", &keys.active(), "0", "-1"]).await.expect("LRANGE active");
    let mut stuck = 0;
    for id in active {
        let locked: i64 = raw.query(&["EXISTS", &keys.lock(&id)]).await.expect("EXISTS lock");
        stuck += usize::from(locked == 0);
    }
    connections.close().await;
    stuck
}

/// Short locks and stall checks, so that a dead worker's jobs come back within seconds; a job
/// may stall a few times (each kill can stall it) before Bull fails it.
fn fast_worker() -> Vec<(&'static str, String)> {
    vec![
        ("WORKER_LOCK_DURATION_MS", "2000".to_owned()),
        ("WORKER_STALLED_INTERVAL_MS", "1000".to_owned()),
        ("WORKER_MAX_STALLED_COUNT", "5".to_owned()),
        ("WORKER_RECONCILE_INTERVAL_MS", "1000".to_owned()),
        ("WORKER_RECONCILE_MIN_AGE_MS", "3000".to_owned()),
    ]
}

/// The stack on a private Redis, with [`fast_worker`]'s intervals.
async fn stack_on(redis: &RedisServer) -> Stack {
    Stack::start(StackOptions { redis_url: Some(redis.url()), worker_vars: fast_worker(), ..StackOptions::default() })
        .await
}

/// How long the run lasts between faults: until `at_least` has passed, or the soak's length.
fn run_for(at_least: Duration) -> Duration {
    soak().unwrap_or(at_least)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_svc_killed_mid_job_again_and_again() {
    let mut stack = Stack::start(StackOptions { worker_vars: fast_worker(), ..StackOptions::default() }).await;
    let kills = faults(4, 20);
    let between = run_for(Duration::from_secs(6)) / kills as u32;
    let load = Load::start(&stack, "kill", 4, Duration::from_millis(20));
    let mut concurrency_at_kills = 0i64;
    for _ in 0..kills {
        tokio::time::sleep(between).await;
        // SIGKILL: no drain, no lock released; its jobs come back through the stall check.
        stack.worker.signal(Signal::SIGKILL);
        let _ = stack.worker.exited(Duration::from_secs(5)).await;
        concurrency_at_kills += 2;
        stack.worker = Service::start("worker-svc", &stack.worker_env(), &stack.log_dir());
    }
    let sent = load.stop().await;
    let report = audit(&mut stack, "worker-svc SIGKILL mid-job", &sent).await;
    // Each kill can cut at most WORKER_CONCURRENCY (2) runs short.
    report.check(concurrency_at_kills);
}

/// Redis SIGKILLed and restarted while uploads are being acknowledged, with `appendfsync` as
/// given: `always` loses nothing, `everysec` may lose the last second of jobs, which the
/// reconciler gives back from Postgres.
async fn redis_killed_and_restarted(fsync: &str) {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", fsync, "--save", ""]);
    let mut stack = stack_on(&redis).await;
    let kills = faults(2, 10);
    let between = run_for(Duration::from_secs(4)) / kills as u32;
    let load = Load::start(&stack, "redis", 0, Duration::from_millis(10));
    for _ in 0..kills {
        tokio::time::sleep(between).await;
        tokio::task::block_in_place(|| {
            redis.kill();
            std::thread::sleep(Duration::from_millis(300));
            redis.restart();
        });
    }
    let sent = load.stop().await;
    let report = audit(&mut stack, &format!("Redis SIGKILL + restart, appendfsync {fsync}"), &sent).await;
    // The jobs in flight at each kill (2 at most) may run again.
    report.check(2 * kills as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_with_appendfsync_always() {
    redis_killed_and_restarted("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_with_appendfsync_everysec() {
    redis_killed_and_restarted("everysec").await;
}

/// Redis frozen (SIGSTOP) for `freeze` while uploads go on: the API answers within its command
/// timeout (1 s here) plus margin whatever the freeze, and `/readyz` tells the truth.
async fn redis_frozen(freeze: Duration, expect_ready: bool) -> Report {
    redis_frozen_by(Freeze::Sigstop, freeze, expect_ready).await
}

/// How Redis is frozen. They differ in what the server does meanwhile: SIGSTOP accepts nothing
/// and runs nothing; `DEBUG SLEEP` holds the event loop (connections queue up) and keys' TTLs
/// run on, so locks expire the moment it wakes; `CLIENT PAUSE ALL` answers nothing but keeps
/// time-based expiry paused too.
#[derive(Clone, Copy, Debug)]
enum Freeze {
    Sigstop,
    DebugSleep,
    ClientPause,
}

async fn redis_frozen_by(how: Freeze, freeze: Duration, expect_ready: bool) -> Report {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]);
    let mut stack = stack_on(&redis).await;
    let load = Load::start(&stack, "frozen", 0, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let port = redis.port();
    let sleeper = match how {
        Freeze::Sigstop => {
            redis.pause();
            None
        }
        Freeze::DebugSleep => {
            let secs = format!("{:.3}", freeze.as_secs_f64());
            let sleeper = std::thread::spawn(move || test_support::resp_command(port, &["DEBUG", "SLEEP", &secs]));
            // Until the server has read it, it answers.
            std::thread::sleep(Duration::from_millis(50));
            Some(sleeper)
        }
        Freeze::ClientPause => {
            let ms = freeze.as_millis().to_string();
            test_support::resp_command(port, &["CLIENT", "PAUSE", &ms, "ALL"]);
            None
        }
    };
    let frozen_at = Instant::now();
    tokio::time::sleep(freeze / 2).await;
    // A probe while frozen, answered whenever it is answered; the freeze ends on time meanwhile.
    let probe = {
        let (client, url) = (stack.client.clone(), format!("{}/readyz", stack.api_base));
        tokio::spawn(async move {
            let started = Instant::now();
            let ready = client.get(url).send().await.unwrap();
            (started.elapsed(), ready.status(), ready.text().await.unwrap_or_default())
        })
    };
    tokio::time::sleep(freeze.saturating_sub(frozen_at.elapsed())).await;
    match how {
        Freeze::Sigstop => redis.resume(),
        Freeze::DebugSleep => {
            let _ = tokio::task::block_in_place(|| sleeper.map(|s| s.join()));
        }
        Freeze::ClientPause => {}
    }
    let (readyz_took, readyz_status, readyz_body) = probe.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = load.stop().await;
    let what = match how {
        Freeze::Sigstop => "SIGSTOP",
        Freeze::DebugSleep => "DEBUG SLEEP",
        Freeze::ClientPause => "CLIENT PAUSE ALL",
    };
    let name = format!("Redis frozen ({what}) {:.1} s", freeze.as_secs_f64());
    let report = audit(&mut stack, &name, &sent).await;
    assert!(readyz_took < Duration::from_millis(2500), "/readyz answered in {readyz_took:?} while frozen");
    if expect_ready {
        assert_eq!(readyz_status, StatusCode::OK, "a freeze shorter than the timeout is not an outage: {readyz_body}");
    } else {
        assert_eq!(
            readyz_status,
            StatusCode::SERVICE_UNAVAILABLE,
            "/readyz says Redis is not answering: {readyz_body}"
        );
        assert!(readyz_body.contains("redis"), "/readyz names Redis: {readyz_body}");
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_shorter_than_the_command_timeout() {
    let report = redis_frozen(Duration::from_millis(400), true).await;
    assert_eq!(report.refused, 0, "no upload refused: {report:?}");
    report.check(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_by_debug_sleep_longer_than_the_lock() {
    let report = redis_frozen_by(Freeze::DebugSleep, Duration::from_secs(4), false).await;
    assert!(report.longest_request < Duration::from_secs(3), "no upload hung: {report:?}");
    report.check(4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_by_client_pause_longer_than_the_lock() {
    let report = redis_frozen_by(Freeze::ClientPause, Duration::from_secs(4), false).await;
    assert!(report.longest_request < Duration::from_secs(3), "no upload hung: {report:?}");
    report.check(4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_longer_than_the_lock() {
    // Longer than the command timeout (1 s) and the lock (2 s): locks expire while Redis sleeps.
    let report = redis_frozen(Duration::from_secs(4), false).await;
    // Uploads are acknowledged from Postgres while Redis does not answer, each within the
    // command timeout (1 s) and the request's own work.
    assert!(report.longest_request < Duration::from_secs(3), "no upload hung: {report:?}");
    report.check(4);
}

/// Jobs another producer wrote straight into Redis, malformed in every way we know: each fails
/// with a reason (or is skipped), and the queue goes on with the next upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_fail_with_a_reason_and_the_queue_goes_on() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let connections = stack.connections("e2e-poison");
    let raw = Raw::new(&connections);
    let keys = QueueKeys::new(&stack.prefix, "files").unwrap();
    let nested = "[".repeat(100_000);
    let big = format!("{{\"v\":1,\"file_id\":\"{}\",\"pad\":\"{}\"}}", Uuid::new_v4(), "x".repeat(50 << 20));
    let now = queue_core::tooling::now_ms().to_string();
    let poisons: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("bad-json", vec![("data", "{not json".into()), ("opts", "{}".into())]),
        ("no-data", vec![("opts", "{}".into())]),
        ("no-opts", vec![("data", r#"{"v":1,"file_id":"00000000-0000-0000-0000-000000000000"}"#.into())]),
        ("wrong-shape", vec![("data", r#"{"v":1,"file_id":42}"#.into()), ("opts", "{}".into())]),
        (
            "future-version",
            vec![("data", format!(r#"{{"v":99,"file_id":"{}"}}"#, Uuid::new_v4())), ("opts", "{}".into())],
        ),
        ("nested", vec![("data", nested), ("opts", "{}".into())]),
        ("fifty-mb", vec![("data", big), ("opts", "{}".into())]),
    ];
    for (id, fields) in &poisons {
        let key = keys.job(id);
        let mut args = vec!["HSET", key.as_str(), "name", "__default__", "timestamp", now.as_str()];
        for (field, value) in fields {
            args.push(field);
            args.push(value.as_str());
        }
        let _: i64 = raw.query(&args).await.unwrap();
        let _: i64 = raw.query(&["LPUSH", &keys.wait(), id]).await.unwrap();
    }
    // A job whose hash is the wrong type altogether.
    let _: () = raw.query(&["SET", &keys.job("wrong-type"), "a string"]).await.unwrap();
    let _: i64 = raw.query(&["LPUSH", &keys.wait(), "wrong-type"]).await.unwrap();

    let after = stack.accepted("after.txt", "text/plain", b"after the poison\n".to_vec()).await;
    assert_eq!(stack.finished(after, SETTLE).await["status"], "done", "the queue went on");
    let queue = stack.queue("files");
    for (id, _) in &poisons {
        let job = eventually(SETTLE, &format!("poison job {id} to end"), async || {
            let job = queue.get_job(id).await.ok()??;
            job.finished_on.map(|_| job)
        })
        .await;
        let why = job.failed_reason.clone().or_else(|| job.returnvalue.as_ref().map(|v| v.to_string()));
        let why = why.unwrap_or_default();
        assert!(!why.is_empty(), "{id} ended with a reason: {job:?}");
        eprintln!("poison {id}: {}", why.chars().take(160).collect::<String>());
    }
    // The job that is not a hash leaves the wait and active lists (it cannot be read, so it
    // cannot run), and nothing else stalls on it.
    eventually(SETTLE, "the wrong-type job to leave wait and active", async || {
        let wait: Vec<String> = raw.query(&["LRANGE", &keys.wait(), "0", "-1"]).await.ok()?;
        let active: Vec<String> = raw.query(&["LRANGE", &keys.active(), "0", "-1"]).await.ok()?;
        (!wait.iter().chain(&active).any(|id| id == "wrong-type")).then_some(())
    })
    .await;
    let later = stack.accepted("later.txt", "text/plain", b"still going\n".to_vec()).await;
    assert_eq!(stack.finished(later, SETTLE).await["status"], "done", "the queue still goes on");
    assert!(stack.worker.running(), "worker-svc is still running");
    connections.close().await;
}

/// The ids of `redis`'s clients whose name says `service` and `role` (`api-svc:command:0`,
/// `bull:<queue>:worker-svc:blocking:1`).
fn clients_of(redis: &RedisServer, service: &str, role: &str) -> Vec<String> {
    let list = redis.command(&["CLIENT", "LIST"]);
    list.lines()
        .filter_map(|line| {
            let field = |key: &str| line.split(' ').find_map(|f| f.strip_prefix(key)).map(str::to_owned);
            let name = field("name=")?;
            let parts: Vec<&str> = name.split(':').collect();
            parts.windows(2).any(|w| w[0] == service && w[1] == role).then(|| field("id=")).flatten()
        })
        .collect()
}

/// Each role's connections dropped by the server (`CLIENT KILL ID`), one role at a time, while
/// uploads go on: after each, a fresh upload must be processed (no wedged fetch, no lost
/// subscription), and nothing acknowledged is lost.
async fn connections_dropped_by_role(blocking: bool) {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--save", ""]);
    let mut worker_vars = fast_worker();
    worker_vars.push(("WORKER_BLOCKING", blocking.to_string()));
    let mut stack =
        Stack::start(StackOptions { redis_url: Some(redis.url()), worker_vars, ..StackOptions::default() }).await;
    let roles: &[(&str, &str)] = if blocking {
        &[("api-svc", "command"), ("worker-svc", "command"), ("worker-svc", "blocking")]
    } else {
        &[("api-svc", "command"), ("worker-svc", "command"), ("worker-svc", "subscriber")]
    };
    let load = Load::start(&stack, "dropped", 0, Duration::from_millis(20));
    let mut slowest_canary = Duration::ZERO;
    for round in 0..faults(1, 10) {
        for (service, role) in roles {
            // A pool opens its connection again when it is needed: wait for it.
            let ids = eventually(Duration::from_secs(10), &format!("{service}'s {role} connection"), async || {
                let ids = clients_of(&redis, service, role);
                (!ids.is_empty()).then_some(ids)
            })
            .await;
            for id in &ids {
                redis.command(&["CLIENT", "KILL", "ID", id]);
            }
            let started = Instant::now();
            let canary =
                stack.accepted(&format!("canary-{round}-{service}-{role}.txt"), "text/plain", b"c\n".to_vec()).await;
            assert_eq!(
                stack.finished(canary, Duration::from_secs(30)).await["status"],
                "done",
                "after {service} {role}"
            );
            slowest_canary = slowest_canary.max(started.elapsed());
        }
    }
    let sent = load.stop().await;
    let mode = if blocking { "blocking" } else { "zero-blocking" };
    let name = format!("connections dropped by role ({mode}), slowest canary {:.1} s", slowest_canary.as_secs_f64());
    let report = audit(&mut stack, &name, &sent).await;
    report.check(2 * roles.len() as i64 * faults(1, 10) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_by_role_zero_blocking() {
    connections_dropped_by_role(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_by_role_blocking() {
    connections_dropped_by_role(true).await;
}

/// Redis's `maxclients` below what the stack needs (1 + 2 connections): the services say which
/// limit they hit, retry with backoff rather than storm the server, acknowledge uploads
/// meanwhile, and recover by themselves when the limit is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxclients_below_the_stacks_sum() {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--save", ""]);
    let mut stack = stack_on(&redis).await;
    // An admin seat taken before the limit: Redis refuses only new clients. Then no room at all,
    // and the services' connections taken away.
    let mut admin = test_support::RespConnection::open(redis.port());
    admin.command(&["CONFIG", "SET", "maxclients", "1"]);
    let list = admin.command(&["CLIENT", "LIST"]);
    for line in list.lines().filter(|l| l.contains("name=api-svc") || l.contains("worker-svc")) {
        if let Some(id) = line.split(' ').find_map(|f| f.strip_prefix("id=")) {
            admin.command(&["CLIENT", "KILL", "ID", id]);
        }
    }
    let mut stats = |key: &str| -> u64 {
        let info = admin.command(&["INFO", "stats"]);
        info.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok()).unwrap_or(0)
    };
    let load = Load::start(&stack, "maxclients", 0, Duration::from_millis(50));
    let (received, rejected) = (stats("total_connections_received:"), stats("rejected_connections:"));
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    // A refused connection counts in rejected_connections only.
    let refused = stats("rejected_connections:") - rejected;
    let attempts = (stats("total_connections_received:") - received + refused) as f64 / window.as_secs_f64();
    admin.command(&["CONFIG", "SET", "maxclients", "100"]);
    let sent = load.stop().await;
    let name = format!("Redis maxclients 1, below the stack's 3: {attempts:.1} connection attempts/s");
    let report = audit(&mut stack, &name, &sent).await;
    assert!(refused > 0, "the services did try to connect");
    // Backoff: a few attempts a second from two processes, not a storm.
    assert!(attempts < 20.0, "{attempts:.1} connection attempts per second");
    let logs = format!("{}{}", stack.api.log(), stack.worker.log());
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).take(12).collect();
    assert!(logs.contains("max number of clients reached"), "the services name the limit they hit: {warnings:#?}");
    report.check(2);
}

/// Redis out of memory (`noeviction` under a `maxmemory` just above what it holds): writes are
/// refused, uploads are still acknowledged from Postgres or refused with 503, nothing
/// acknowledged is lost, and the stack recovers by itself when memory is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory() {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"]);
    let mut stack = stack_on(&redis).await;
    let used: u64 = redis
        .command(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .expect("used_memory");
    redis.command(&["CONFIG", "SET", "maxmemory", &(used + 64 * 1024).to_string()]);
    let load = Load::start(&stack, "oom", 0, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let oom_errors: u64 = redis
        .command(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_error_replies:")?.trim().parse().ok())
        .unwrap_or(0);
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = load.stop().await;
    let report = audit(&mut stack, "Redis out of memory (noeviction, maxmemory reached), then raised", &sent).await;
    assert!(oom_errors > 0, "Redis refused writes");
    let warnings: Vec<String> =
        stack.api.log().lines().filter(|l| l.contains("WARN")).take(5).map(str::to_owned).collect();
    assert!(
        stack.api.log().contains("command not allowed when used memory"),
        "api-svc says why the job was not enqueued: {warnings:#?}"
    );
    report.check(2);
}

/// worker-svc (re)started while Redis is down waits for it instead of exiting, and comes up by
/// itself when Redis does; a SIGTERM while it waits ends it at once, with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_svc_started_while_redis_is_down_comes_up_with_it() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always", "--save", ""]);
    let mut stack = stack_on(&redis).await;
    stack.worker.signal(Signal::SIGKILL);
    let _ = stack.worker.exited(Duration::from_secs(5)).await;
    tokio::task::block_in_place(|| redis.kill());

    // A worker that is told to stop while it waits.
    let mut waiting = Service::start("worker-svc", &stack.worker_env(), &stack.log_dir());
    let scratch = stack.worker_env().into_iter().find(|(k, _)| k == "WORKER_SCRATCH_DIR").expect("a scratch dir").1;
    let own_scratch = std::path::Path::new(&scratch).join(format!("i-{}", waiting.pid().expect("it runs")));
    eventually(Duration::from_secs(20), "worker-svc to wait for Redis", async || {
        waiting.log().contains("redis is not ready").then_some(())
    })
    .await;
    assert!(waiting.running(), "worker-svc waits for Redis instead of exiting:\n{}", waiting.log());
    assert!(own_scratch.exists(), "it made its scratch directory while starting: {}", own_scratch.display());
    waiting.signal(Signal::SIGTERM);
    let status = waiting.exited(Duration::from_secs(10)).await.expect("it stops at once");
    assert!(status.success(), "SIGTERM while waiting for Redis exits 0: {status:?}");
    assert!(waiting.log().contains("stopped while starting"), "{}", waiting.log());
    assert!(!own_scratch.exists(), "what start-up made is cleaned up: {}", own_scratch.display());

    stack.worker = Service::start("worker-svc", &stack.worker_env(), &stack.log_dir());
    let load = Load::start(&stack, "down", 0, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stack.worker.running(), "still waiting after 3 s:\n{}", stack.worker.log());
    tokio::task::block_in_place(|| redis.restart());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = load.stop().await;
    let report = audit(&mut stack, "worker-svc started while Redis is down, then Redis back", &sent).await;
    report.check(0);
}

/// Both cores busy (two spinning processes at the services' own priority) for three lock
/// durations while videos are processed: lock renewals still arrive, so no job runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_starvation_longer_than_the_lock() {
    let mut stack = Stack::start(StackOptions { worker_vars: fast_worker(), ..StackOptions::default() }).await;
    let load = Load::start(&stack, "cpu", 2, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spin = || std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("sh");
    let mut hogs = [spin(), spin()];
    tokio::time::sleep(run_for(Duration::from_secs(6))).await;
    for hog in &mut hogs {
        let _ = hog.kill();
        let _ = hog.wait();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = load.stop().await;
    let report = audit(&mut stack, "CPU starvation: both cores spinning for 3 lock durations", &sent).await;
    let metrics = e2e::scrape(&stack.client, &stack.metrics_base).await;
    assert_eq!(metrics.sum("worker_locks_lost_total", &[]), 0.0, "no lock was lost: {}", metrics.text);
    assert!(metrics.sum("worker_lock_renewals_total", &[]) > 0.0, "locks were renewed: {}", metrics.text);
    report.check(0);
}

/// The network between the services and Redis cut (resets at once) and blackholed (nothing
/// comes back, for longer than the command timeout and the lock), through a TCP proxy: requests
/// end within the command timeout, no blocking fetch wedges (a fresh upload is processed after
/// each), nothing acknowledged is lost.
async fn redis_link_cut_and_blackholed(blocking: bool) {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--save", ""]);
    let proxy = e2e::ChaosProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let mut worker_vars = fast_worker();
    worker_vars.push(("WORKER_BLOCKING", blocking.to_string()));
    let mut stack = Stack::start(StackOptions {
        redis_url: Some(format!("redis://{}", proxy.addr())),
        worker_vars,
        ..StackOptions::default()
    })
    .await;
    let load = Load::start(&stack, "link", 0, Duration::from_millis(20));
    let mut slowest_canary = Duration::ZERO;
    for round in 0..faults(1, 10) {
        for (fault, length) in [("cut", Duration::from_secs(2)), ("blackhole", Duration::from_secs(4))] {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if fault == "cut" {
                proxy.cut()
            } else {
                proxy.blackhole()
            }
            tokio::time::sleep(length).await;
            proxy.restore();
            let started = Instant::now();
            let canary = stack.accepted(&format!("canary-{round}-{fault}.txt"), "text/plain", b"c\n".to_vec()).await;
            let file = stack.finished(canary, Duration::from_secs(30)).await;
            assert_eq!(file["status"], "done", "after the {fault}");
            slowest_canary = slowest_canary.max(started.elapsed());
        }
    }
    let sent = load.stop().await;
    let mode = if blocking { "blocking" } else { "zero-blocking" };
    let name = format!(
        "Redis link cut 2 s, then blackholed 4 s ({mode}), slowest canary {:.1} s",
        slowest_canary.as_secs_f64()
    );
    let report = audit(&mut stack, &name, &sent).await;
    // Uploads are acknowledged from Postgres while Redis is unreachable: none waits much longer
    // than the command timeout (1 s), even when nothing comes back at all.
    assert!(report.longest_request < Duration::from_secs(3), "no upload hung: {report:?}");
    report.check(4 * faults(1, 10) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_link_cut_and_blackholed_zero_blocking() {
    redis_link_cut_and_blackholed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_link_cut_and_blackholed_blocking() {
    redis_link_cut_and_blackholed(true).await;
}

/// Postgres restarted under the load, `fast` (clients disconnected, a clean shutdown) and then
/// `immediate` (a crash and recovery), down 2 s each time: uploads get 503 while it is down rather than hanging, no
/// job completes in Redis without its row saying so, retries recover, nothing acknowledged is
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_fast_and_immediate() {
    if !test_support::postgres_available() {
        eprintln!("skipped: PostgreSQL's binaries are not installed, no private server can be run");
        return;
    }
    let mut postgres = tokio::task::block_in_place(test_support::PostgresServer::start);
    let mut stack = Stack::start(StackOptions {
        database_url: Some(postgres.url()),
        worker_vars: fast_worker(),
        ..StackOptions::default()
    })
    .await;
    let load = Load::start(&stack, "pg", 3, Duration::from_millis(20));
    for mode in [test_support::StopMode::Fast, test_support::StopMode::Immediate] {
        tokio::time::sleep(run_for(Duration::from_secs(2)) / 2).await;
        tokio::task::block_in_place(|| postgres.restart(mode, Duration::from_secs(2)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = load.stop().await;
    let report = audit(&mut stack, "Postgres restarted, fast then immediate, down 2 s each", &sent).await;

    // Every job Redis completed has its row finished: a result is written to Postgres before
    // the job completes, never after.
    let connections = stack.connections("e2e-pg");
    let raw = Raw::new(&connections);
    let keys = QueueKeys::new(&stack.prefix, "files").unwrap();
    let completed: Vec<String> = raw.query(&["ZRANGE", &keys.completed(), "0", "-1"]).await.unwrap();
    assert!(!completed.is_empty());
    for id in &completed {
        let Ok(file_id) = id.parse::<Uuid>() else { continue };
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM files WHERE id = $1")
            .bind(file_id)
            .fetch_optional(&stack.db)
            .await
            .unwrap();
        assert!(
            matches!(status.as_deref(), Some("done" | "failed")),
            "job {id} completed in Redis but its row says {status:?}"
        );
    }
    connections.close().await;
    assert!(
        report.refused > 0 || report.longest_request > Duration::from_millis(100),
        "the restarts were felt: {report:?}"
    );
    report.check(4);
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` where mounting is not allowed (not root, no tmpfs).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("faults-tmpfs-").tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// The disk of Redis's AOF full (a small tmpfs filled up) under the load, with `everysec`: Redis
/// refuses writes (`MISCONF`), uploads are still acknowledged from Postgres, and once space
/// returns Redis writes again and everything acknowledged is processed, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aof_disk_full_then_freed() {
    let Some(disk) = Tmpfs::mount("16m") else {
        eprintln!("skipped: a tmpfs cannot be mounted here (it needs root)");
        return;
    };
    let dir = disk.0.path().to_str().unwrap().to_owned();
    let redis = RedisServer::start_with(&["--dir", &dir, "--appendonly", "yes", "--appendfsync", "everysec"]);
    let mut stack = stack_on(&redis).await;
    let load = Load::start(&stack, "disk", 0, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Fill the disk.
    let filler = disk.0.path().join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    let full = eventually(Duration::from_secs(10), "Redis to report the failed AOF write", async || {
        let info = redis.command(&["INFO", "persistence"]);
        info.contains("aof_last_write_status:err").then_some(info)
    })
    .await;
    assert!(full.contains("aof_last_write_status:err"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(&filler).unwrap();
    eventually(Duration::from_secs(10), "Redis to write its AOF again", async || {
        redis.command(&["INFO", "persistence"]).contains("aof_last_write_status:ok").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = load.stop().await;
    let report = audit(&mut stack, "AOF disk full (everysec) for 2 s, then freed", &sent).await;
    let warned = stack.api.log().contains("MISCONF") || stack.worker.log().contains("MISCONF");
    assert!(warned, "the services saw Redis refuse writes");
    report.check(2);
    drop(stack);
    drop(redis);
}

/// Latency percentile of the acknowledged uploads.
fn percentile(sent: &[Sent], p: f64) -> Duration {
    let mut took: Vec<Duration> = sent.iter().filter(|s| s.id.is_some()).map(|s| s.took).collect();
    took.sort();
    took.get(((took.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

/// The stack with the services' default timeouts (not the test stack's short ones) on `redis_url`
/// and `database_url`.
async fn stack_with_default_timeouts(redis_url: String, database_url: String) -> Stack {
    let defaults = || {
        vec![
            ("REDIS_COMMAND_TIMEOUT_MS", "5000".to_owned()),
            ("REDIS_CONNECT_TIMEOUT_MS", "3000".to_owned()),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "3000".to_owned()),
        ]
    };
    let mut worker_vars = defaults();
    worker_vars.extend(fast_worker());
    Stack::start(StackOptions {
        redis_url: Some(redis_url),
        database_url: Some(database_url),
        api_vars: defaults(),
        worker_vars,
        ..StackOptions::default()
    })
    .await
}

/// One window of the network scenario: the load for `window` on a link, and what it did.
#[derive(Debug)]
struct Window {
    link: String,
    sent: Vec<Sent>,
    done: i64,
    window: Duration,
}

impl Window {
    /// Runs the load for `window`, counting the files done meanwhile.
    async fn measure(stack: &Stack, link: String, window: Duration) -> Window {
        let done = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM files WHERE status = 'done'")
                .fetch_one(&stack.db)
                .await
                .expect("count the files done")
        };
        let before = done().await;
        let load = Load::start(stack, "net", 0, Duration::ZERO);
        tokio::time::sleep(window).await;
        let sent = load.stop().await;
        Window { link, sent, done: done().await - before, window }
    }

    fn acknowledged(&self) -> usize {
        self.sent.iter().filter(|s| s.id.is_some()).count()
    }

    /// Answers other than 202 (the answer's status; 0 for none).
    fn refused(&self) -> Vec<u16> {
        self.sent.iter().filter(|s| s.id.is_none()).map(|s| s.status).collect()
    }

    fn row(&self, loopback_rate: f64) -> String {
        let rate = self.acknowledged() as f64 / self.window.as_secs_f64();
        let longest = self.sent.iter().map(|s| s.took).max().unwrap_or_default();
        format!(
            "| {} | {:.1} ({:.0}%) | {:.1} | {:.0} ms | {:.0} ms | {:.2} s | {:?} |",
            self.link,
            rate,
            100.0 * rate / loopback_rate.max(f64::MIN_POSITIVE),
            self.done as f64 / self.window.as_secs_f64(),
            percentile(&self.sent, 0.5).as_secs_f64() * 1000.0,
            percentile(&self.sent, 0.99).as_secs_f64() * 1000.0,
            longest.as_secs_f64(),
            self.refused(),
        )
    }
}

/// "Fast in dev, times out in prod", reproduced: the same load, with the services' default
/// timeouts, first with Redis and Postgres on loopback, then with both in a network namespace
/// of their own behind a veth pair whose packets are delayed 2 ms, then 20 ms each way, without
/// and with 1% loss (test-support's `Netns`: real packets held and dropped in the kernel).
/// At 2 ms nothing fails; at 20 ms whatever fails, fails with an answer (never a hang); nothing
/// acknowledged is lost. Without the privilege to make a namespace, the namespace part says so
/// and is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_latency_and_loss_against_loopback() {
    let window = run_for(Duration::from_secs(5));
    let redis_args = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""];
    let loopback = {
        let redis = RedisServer::start_with(&redis_args);
        let postgres = tokio::task::block_in_place(test_support::PostgresServer::start);
        let mut stack = stack_with_default_timeouts(redis.url(), postgres.url()).await;
        let measured = Window::measure(&stack, "loopback".to_owned(), window).await;
        let report = audit(&mut stack, "network: loopback", &measured.sent).await;
        assert_eq!(measured.refused(), Vec::<u16>::new(), "nothing refused on loopback");
        report.check(0);
        measured
    };
    let loopback_rate = loopback.acknowledged() as f64 / window.as_secs_f64();
    let mut rows = vec![loopback.row(loopback_rate)];
    if let Some(why) = test_support::Netns::unavailable() {
        eprintln!("the network namespace part is skipped: {why}");
        return;
    }
    let netns = tokio::task::block_in_place(test_support::Netns::create).expect("a network namespace");
    let redis = tokio::task::block_in_place(|| RedisServer::start_in(&netns, &redis_args));
    let postgres = tokio::task::block_in_place(|| test_support::PostgresServer::start_in(&netns));
    let mut stack = stack_with_default_timeouts(redis.url(), postgres.url()).await;
    let mut all = Vec::new();
    for (one_way_ms, loss) in [(0, 0.0), (2, 0.0), (2, 0.01), (20, 0.0), (20, 0.01)] {
        let one_way = Duration::from_millis(one_way_ms);
        netns.shape(test_support::LinkShape { one_way, loss });
        let link = format!("veth, {one_way_ms} ms each way, {}% loss", loss * 100.0);
        let measured = Window::measure(&stack, link, window).await;
        rows.push(measured.row(loopback_rate));
        eprintln!("NETWORK {}", rows.last().expect("a row"));
        let longest = measured.sent.iter().map(|s| s.took).max().unwrap_or_default();
        if one_way_ms <= 2 {
            assert_eq!(measured.refused(), Vec::<u16>::new(), "no failure at {one_way_ms} ms, {loss} loss");
        }
        // A failure is an answer within the services' own limits (3 s for a Postgres connection,
        // 5 s for a Redis command), never a hang.
        assert!(longest < Duration::from_secs(20), "a request took {longest:?} on {}", measured.link);
        all.extend(measured.sent);
    }
    netns.shape(test_support::LinkShape::default());
    let counts = netns.counts();
    assert!(counts.dropped > 0 && counts.passed > 0, "the link carried and dropped packets: {counts:?}");
    let report = audit(&mut stack, "network: veth, 0/2/20 ms, 0/1% loss", &all).await;
    report.check(0);
    let table = format!(
        "| Link | Uploads/s (of loopback) | Files done/s | Upload p50 | Upload p99 | Longest upload | Refused |\n|---|---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    eprintln!("{table}");
    if let Ok(path) = std::env::var("FAULTS_NETWORK_REPORT") {
        std::fs::write(path, &table).expect("write FAULTS_NETWORK_REPORT");
    }
    drop(stack);
    drop(postgres);
    drop(redis);
}

/// The pids of the `ffmpeg` processes whose parent is `parent` and that work on a first attempt
/// (their scratch paths say `<file id>-a1-`).
fn ffmpeg_children(parent: u32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or("");
        let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        let first_attempt = std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("-a1-"));
        if comm == "ffmpeg" && ppid == Some(parent) && first_attempt {
            found.extend(entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()));
        }
    }
    found
}

/// Uploads `n` 8-second videos (each job runs ffmpeg for a while), all acknowledged.
async fn long_videos(stack: &Stack, n: usize) -> Vec<Sent> {
    let clip = test_support::Media::new().video("long.mp4", 8, "640x360");
    let mut sent = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let id = stack.accepted(&format!("long-{i}.mp4"), "video/mp4", clip.clone()).await;
        sent.push(Sent { id: Some(id), status: 202, took: started.elapsed() });
    }
    sent
}

/// Only ffmpeg SIGKILLed under running jobs (worker-svc lives on), each file's first attempt
/// at most: that attempt ends as a transient failure and is retried, every file ends `done`,
/// and the worker goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_killed_under_running_jobs() {
    let mut stack = Stack::start(StackOptions { worker_vars: fast_worker(), ..StackOptions::default() }).await;
    let worker_pid = stack.worker.pid().expect("worker-svc runs");
    let sent = long_videos(&stack, faults(3, 10)).await;
    let mut kills = 0usize;
    // Until each file's first attempt was killed, or for 20 s (a loaded machine may finish some
    // first attempts before they are seen).
    let deadline = Instant::now() + Duration::from_secs(20);
    while kills < faults(3, 10) && Instant::now() < deadline {
        for pid in ffmpeg_children(worker_pid) {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                kills += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(kills > 0, "ffmpeg ran and was killed");
    let report = audit(&mut stack, &format!("ffmpeg alone SIGKILLed {kills} times under running jobs"), &sent).await;
    for s in &sent {
        assert_eq!(stack.file(s.id.unwrap()).await["status"], "done", "retried to the end");
    }
    report.check(kills as i64);
}

/// worker-svc SIGTERMed with long jobs in flight: it stops taking jobs, its ffmpeg runs are
/// stopped and their jobs left to be retried, it exits 0 within its drain deadline, and a new
/// worker finishes every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_svc_sigtermed_with_long_jobs_in_flight() {
    let mut stack = Stack::start(StackOptions { worker_vars: fast_worker(), ..StackOptions::default() }).await;
    let worker_pid = stack.worker.pid().expect("worker-svc runs");
    let sent = long_videos(&stack, 4).await;
    eventually(Duration::from_secs(30), "ffmpeg to run", async || {
        (!ffmpeg_children(worker_pid).is_empty()).then_some(())
    })
    .await;
    let stopping = Instant::now();
    stack.worker.signal(Signal::SIGTERM);
    let status =
        stack.worker.exited(Duration::from_secs(20)).await.expect("worker-svc exits within its drain deadline");
    let took = stopping.elapsed();
    assert!(status.success(), "a drain exits 0: {status:?}");
    stack.worker = Service::start("worker-svc", &stack.worker_env(), &stack.log_dir());
    let name = format!("worker-svc SIGTERM with 2 long jobs in flight: exit 0 after {} ms", took.as_millis());
    let report = audit(&mut stack, &name, &sent).await;
    // The two jobs in flight run again; nothing else does.
    report.check(2);
}
