//! The worker: processing, retries, crashes, starvation, reconnects, poison jobs, Node fleets.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_core::tooling::{self, keys_of};
use queue_core::{
    Backoff, ConnectionPlan, Connections, Error, JobOptions, JobState, Outcome, Queue, QueueSpec, StopWhen, Worker,
    WorkerSettings, handler,
};
use serde_json::{Value, json};

use crate::support::{blocked_clients, command_calls, config, eventually, raw};

fn fast() -> WorkerSettings {
    WorkerSettings::default()
        .lock_duration(Duration::from_millis(2000))
        .stalled_interval(Duration::from_millis(1000))
        .drain_delay(Duration::from_millis(500))
        .guard_interval(Duration::from_millis(500))
        .handler_threads(2)
}

type Starts = Arc<Mutex<HashMap<String, u32>>>;

/// A handler that records every start, fails `failTimes` attempts, and returns `ret` or `{ok:true}`.
fn recording(starts: Starts) -> queue_core::Handler {
    handler(move |job| {
        let starts = starts.clone();
        async move {
            *starts.lock().unwrap().entry(job.id().to_owned()).or_default() += 1;
            let data = job.data().clone();
            if let Some(n) = data["failTimes"].as_u64()
                && job.attempt() <= n
            {
                return Outcome::Retry(format!("fail {}", job.attempt()));
            }
            if data["failAlways"] == true {
                return Outcome::Retry("always".into());
            }
            if let Some(ms) = data["sleepMs"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Outcome::Completed(data.get("ret").cloned().unwrap_or(json!({"ok": true, "id": job.id()})))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_jobs_with_retries_backoff_and_final_states() {
    let cfg = config(&test_support::redis_url(), 2);
    let connections = Connections::builder(cfg, "it-worker").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "files").unwrap();
    let ok = q.add("a", json!({"ret": [1, 2]}), JobOptions::default()).await.unwrap();
    let flaky = q
        .add(
            "b",
            json!({"failTimes": 2}),
            JobOptions::default().attempts(3).backoff(Backoff::fixed(100)).stack_trace_limit(1),
        )
        .await
        .unwrap();
    let doomed = q.add("c", json!({"failAlways": true}), JobOptions::default().attempts(2)).await.unwrap();
    let gone = q
        .add("d", json!({}), JobOptions::default().remove_on_complete(queue_core::KeepJobs::Remove(true)))
        .await
        .unwrap();
    let later = q.add("e", json!({}), JobOptions::default().delay(300)).await.unwrap();
    let starts: Starts = Default::default();
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 2, recording(starts.clone()))])
        .await
        .unwrap();
    assert!(worker.is_blocking());
    assert!(
        eventually(Duration::from_secs(10), async || {
            let c = q.get_job_counts().await.unwrap();
            c.completed == 3 && c.failed == 1
        })
        .await,
        "{:?}",
        q.get_job_counts().await.unwrap()
    );
    worker.close(Duration::from_secs(5)).await;
    let a = q.get_job(&ok).await.unwrap().unwrap();
    assert_eq!(a.returnvalue, Some(json!([1, 2])));
    assert!(a.finished_on.is_some() && a.processed_on.is_some());
    let b = q.get_job(&flaky).await.unwrap().unwrap();
    assert_eq!((b.attempts_made, b.stacktrace.clone()), (2, vec!["fail 2".to_owned()]));
    assert_eq!(b.failed_reason.as_deref(), Some("fail 2"));
    let c = q.get_job(&doomed).await.unwrap().unwrap();
    assert_eq!((c.attempts_made, c.failed_reason.as_deref(), c.stacktrace.len()), (2, Some("always"), 2));
    assert!(q.get_job(&gone).await.unwrap().is_none());
    let e = q.get_job(&later).await.unwrap().unwrap();
    assert!(e.processed_on.unwrap() >= e.timestamp.unwrap() + 300);
    let starts = starts.lock().unwrap();
    assert_eq!((starts[&ok], starts[&flaky], starts[&doomed], starts[&later]), (1, 3, 2, 1));
}

/// Entry point of the child process of `a_killed_worker_s_jobs_are_recovered_by_another`: a
/// worker whose handler never finishes. Runs only when that test starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of a child process started by a crash test"]
async fn child_worker() {
    let url = std::env::var("QC_CHILD_URL").expect("QC_CHILD_URL");
    let mut cfg = config(&url, 2);
    cfg.prefix = std::env::var("QC_CHILD_PREFIX").expect("QC_CHILD_PREFIX");
    let connections = Connections::builder(cfg, "child").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "crash").unwrap();
    let stuck = handler(|_| async {
        std::future::pending::<()>().await;
        Outcome::Completed(Value::Null)
    });
    let _worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q, 4, stuck)]).await.unwrap();
    // Runs until the parent kills this process.
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_jobs_are_recovered_by_another() {
    let url = test_support::redis_url();
    let cfg = config(&url, 2);
    let prefix = cfg.prefix.clone();
    let connections = Connections::builder(cfg, "it-rescuer").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "crash").unwrap();
    for i in 0..10 {
        q.add("job", json!({"i": i}), JobOptions::default()).await.unwrap();
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "worker::child_worker", "--nocapture"])
        .env("QC_CHILD_URL", &url)
        .env("QC_CHILD_PREFIX", &prefix)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let busy = eventually(Duration::from_secs(20), async || q.get_job_counts().await.unwrap().active == 4).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(busy, "the child never took its 4 jobs: {:?}", q.get_job_counts().await.unwrap());

    let starts: Starts = Default::default();
    let started = Instant::now();
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 4, recording(starts.clone()))])
        .await
        .unwrap();
    let settings = fast();
    let limit = settings.stalled_interval * 2 + settings.lock_duration + Duration::from_secs(3);
    let done = eventually(limit, async || q.get_job_counts().await.unwrap().completed == 10).await;
    let took = started.elapsed();
    let stats = worker.stats();
    worker.close(Duration::from_secs(5)).await;
    let counts = q.get_job_counts().await.unwrap();
    assert!(done, "not all jobs completed within {limit:?}: {counts:?}");
    assert_eq!((counts.completed, counts.active, counts.waiting, counts.failed), (10, 0, 0, 0));
    assert_eq!(stats.stalled_recovered, 4, "{stats:?}");
    assert!(starts.lock().unwrap().values().all(|n| *n == 1));
    tracing::info!(?took, "recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_bound_handler_keeps_its_lock_and_runs_once() {
    let url = test_support::redis_url();
    let cfg = config(&url, 2);
    let lock = Duration::from_millis(1000);
    let settings = fast().lock_duration(lock).stalled_interval(Duration::from_millis(300));
    let connections = Connections::builder(cfg.clone(), "it-cpu-a").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "cpu").unwrap();
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let burn = {
        let runs = runs.clone();
        handler(move |_| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                // Spin every core, including this handler thread, for three lock durations.
                let until = Instant::now() + lock * 3;
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                let spinners: Vec<_> = (1..cores)
                    .map(|_| {
                        std::thread::spawn(move || {
                            while Instant::now() < until {
                                std::hint::spin_loop()
                            }
                        })
                    })
                    .collect();
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                spinners.into_iter().for_each(|t| t.join().unwrap());
                Outcome::Completed(json!("burnt"))
            }
        })
    };
    let a =
        Worker::start(&connections, settings.clone(), vec![QueueSpec::new(q.clone(), 1, burn.clone())]).await.unwrap();
    let id = q.add("burn", json!({}), JobOptions::default()).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || q.get_job_counts().await.unwrap().active == 1).await);
    // A second worker whose stalled checks would take the job if its lock ever expired.
    let mut cfg_b = config(&url, 2);
    cfg_b.prefix = cfg.prefix.clone();
    let connections_b = Connections::builder(cfg_b, "it-cpu-b").blocking(1).build().unwrap();
    let qb = Queue::new(&connections_b, "cpu").unwrap();
    let b = Worker::start(&connections_b, settings, vec![QueueSpec::new(qb, 1, burn)]).await.unwrap();
    assert!(eventually(Duration::from_secs(15), async || q.get_job_counts().await.unwrap().completed == 1).await);
    // Every attempt either worker started has ended and been counted.
    assert!(eventually(Duration::from_secs(5), async || a.stats().active == 0 && b.stats().active == 0).await);
    let (sa, sb) = (a.stats(), b.stats());
    a.close(Duration::from_secs(5)).await;
    b.close(Duration::from_secs(5)).await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "a: {sa:?} b: {sb:?}");
    assert_eq!((sa.lost_locks, sb.stalled_recovered, sa.stalled_recovered), (0, 0, 0));
    let job = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!((job.returnvalue, job.stalled_counter), (Some(json!("burnt")), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_blocking_workers_wake_on_pub_sub_and_survive_a_lost_subscriber() {
    let url = test_support::redis_url();
    let service = test_support::unique("zb");
    let connections = Connections::builder(config(&url, 2), &service).subscriber(true).build().unwrap();
    let q = Queue::new(&connections, "zb").unwrap();
    // No poll comes within the test: every pickup below is a wake-up.
    let poll = Duration::from_secs(3600);
    let subscriber = tooling::subscriber(&connections).unwrap();
    let mut events = subscriber.events();
    subscriber.subscribe(&keys_of(&q).key("drained")).await.unwrap();
    let starts: Starts = Default::default();
    let worker = Worker::start(
        &connections,
        fast().drain_delay(poll),
        vec![QueueSpec::new(q.clone(), 2, recording(starts.clone()))],
    )
    .await
    .unwrap();
    assert!(!worker.is_blocking());
    // The worker is idle once its first fetch found the queue drained (and said so); then add:
    // pub/sub wakes it, as its next poll is an hour away.
    let idle = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(event) = events.recv().await {
            if matches!(event, queue_core::tooling::SubscriberEvent::Message(m) if m.channel.ends_with(":drained")) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(idle, Ok(true), "the worker never announced the queue drained");
    drop(events);
    q.add("a", json!({}), JobOptions::default()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || q.get_job_counts().await.unwrap().completed == 1).await,
        "pub/sub did not wake the idle worker (its next poll is {poll:?} away)"
    );

    // Kill the subscriber connection and add at once: the messages are lost, the jobs are still
    // found (the reconnected subscriber wakes the worker to look).
    let mut r = raw(&url).await;
    for (id, name) in crate::support::clients_of(&mut r, &service).await {
        if name.contains(":subscriber:") {
            let _: () = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut r).await.unwrap();
        }
    }
    for i in 0..3 {
        q.add("b", json!({"i": i}), JobOptions::default()).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(20), async || q.get_job_counts().await.unwrap().completed == 4).await,
        "{:?}",
        q.get_job_counts().await.unwrap()
    );
    assert_eq!(connections.stats().blocking.open, 0);
    worker.close(Duration::from_secs(5)).await;
}

async fn survives_a_redis_restart(blocking: usize) {
    let mut server = test_support::RedisServer::start();
    let mut cfg = config(&server.url(), 3);
    cfg.command_timeout = Duration::from_millis(1000);
    cfg.connect_timeout = Duration::from_millis(500);
    let connections = Connections::builder(cfg, "restart").subscriber(true).blocking(blocking).build().unwrap();
    let q = Queue::new(&connections, "r").unwrap();
    let starts: Starts = Default::default();
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 2, recording(starts.clone()))])
        .await
        .unwrap();
    q.add("before", json!({}), JobOptions::default()).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || q.get_job_counts().await.unwrap().completed == 1).await);
    // Kill the server while the worker is idle: empty-handed and, in blocking mode, in its pop.
    let mut r = raw(&server.url()).await;
    let idle = eventually(Duration::from_secs(5), async || {
        worker.stats().active == 0 && (blocking == 0 || !blocked_clients(&mut r, "restart").await.is_empty())
    })
    .await;
    assert!(idle, "blocking={blocking}: the worker never went idle");
    drop(r);
    server.kill();
    // Restart once the outage has hit every connection the worker uses: each has failed to reconnect.
    let noticed = eventually(Duration::from_secs(10), async || {
        let stats = connections.stats();
        let failed = |role: queue_core::RoleStats| role.planned == 0 || role.connect_failures > 0;
        failed(stats.command) && failed(stats.subscriber) && failed(stats.blocking)
    })
    .await;
    assert!(noticed, "blocking={blocking}: the worker did not notice the outage: {:?}", connections.stats());
    server.restart();
    let added =
        eventually(Duration::from_secs(10), async || q.add("after", json!({}), JobOptions::default()).await.is_ok())
            .await;
    assert!(added, "the producer side did not reconnect");
    let done = eventually(Duration::from_secs(15), async || {
        q.get_job_counts().await.map(|c| c.completed >= 2 && c.waiting == 0).unwrap_or(false)
    })
    .await;
    let counts = q.get_job_counts().await;
    worker.close(Duration::from_secs(5)).await;
    assert!(done, "blocking={blocking}: the worker did not resume after the restart: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_worker_resumes_after_redis_restarts() {
    survives_a_redis_restart(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_blocking_worker_resumes_after_redis_restarts() {
    survives_a_redis_restart(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jobs_fail_with_a_reason_and_the_rest_goes_on() {
    let url = test_support::redis_url();
    let connections = Connections::builder(config(&url, 2), "it-poison").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "poison").unwrap();
    let keys = keys_of(&q).clone();
    let mut r = raw(&url).await;
    let first = q.add("ok", json!({}), JobOptions::default()).await.unwrap();
    let poison = [
        (
            "p-data",
            vec![("name", "x"), ("data", "{not json"), ("opts", "{}"), ("timestamp", "1")],
            "data is not valid JSON",
        ),
        ("p-noopts", vec![("name", "x"), ("data", "{}"), ("timestamp", "1")], "opts is missing"),
        (
            "p-opts",
            vec![("name", "x"), ("data", "{}"), ("opts", "nope"), ("timestamp", "1")],
            "opts is not a valid options object",
        ),
    ];
    for (id, fields, _) in &poison {
        let _: () = redis::AsyncCommands::hset_multiple(&mut r, keys.job(id), fields).await.unwrap();
        let _: () = redis::AsyncCommands::lpush(&mut r, keys.wait(), *id).await.unwrap();
    }
    let _: () = redis::AsyncCommands::lpush(&mut r, keys.wait(), "orphan-1").await.unwrap();
    // A hash without opts, lockless in active: Bull's own stalled check would break on it.
    let _: () = redis::AsyncCommands::hset_multiple(&mut r, keys.job("p-stalled"), &[("data", "{}")]).await.unwrap();
    let _: () = redis::AsyncCommands::lpush(&mut r, keys.active(), "p-stalled").await.unwrap();
    let last = q.add("ok", json!({}), JobOptions::default()).await.unwrap();

    let starts: Starts = Default::default();
    let worker = Worker::start(
        &connections,
        fast().max_stalled_count(0),
        vec![QueueSpec::new(q.clone(), 2, recording(starts.clone()))],
    )
    .await
    .unwrap();
    let settled = eventually(Duration::from_secs(10), async || {
        let c = q.get_job_counts().await.unwrap();
        // The stalled check counts its failure just after its script returns.
        c.completed == 2 && c.failed == 4 && c.active == 0 && c.waiting == 0 && worker.stats().stalled_failed == 1
    })
    .await;
    let stats = worker.stats();
    worker.close(Duration::from_secs(5)).await;
    assert!(settled, "{:?} {stats:?}", q.get_job_counts().await.unwrap());
    for (id, _, reason) in &poison {
        let job = q.get_job(id).await.unwrap().unwrap();
        let failed = job.failed_reason.unwrap_or_default();
        assert!(failed.contains("malformed job hash") && failed.contains(reason), "{id}: {failed}");
        assert_eq!(q.get_job_state(id).await.unwrap(), Some(JobState::Failed));
    }
    let stalled = q.get_job("p-stalled").await.unwrap().unwrap();
    assert_eq!(stalled.failed_reason.as_deref(), Some("job stalled more than allowable limit"));
    assert_eq!(stats.stalled_failed, 1);
    assert!(!starts.lock().unwrap().keys().any(|id| id.starts_with("p-")), "no handler ran for a poison job");
    assert_eq!(starts.lock().unwrap().get(&first), Some(&1));
    assert_eq!(starts.lock().unwrap().get(&last), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_two_busy_queues_stays_within_its_budget() {
    let url = test_support::redis_url();
    let service = test_support::unique("wbudget");
    let connections = Connections::builder(config(&url, 4), &service).subscriber(true).blocking(2).build().unwrap();
    let files = Queue::new(&connections, "files").unwrap();
    let hooks = Queue::new(&connections, "webhooks").unwrap();
    let jobs = |n| {
        (0..n)
            .map(|i| queue_core::NewJob::new("j", json!({"i": i}), JobOptions::default()).unwrap())
            .collect::<Vec<_>>()
    };
    files.add_bulk(jobs(1000)).await.unwrap();
    hooks.add_bulk(jobs(1000)).await.unwrap();
    let noop = handler(|_| async { Outcome::Completed(Value::Null) });
    let worker = Worker::start(
        &connections,
        fast(),
        vec![QueueSpec::new(files.clone(), 50, noop.clone()), QueueSpec::new(hooks.clone(), 50, noop)],
    )
    .await
    .unwrap();
    let mut r = raw(&url).await;
    let mut max_seen = 0;
    let mut names = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        // Every connection of the process, labelled for getWorkers() or not.
        let ours = crate::support::all_client_names(&mut r).await.into_iter().filter(|n| n.contains(&service)).count();
        max_seen = max_seen.max(ours);
        let (f, h) = (files.get_job_counts().await.unwrap(), hooks.get_job_counts().await.unwrap());
        if f.completed == 1000 && h.completed == 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = connections.stats();
    // Idle now: each queue's fetcher waits in a blocking pop on a connection that carries Bull's
    // getWorkers() label in front of its own name.
    let labels = [keys_of(&files).worker_name_prefix(), keys_of(&hooks).worker_name_prefix()];
    // The blocking connections may open only once the queues run dry, after the sampling above:
    // keep counting while waiting for them.
    let labelled = eventually(Duration::from_secs(5), async || {
        names = crate::support::all_client_names(&mut r).await.into_iter().filter(|n| n.contains(&service)).collect();
        max_seen = max_seen.max(names.len());
        labels.iter().all(|l| names.iter().any(|n| n.starts_with(&format!("{l}:{service}:blocking:"))))
    })
    .await;
    worker.close(Duration::from_secs(5)).await;
    assert!(labelled, "{names:?}");
    assert_eq!(files.get_job_counts().await.unwrap().completed, 1000);
    assert_eq!(hooks.get_job_counts().await.unwrap().completed, 1000);
    assert!(max_seen <= 4, "connections of a process with a budget of 4 seen at once: {max_seen}");
    assert!(max_seen >= 3, "command, subscriber and blocking connections should all have been seen: {max_seen}");
    assert!(stats.open <= 4, "{stats:?}");
    assert!(names.len() <= 4, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_created_repeatables_keep_running_on_our_worker_until_removed() {
    let url = test_support::redis_url();
    let cfg = config(&url, 2);
    let peer = json!({"redis": url, "prefix": cfg.prefix, "queue": "rep"});
    let connections = Connections::builder(cfg, "it-repeat").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "rep").unwrap();
    let every = json!({"every": 1000});
    let cron = json!({"cron": "*/1 * * * * *", "tz": "Europe/Madrid"});
    let mut args = peer.clone();
    args["jobs"] = json!([
        {"name": "tick", "data": {"kind": "every"}, "opts": {"repeat": every}},
        {"name": "cronjob", "data": {"kind": "cron"}, "opts": {"jobId": "myrep", "repeat": cron}},
    ]);
    test_support::NodePeer::run("add", args);
    let starts: Starts = Default::default();
    let worker = Worker::start(
        &connections,
        fast().guard_interval(Duration::from_millis(200)),
        vec![QueueSpec::new(q.clone(), 2, recording(starts.clone()))],
    )
    .await
    .unwrap();
    let ran = eventually(Duration::from_secs(15), async || q.get_job_counts().await.unwrap().completed >= 6).await;
    assert!(ran, "{:?}", q.get_job_counts().await.unwrap());

    // Every completed iteration has the id Bull would give it.
    let completed = q.get_jobs(&[JobState::Completed], 0, -1, true).await.unwrap();
    let mut kinds = HashMap::<String, usize>::new();
    for job in completed.into_iter().flatten() {
        let repeat = job.opts.repeat.clone().unwrap();
        let key = repeat.key.clone().unwrap();
        assert_eq!(job.id, queue_core::tooling::iteration_id(&job.name, &repeat, &key, job.opts.prev_millis.unwrap()));
        assert_eq!(job.opts.prev_millis.unwrap() % 1000, 0);
        *kinds.entry(job.data["kind"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert!(kinds["every"] >= 2 && kinds["cron"] >= 2, "{kinds:?}");

    // Removing them (through Node) stops them: at most the iteration already scheduled runs.
    for (name, repeat) in
        [("tick", every), ("cronjob", json!({"cron": "*/1 * * * * *", "tz": "Europe/Madrid", "jobId": "myrep"}))]
    {
        let mut args = peer.clone();
        args["name"] = json!(name);
        args["repeat"] = repeat;
        assert_eq!(test_support::NodePeer::run("removeRepeatable", args), true);
    }
    // Only fetching an iteration schedules the next, so once no iteration is left in any state
    // and no repeatable is registered, none can come any more.
    let settled = eventually(Duration::from_secs(10), async || {
        let c = q.get_job_counts().await.unwrap();
        (c.delayed, c.waiting, c.active) == (0, 0, 0)
    })
    .await;
    let counts = q.get_job_counts().await.unwrap();
    let mut r = raw(&url).await;
    let registered: Vec<String> = redis::AsyncCommands::zrange(&mut r, keys_of(&q).repeat(), 0, -1).await.unwrap();
    worker.close(Duration::from_secs(5)).await;
    assert!(settled, "iterations kept coming after removal: {counts:?}");
    assert_eq!((counts.delayed, counts.waiting), (0, 0), "{counts:?}");
    assert_eq!(registered, Vec::<String>::new(), "a removed repeatable is still registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_timeouts_fail_the_attempt_not_the_worker() {
    let connections =
        Connections::builder(config(&test_support::redis_url(), 2), "it-panic").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "panics").unwrap();
    let panicky = q.add("panic", json!({}), JobOptions::default()).await.unwrap();
    let slow = q.add("slow", json!({}), JobOptions::default().timeout(200)).await.unwrap();
    let fine = q.add("fine", json!({}), JobOptions::default()).await.unwrap();
    let h = handler(|job| async move {
        match job.name() {
            "panic" => panic!("kaboom {}", job.id()),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Outcome::Completed(Value::Null)
            }
            _ => Outcome::Completed(json!("fine")),
        }
    });
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 3, h)]).await.unwrap();
    let settled = eventually(Duration::from_secs(10), async || {
        let c = q.get_job_counts().await.unwrap();
        c.failed == 2 && c.completed == 1
    })
    .await;
    worker.close(Duration::from_secs(2)).await;
    assert!(settled, "{:?}", q.get_job_counts().await.unwrap());
    assert_eq!(
        q.get_job(&panicky).await.unwrap().unwrap().failed_reason,
        Some(format!("handler panicked: kaboom {panicky}"))
    );
    assert_eq!(
        q.get_job(&slow).await.unwrap().unwrap().failed_reason.as_deref(),
        Some("Promise timed out after 200 milliseconds")
    );
    assert_eq!(q.get_job(&fine).await.unwrap().unwrap().returnvalue, Some(json!("fine")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lock_writes_nothing() {
    let url = test_support::redis_url();
    let connections = Connections::builder(config(&url, 2), "it-lost").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "lost").unwrap();
    let id = q.add("a", json!({}), JobOptions::default()).await.unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let h = {
        let release = release.clone();
        handler(move |_| {
            let release = release.clone();
            async move {
                release.notified().await;
                Outcome::Completed(json!("stale"))
            }
        })
    };
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 1, h)]).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || q.get_job_counts().await.unwrap().active == 1).await);
    // Another owner takes the job over (as a stall recovery and a second worker would).
    let mut r = raw(&url).await;
    let _: () = redis::AsyncCommands::set(&mut r, keys_of(&q).lock(&id), "another-worker").await.unwrap();
    // The next renewal, while the handler still runs, finds the lock taken.
    let found = eventually(Duration::from_secs(5), async || worker.stats().locks_lost_at_renewal == 1).await;
    assert!(found, "{:?}", worker.stats());
    release.notify_one();
    assert!(eventually(Duration::from_secs(5), async || worker.stats().lost_locks == 1).await, "{:?}", worker.stats());
    worker.close(Duration::from_secs(2)).await;
    let job = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!((job.returnvalue, job.finished_on), (None, None));
    assert_eq!(q.get_job_state(&id).await.unwrap(), Some(JobState::Active));
    let owner: String = redis::AsyncCommands::get(&mut r, keys_of(&q).lock(&id)).await.unwrap();
    assert_eq!(owner, "another-worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_jobs_in_hand_and_leaves_overdue_ones_to_stall_recovery() {
    let url = test_support::redis_url();
    let service = test_support::unique("it-close");
    let connections = Connections::builder(config(&url, 2), &service).blocking(1).build().unwrap();
    let q = Queue::new(&connections, "closing").unwrap();
    let quick = q.add("quick", json!({"sleepMs": 300}), JobOptions::default()).await.unwrap();
    let long = q.add("long", json!({"sleepMs": 20_000}), JobOptions::default()).await.unwrap();
    let starts: Starts = Default::default();
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 2, recording(starts.clone()))])
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), async || q.get_job_counts().await.unwrap().active == 2).await);
    worker.close(Duration::from_secs(1)).await;
    assert_eq!(q.get_job_state(&quick).await.unwrap(), Some(JobState::Completed));
    assert_eq!(q.get_job_state(&long).await.unwrap(), Some(JobState::Active), "left for stall recovery, not dropped");
    // A closed worker takes no job: it holds no blocking connection and has no pop waiting on the
    // server, and its fetch loops have ended (close awaited them).
    let mut r = raw(&url).await;
    assert_eq!(connections.stats().blocking.in_use, 0, "a closed worker holds a blocking connection");
    assert_eq!(blocked_clients(&mut r, &service).await, Vec::<String>::new(), "a closed worker left a pop waiting");
    q.add("after-close", json!({}), JobOptions::default()).await.unwrap();
    assert_eq!(q.get_job_counts().await.unwrap().waiting, 1, "a closed worker takes no job");
    // A successor recovers the abandoned job once its lock expires.
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 2, recording(Default::default()))])
        .await
        .unwrap();
    let recovered = eventually(Duration::from_secs(10), async || {
        q.get_job(&long).await.unwrap().is_some_and(|j| j.stalled_counter == 1)
    })
    .await;
    worker.close(Duration::from_millis(100)).await;
    assert!(recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_pause_stops_this_worker_only() {
    let url = test_support::redis_url();
    let service = test_support::unique("it-lpause");
    let connections = Connections::builder(config(&url, 2), &service).blocking(1).build().unwrap();
    let q = Queue::new(&connections, "lpause").unwrap();
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 1, recording(Default::default()))])
        .await
        .unwrap();
    q.add("a", json!({"sleepMs": 200}), JobOptions::default()).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || q.get_job_counts().await.unwrap().active == 1).await);
    worker.pause_local().await;
    assert_eq!(q.get_job_counts().await.unwrap().completed, 1, "pause_local waits for the job in hand");
    // Paused, the worker takes no job: it holds no blocking connection and has no pop waiting on
    // the server (pause_local ended it), and its fetch loops have ended.
    let mut r = raw(&url).await;
    assert_eq!(connections.stats().blocking.in_use, 0, "a paused worker holds a blocking connection");
    assert_eq!(blocked_clients(&mut r, &service).await, Vec::<String>::new(), "a paused worker left a pop waiting");
    let before = q.get_job_counts().await.unwrap().completed;
    q.add("b", json!({}), JobOptions::default()).await.unwrap();
    let counts = q.get_job_counts().await.unwrap();
    assert_eq!((counts.completed, counts.waiting), (before, 1));
    assert!(!q.is_paused().await.unwrap(), "a local pause is not a global one");
    worker.resume_local();
    assert!(eventually(Duration::from_secs(5), async || q.get_job_counts().await.unwrap().waiting == 0).await);
    worker.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_spaces_jobs_and_drops_none() {
    let connections =
        Connections::builder(config(&test_support::redis_url(), 2), "it-limit").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "limited").unwrap();
    let jobs = (0..12).map(|i| queue_core::NewJob::new("j", json!({"i": i}), JobOptions::default()).unwrap()).collect();
    q.add_bulk(jobs).await.unwrap();
    let limit = queue_core::RateLimit { max: 4, duration: Duration::from_millis(500), per_group: false };
    let spec = QueueSpec::new(q.clone(), 4, recording(Default::default())).limiter(limit);
    let worker =
        Worker::start(&connections, fast().guard_interval(Duration::from_millis(100)), vec![spec]).await.unwrap();
    let done = eventually(Duration::from_secs(15), async || q.get_job_counts().await.unwrap().completed == 12).await;
    worker.close(Duration::from_secs(2)).await;
    assert!(done, "{:?}", q.get_job_counts().await.unwrap());
    let mut started: Vec<i64> = q
        .get_jobs(&[JobState::Completed], 0, -1, true)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.unwrap().processed_on.unwrap())
        .collect();
    started.sort();
    for (i, t) in started.iter().enumerate() {
        let in_window = started[i..].iter().take_while(|u| **u < t + 500).count();
        assert!(in_window <= 4, "{in_window} jobs started within 500 ms of {t}: {started:?}");
    }
}

/// How many times a job of the mixed-fleet test must run, from its data.
fn expected_runs(data: &Value) -> u32 {
    // Both kinds run twice: failAlways has 2 attempts, failTimes 1 succeeds on the second.
    if data["failAlways"] == true || data["failTimes"] == 1 { 2 } else { 1 }
}

fn mixed_job(i: u64) -> (Value, Value) {
    let mut data = json!({"i": i, "path": format!("/data/file{i}.mp4")});
    let mut opts = json!({});
    if i.is_multiple_of(10) {
        opts["delay"] = json!(i % 300);
    }
    if i.is_multiple_of(7) {
        opts["priority"] = json!(1 + i % 3);
    }
    if i.is_multiple_of(11) {
        data["failTimes"] = json!(1);
        opts["attempts"] = json!(3);
        opts["backoff"] = json!({"type": "fixed", "delay": 50});
    } else if i.is_multiple_of(13) {
        data["failAlways"] = json!(true);
        opts["attempts"] = json!(2);
    }
    (data, opts)
}

fn kill_term(child: &std::process::Child) {
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_with_node_bull_processes_every_job_exactly_once() {
    const TOTAL: u64 = 5000;
    let url = test_support::redis_url();
    let cfg = config(&url, 3);
    let peer = json!({"redis": url, "prefix": cfg.prefix, "queue": "mixed"});
    let connections = Connections::builder(cfg, "it-mixed").subscriber(true).blocking(1).build().unwrap();
    let q = Queue::new(&connections, "mixed").unwrap();

    let mut events = queue_core::QueueEvents::new(&connections, &[&q]).await.unwrap();
    let our_view: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
    let listener = {
        let our_view = our_view.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let queue_core::QueueEvent::Completed { job_id, .. } = event {
                    our_view.lock().unwrap().insert(job_id);
                }
            }
        })
    };
    let mut args = peer.clone();
    args["events"] = json!(["completed"]);
    args["durationMs"] = json!(180_000);
    let node_events = test_support::NodePeer::spawn("events", args);
    test_support::NodePeer::wait_ready(&node_events, Duration::from_secs(30));
    let mut args = peer.clone();
    args["concurrency"] = json!(10);
    args["timeoutMs"] = json!(180_000);
    let node_worker = test_support::NodePeer::spawn("process", args);
    test_support::NodePeer::wait_ready(&node_worker, Duration::from_secs(30));
    let starts: Starts = Default::default();
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 10, recording(starts.clone()))])
        .await
        .unwrap();

    // Half the jobs from Node, half from us, interleaved in chunks.
    for chunk in 0..10u64 {
        let ids: Vec<u64> = (chunk * 500..(chunk + 1) * 500).collect();
        if chunk % 2 == 0 {
            let jobs: Vec<Value> = ids
                .iter()
                .map(|i| mixed_job(*i))
                .map(|(data, opts)| json!({"name": "n", "data": data, "opts": opts}))
                .collect();
            let mut args = peer.clone();
            args["jobs"] = json!(jobs);
            tokio::task::spawn_blocking(move || test_support::NodePeer::run("add", args)).await.unwrap();
        } else {
            let jobs = ids
                .iter()
                .map(|i| {
                    let (data, opts) = mixed_job(*i);
                    let opts: JobOptions = serde_json::from_value(opts).unwrap();
                    queue_core::NewJob::new("r", data, opts).unwrap()
                })
                .collect();
            q.add_bulk(jobs).await.unwrap();
        }
    }
    let finished = eventually(Duration::from_secs(120), async || {
        let c = q.get_job_counts().await.unwrap();
        c.completed + c.failed == TOTAL
    })
    .await;
    kill_term(&node_worker);
    let node_run = tokio::task::spawn_blocking(move || test_support::NodePeer::finish(node_worker)).await.unwrap();
    worker.close(Duration::from_secs(5)).await;
    let counts = q.get_job_counts().await.unwrap();
    assert!(finished, "{counts:?}");
    assert_eq!((counts.waiting, counts.active, counts.delayed, counts.paused), (0, 0, 0, 0), "{counts:?}");
    let node_counts = test_support::NodePeer::run("counts", peer.clone());
    assert_eq!(serde_json::to_value(counts).unwrap(), node_counts);

    // Every job ran exactly as often as its attempts require, whichever side ran it.
    let mut runs: HashMap<String, u32> = starts.lock().unwrap().clone();
    let ours = runs.len();
    for start in node_run["starts"].as_array().unwrap() {
        *runs.entry(start["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert!(ours > 0 && !node_run["starts"].as_array().unwrap().is_empty(), "both sides must take jobs");
    let all = q.get_jobs(&[JobState::Completed, JobState::Failed], 0, -1, true).await.unwrap();
    assert_eq!(all.len() as u64, TOTAL);
    let mut seen = std::collections::HashSet::new();
    for job in all.into_iter().map(Option::unwrap) {
        assert!(seen.insert(job.id.clone()), "job {} is in two final states", job.id);
        assert_eq!(runs.get(&job.id).copied().unwrap_or(0), expected_runs(&job.data), "job {}: {:?}", job.id, job.data);
        let failed = job.data["failAlways"] == true;
        assert_eq!(
            job.failed_reason.is_some() && job.finished_on.is_some() && job.returnvalue.is_none(),
            failed,
            "{job:?}"
        );
    }

    // Each side's global events saw the other side's completions.
    kill_term(&node_events);
    let node_seen = tokio::task::spawn_blocking(move || test_support::NodePeer::finish(node_events)).await.unwrap();
    let node_completed: std::collections::HashSet<String> =
        node_seen.as_array().unwrap().iter().map(|e| e["args"][0].as_str().unwrap().to_owned()).collect();
    let completed_by_us = starts.lock().unwrap().keys().filter(|id| node_completed.contains(*id)).count();
    assert!(completed_by_us > 0, "Node saw none of our completions");
    let node_done: Vec<String> =
        node_run["completed"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    assert!(!node_done.is_empty());
    let missed = |view: &std::collections::HashSet<String>| node_done.iter().filter(|id| !view.contains(*id)).count();
    let all_seen = eventually(Duration::from_secs(5), async || missed(&our_view.lock().unwrap()) == 0).await;
    listener.abort();
    assert!(all_seen, "our QueueEvents missed {} of Node's completions", missed(&our_view.lock().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_declares_itself_and_its_budget_in_a_heartbeat() {
    let cfg = config(&test_support::redis_url(), 3);
    let connections = Connections::builder(cfg, "it-heartbeat").subscriber(true).blocking(1).build().unwrap();
    let q = Queue::new(&connections, "beats").unwrap();
    // Before a worker starts, the process's heartbeat (if written yet) lists no queue.
    assert!(connections.live_heartbeats().await.unwrap().iter().all(|b| b.queues.is_empty()));
    let worker =
        Worker::start(&connections, fast(), vec![QueueSpec::new(q, 1, recording(Default::default()))]).await.unwrap();
    let mut beats = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), async || {
            beats = connections.live_heartbeats().await.unwrap();
            beats.iter().any(|b| !b.queues.is_empty())
        })
        .await
    );
    worker.close(Duration::from_secs(1)).await;
    assert_eq!(beats.len(), 1);
    let beat = &beats[0];
    assert_eq!(
        (beat.service.as_str(), beat.queues.clone(), beat.budget, beat.planned),
        ("it-heartbeat", vec!["beats".to_owned()], 3, ConnectionPlan { command: 1, subscriber: 1, blocking: 1 })
    );
    assert!(Queue::new(&connections, "__hb__").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_declares_itself_and_close_takes_its_heartbeat_away() {
    // A producer-only process: no worker, the budget defaults to its plan.
    let mut cfg = config(&test_support::redis_url(), 1);
    cfg.max_connections = None;
    let connections = Connections::builder(cfg, "it-producer").build().unwrap();
    // A fact the service adds, read at each beat.
    let uploads = Arc::new(std::sync::atomic::AtomicU64::new(7));
    let read = uploads.clone();
    connections.report_in_heartbeat("store", move || json!({"uploads": read.load(Ordering::Relaxed)}));
    let mut beats = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), async || {
            beats = connections.live_heartbeats().await.unwrap();
            !beats.is_empty()
        })
        .await
    );
    let beat = &beats[0];
    assert_eq!((beat.service.as_str(), beat.budget, beat.queues.len()), ("it-producer", 1, 0));
    assert_eq!(beat.facts["store"], json!({"uploads": 7}), "{beat:?}");
    assert_eq!(beat.planned, ConnectionPlan { command: 1, subscriber: 0, blocking: 0 });
    let stats = serde_json::to_value(connections.stats()).unwrap();
    assert_eq!(stats["command"]["planned"], 1, "{stats}");

    let q = Queue::new(&connections, "closing").unwrap();
    connections.close().await;
    let observer = Connections::builder(connections.config().clone(), "it-observer").heartbeat(None).build().unwrap();
    assert!(observer.live_heartbeats().await.unwrap().is_empty(), "the record is deleted at close");
    assert!(matches!(q.add("x", serde_json::json!({}), JobOptions::default()).await, Err(Error::Closed)));
    assert_eq!(connections.stats().open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_report_progress_and_logs_seen_by_node() {
    let url = test_support::redis_url();
    let cfg = config(&url, 2);
    let peer = json!({"redis": url, "prefix": cfg.prefix, "queue": "talk"});
    let connections = Connections::builder(cfg, "it-talk").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "talk").unwrap();
    let id = q.add("a", json!({}), JobOptions::default()).await.unwrap();
    let h = handler(|job| async move {
        job.log(&format!("attempt {}", job.attempt())).await.unwrap();
        job.progress(json!({"step": 2, "of": 3})).await.unwrap();
        Outcome::Completed(json!("ok"))
    });
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 1, h)]).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || q.get_job_counts().await.unwrap().completed == 1).await);
    worker.close(Duration::from_secs(1)).await;
    let mut args = peer.clone();
    args["id"] = json!(id);
    let theirs = test_support::NodePeer::run("get", args.clone());
    assert_eq!(theirs["progress"], json!({"step": 2, "of": 3}));
    assert_eq!(theirs["returnvalue"], "ok");
    assert_eq!(test_support::NodePeer::run("logs", args), json!({"logs": ["attempt 1"], "count": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_before_the_handler_future_exists_is_a_failed_attempt() {
    let connections =
        Connections::builder(config(&test_support::redis_url(), 2), "it-early").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "early").unwrap();
    let id = q.add("early", json!({}), JobOptions::default()).await.unwrap();
    let h: queue_core::Handler = Arc::new(|job: queue_core::ActiveJob| -> queue_core::HandlerFuture {
        if job.name() == "early" {
            panic!("no future for {}", job.id());
        }
        Box::pin(async { Outcome::Completed(Value::Null) })
    });
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 1, h)]).await.unwrap();
    let failed = eventually(Duration::from_secs(5), async || q.get_job_counts().await.unwrap().failed == 1).await;
    let stats = worker.stats();
    worker.close(Duration::from_secs(1)).await;
    assert!(failed, "{:?} {stats:?}", q.get_job_counts().await.unwrap());
    assert_eq!(stats.active, 0);
    let reason = q.get_job(&id).await.unwrap().unwrap().failed_reason.unwrap();
    assert_eq!(reason, format!("handler panicked: no future for {id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_of_a_job_taken_again_by_the_same_worker_writes_nothing() {
    let url = test_support::redis_url();
    let connections = Connections::builder(config(&url, 2), "it-stale").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "stale").unwrap();
    let lock = Duration::from_millis(1000);
    let release = Arc::new(tokio::sync::Notify::new());
    let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let h = {
        let (release, starts) = (release.clone(), starts.clone());
        handler(move |_| {
            let (release, starts) = (release.clone(), starts.clone());
            async move {
                if starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    release.notified().await;
                    Outcome::Completed(json!("stale"))
                } else {
                    // Longer than the lock: only renewal keeps this attempt's lock.
                    tokio::time::sleep(lock * 5 / 2).await;
                    Outcome::Completed(json!("fresh"))
                }
            }
        })
    };
    let settings = fast().lock_duration(lock).stalled_interval(Duration::from_millis(500));
    let worker = Worker::start(&connections, settings, vec![QueueSpec::new(q.clone(), 2, h)]).await.unwrap();
    let id = q.add("a", json!({}), JobOptions::default()).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || starts.load(std::sync::atomic::Ordering::SeqCst) == 1).await);
    // What a stall recovery does when the first attempt's lock has expired: back to waiting.
    let mut r = raw(&url).await;
    let _: () = redis::AsyncCommands::del(&mut r, keys_of(&q).lock(&id)).await.unwrap();
    let _: () = redis::AsyncCommands::lrem(&mut r, keys_of(&q).active(), 1, &id).await.unwrap();
    let _: () = redis::AsyncCommands::rpush(&mut r, keys_of(&q).wait(), &id).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || starts.load(std::sync::atomic::Ordering::SeqCst) == 2).await);
    release.notify_one();
    // The worker counts a completion just after its script returns: wait for the count too.
    let done = eventually(Duration::from_secs(10), async || {
        q.get_job_counts().await.unwrap().completed == 1 && worker.stats().completed == 1
    })
    .await;
    let stats = worker.stats();
    worker.close(Duration::from_secs(2)).await;
    assert!(done, "{:?} {stats:?}", q.get_job_counts().await.unwrap());
    let job = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(job.returnvalue, Some(json!("fresh")), "the stale attempt's result must be discarded");
    assert_eq!((stats.lost_locks, stats.completed, stats.stalled_recovered), (1, 1, 0), "{stats:?}");
    assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn starting_a_worker_against_an_unreachable_redis_is_an_error_not_a_panic() {
    let mut cfg = config("redis://127.0.0.1:1", 3);
    cfg.connect_timeout = Duration::from_millis(200);
    cfg.command_timeout = Duration::from_millis(200);
    let connections = Connections::builder(cfg, "it-down").subscriber(true).blocking(1).build().unwrap();
    let q = Queue::new(&connections, "down").unwrap();
    let started = Worker::start(&connections, fast(), vec![QueueSpec::new(q, 1, recording(Default::default()))]).await;
    let err = started.expect_err("no Redis to subscribe to");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_blocking_worker_announces_drained_once() {
    // A private server, so that its command statistics count this worker's blocking pops alone.
    let server = test_support::RedisServer::start();
    let connections =
        Connections::builder(config(&server.url(), 3), "it-drained").subscriber(true).blocking(1).build().unwrap();
    let q = Queue::new(&connections, "quiet").unwrap();
    let subscriber = tooling::subscriber(&connections).unwrap();
    let mut events = subscriber.events();
    let marker = keys_of(&q).key("test-marker");
    subscriber.subscribe(&keys_of(&q).key("drained")).await.unwrap();
    subscriber.subscribe(&marker).await.unwrap();
    let worker = Worker::start(
        &connections,
        fast().drain_delay(Duration::from_millis(100)),
        vec![QueueSpec::new(q.clone(), 1, recording(Default::default()))],
    )
    .await
    .unwrap();
    let mut r = raw(&server.url()).await;
    let idled = eventually(Duration::from_secs(10), async || command_calls(&mut r, "blmove").await >= 15).await;
    assert!(idled, "the worker did not go through 15 idle block periods");
    // One subscriber connection receives in publish order: once the marker is here, so is every
    // `drained` published before it.
    let _: () = redis::AsyncCommands::publish(&mut r, &marker, "end").await.unwrap();
    let (mut drained, mut marked) = (0, false);
    let until = Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(event)) = tokio::time::timeout_at(until.into(), events.recv()).await {
        match event {
            queue_core::tooling::SubscriberEvent::Message(m) if m.channel == marker => {
                marked = true;
                break;
            }
            queue_core::tooling::SubscriberEvent::Message(m) if m.channel.ends_with(":drained") => drained += 1,
            _ => {}
        }
    }
    worker.close(Duration::from_secs(1)).await;
    assert!(marked, "the marker published after the idle periods never arrived");
    assert_eq!(drained, 1, "15 idle block periods should announce drained once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_while_jobs_flow_leaves_none_taken_and_forgotten() {
    let connections =
        Connections::builder(config(&test_support::redis_url(), 2), "it-flow").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "flow").unwrap();
    for round in 0..5 {
        let worker =
            Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 8, recording(Default::default()))])
                .await
                .unwrap();
        let jobs = (0..100)
            .map(|i| queue_core::NewJob::new("j", json!({"sleepMs": 5, "i": i}), JobOptions::default()).unwrap());
        q.add_bulk(jobs.collect()).await.unwrap();
        // Close at a different point of the flow each round: after 0, 10, … 40 of the 100 jobs.
        assert!(eventually(Duration::from_secs(10), async || worker.stats().completed >= 10 * round).await);
        worker.close(Duration::from_secs(10)).await;
        let counts = q.get_job_counts().await.unwrap();
        assert_eq!(counts.active, 0, "round {round}: a job was taken and then dropped: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handlers_fail_jobs_whose_data_does_not_decode_and_go_on() {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Resize {
        path: String,
        width: u32,
    }
    let connections = Connections::builder(config(&test_support::redis_url(), 2), "it-typed").build().unwrap();
    let q = Queue::new(&connections, "typed").unwrap();
    let good = q.add("resize", Resize { path: "/a.png".into(), width: 64 }, JobOptions::default()).await.unwrap();
    // Written by another producer: retries cannot help, so one attempt only, whatever `attempts` says.
    let bad = q.add("resize", json!({"path": 7}), JobOptions::default().attempts(5)).await.unwrap();
    let last = q.add("resize", json!({"path": "/b.png", "width": 32}), JobOptions::default()).await.unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let h = {
        let seen = seen.clone();
        queue_core::typed_handler(move |job, data: Resize| {
            seen.lock().unwrap().push(job.id().to_owned());
            async move { Outcome::Completed(json!({"thumb": format!("{}@{}", data.path, data.width)})) }
        })
    };
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 1, h)]).await.unwrap();
    let settled = eventually(Duration::from_secs(10), async || {
        let c = q.get_job_counts().await.unwrap();
        c.completed == 2 && c.failed == 1
    })
    .await;
    worker.close(Duration::from_secs(5)).await;
    assert!(settled, "{:?}", q.get_job_counts().await.unwrap());
    let failed = q.get_job(&bad).await.unwrap().unwrap();
    let reason = failed.failed_reason.unwrap_or_default();
    assert!(reason.contains("does not decode") && reason.contains("invalid type"), "{reason}");
    assert_eq!(failed.attempts_made, 1);
    assert_eq!(q.get_job(&good).await.unwrap().unwrap().returnvalue, Some(json!({"thumb": "/a.png@64"})));
    assert_eq!(*seen.lock().unwrap(), vec![good, last]);
}

/// A close that comes just as the fetch loop goes back to its blocking pop after a completion
/// must end the pop, not wait out the drain delay; and what the pop took must not be forgotten.
/// Even rounds close as the handler returns (during the completion); odd rounds close when the
/// fetch after it announces `drained`, which is the instant the loop heads for `BLMOVE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_right_after_a_completion_ends_the_blocking_pop() {
    let connections = Connections::builder(config(&test_support::redis_url(), 3), "it-unblock")
        .subscriber(true)
        .blocking(1)
        .build()
        .unwrap();
    let q = Queue::new(&connections, "unblock").unwrap();
    let subscriber = tooling::subscriber(&connections).unwrap();
    let mut events = subscriber.events();
    let drained_channel = keys_of(&q).key("drained");
    subscriber.subscribe(&drained_channel).await.unwrap();
    let mut drained = async || loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(queue_core::tooling::SubscriberEvent::Message(m))) if m.channel == drained_channel => return,
            Ok(Ok(_)) => {}
            other => panic!("no drained message: {other:?}"),
        }
    };
    let settings = fast().drain_delay(Duration::from_secs(30));
    let mut added = 0;
    for round in 0..50u64 {
        let (completed_tx, mut completed) = tokio::sync::mpsc::unbounded_channel();
        let signalling = handler(move |job| {
            let completed_tx = completed_tx.clone();
            async move {
                let _ = completed_tx.send(());
                Outcome::Completed(json!({"id": job.id()}))
            }
        });
        let worker = Worker::start(&connections, settings.clone(), vec![QueueSpec::new(q.clone(), 1, signalling)])
            .await
            .unwrap();
        assert!(worker.is_blocking());
        drained().await; // the first fetch found nothing: the loop is in its blocking pop
        q.add("j", json!({"round": round}), JobOptions::default()).await.unwrap();
        added += 1;
        tokio::time::timeout(Duration::from_secs(10), completed.recv()).await.expect("the job runs").unwrap();
        if round % 2 == 1 {
            drained().await;
        }
        let started = Instant::now();
        worker.close(Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "round {round}: close waited {took:?} for the blocking pop");
        let counts = q.get_job_counts().await.unwrap();
        assert_eq!(counts.active, 0, "round {round}: a job was taken and then forgotten: {counts:?}");
        assert_eq!(counts.completed + counts.waiting, added, "round {round}: {counts:?}");
    }
}

/// `StopWhen::MaxJobs(n)` takes exactly n jobs: neither the fetch loops (several at once with
/// concurrency) nor a completion fetching the next job in the same call take one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_jobs_takes_exactly_that_many_and_run_until_returns_final_stats() {
    let connections =
        Connections::builder(config(&test_support::redis_url(), 2), "it-maxjobs").blocking(1).build().unwrap();
    for (concurrency, max) in [(1, 5), (4, 5), (4, 2), (1, 0)] {
        let q = Queue::new(&connections, &format!("max-{concurrency}-{max}")).unwrap();
        let jobs = (0..12).map(|i| queue_core::NewJob::new("j", json!({"sleepMs": 20, "i": i}), JobOptions::default()));
        q.add_bulk(jobs.map(Result::unwrap).collect()).await.unwrap();
        let starts: Starts = Default::default();
        let settings = fast().drain_delay(Duration::from_secs(30)).stop_when(StopWhen::MaxJobs(max));
        let spec = QueueSpec::new(q.clone(), concurrency, recording(starts.clone()));
        let worker = Worker::start(&connections, settings, vec![spec]).await.unwrap();
        let stats = tokio::time::timeout(
            Duration::from_secs(20),
            worker.run_until(std::future::pending(), Duration::from_secs(10)),
        )
        .await
        .expect("the worker stops by itself");
        let case = format!("concurrency {concurrency}, max {max}");
        assert_eq!((stats.completed, stats.active), (max, 0), "{case}: {stats:?}");
        let counts = q.get_job_counts().await.unwrap();
        assert_eq!((counts.completed, counts.active, counts.waiting), (max, 0, 12 - max), "{case}: {counts:?}");
        assert_eq!(starts.lock().unwrap().len() as u64, max, "{case}: handlers started");
    }
}

/// `StopWhen::Drained` processes what is waiting and stops, without blocking for the drain
/// delay, in both fetch modes; a delayed job is not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_processes_what_is_waiting_and_stops() {
    for blocking in [1, 0] {
        let connections =
            Connections::builder(config(&test_support::redis_url(), 2), "it-drain").blocking(blocking).build().unwrap();
        let q = Queue::new(&connections, "drain").unwrap();
        let jobs = (0..6).map(|i| queue_core::NewJob::new("j", json!({"sleepMs": 10, "i": i}), JobOptions::default()));
        q.add_bulk(jobs.map(Result::unwrap).collect()).await.unwrap();
        q.add("later", json!({}), JobOptions::default().delay(60_000)).await.unwrap();
        let settings = fast().drain_delay(Duration::from_secs(30)).stop_when(StopWhen::Drained);
        let worker =
            Worker::start(&connections, settings, vec![QueueSpec::new(q.clone(), 2, recording(Default::default()))])
                .await
                .unwrap();
        assert_eq!(worker.is_blocking(), blocking == 1);
        let stats = tokio::time::timeout(
            Duration::from_secs(20),
            worker.run_until(std::future::pending(), Duration::from_secs(10)),
        )
        .await
        .expect("the worker stops by itself");
        assert_eq!((stats.completed, stats.active), (6, 0), "blocking {blocking}: {stats:?}");
        let counts = q.get_job_counts().await.unwrap();
        assert_eq!((counts.completed, counts.active, counts.waiting, counts.delayed), (6, 0, 0, 1), "{counts:?}");
    }
}

/// A service's shape: run until the shutdown future resolves, let the job in hand finish, and
/// return the final counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_lets_the_job_in_hand_finish_after_shutdown() {
    let connections =
        Connections::builder(config(&test_support::redis_url(), 2), "it-rununtil").blocking(1).build().unwrap();
    let q = Queue::new(&connections, "service").unwrap();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let slow = handler(move |_| {
        let started_tx = started_tx.clone();
        async move {
            if let Some(tx) = started_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            Outcome::Completed(json!("slept"))
        }
    });
    let id = q.add("j", json!({}), JobOptions::default()).await.unwrap();
    let worker = Worker::start(&connections, fast(), vec![QueueSpec::new(q.clone(), 1, slow)]).await.unwrap();
    let shutdown = async {
        started.await.unwrap();
    };
    let stats = worker.run_until(shutdown, Duration::from_secs(10)).await;
    assert_eq!((stats.completed, stats.active), (1, 0), "{stats:?}");
    assert_eq!(q.get_job_state(&id).await.unwrap(), Some(JobState::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_races_a_finish_is_not_a_lost_lock() {
    let url = test_support::redis_url();
    let connections = Connections::builder(config(&url, 2), "it-race").build().unwrap();
    let q = Queue::new(&connections, "race").unwrap();
    let jobs: Vec<_> = (0..300)
        .map(|i| queue_core::NewJob { name: format!("j{i}"), data: json!({}), opts: JobOptions::default() })
        .collect();
    q.add_bulk(jobs).await.unwrap();
    // Renewals every 2 ms: many find a job whose completion just deleted its lock.
    let mut settings = fast();
    settings.lock_renew_time = Duration::from_millis(2);
    let h = handler(|_| async { Outcome::Completed(json!(true)) });
    let worker = Worker::start(&connections, settings, vec![QueueSpec::new(q.clone(), 4, h)]).await.unwrap();
    let done = eventually(Duration::from_secs(30), async || q.get_job_counts().await.unwrap().completed == 300).await;
    assert!(done, "{:?}", q.get_job_counts().await.unwrap());
    let stats = worker.stats();
    worker.close(Duration::from_secs(2)).await;
    assert!(stats.locks_renewed > 0, "renewals ran: {stats:?}");
    assert_eq!((stats.locks_lost_at_renewal, stats.lost_locks), (0, 0), "{stats:?}");
}
