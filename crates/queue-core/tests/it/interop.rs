//! Interop with the real npm package `bull@4.16.5` (pinned in tests/node/package-lock.json),
//! in both directions: jobs we add are run by a Node Bull worker, jobs Node adds are read back
//! by our getters, and operations on one side are seen by the other.

use queue_core::tooling::keys_of;
use queue_core::{Backoff, Connections, JobOptions, JobState, KeepJobs, QueueAdmin, RepeatOptions};
use serde_json::{Value, json};
use test_support::NodePeer;

use crate::support::config;

struct Pair {
    queue: QueueAdmin,
    args: Value,
}

impl Pair {
    fn new(name: &str) -> Self {
        let cfg = config(&test_support::redis_url(), 1);
        let args = json!({"redis": test_support::redis_url(), "prefix": cfg.prefix, "queue": name});
        let connections = Connections::builder(cfg, "interop").build().unwrap();
        Pair { queue: QueueAdmin::new(&connections, name).unwrap(), args }
    }

    /// Runs a bull-peer command with this queue's coordinates merged into `extra`.
    fn node(&self, command: &str, extra: Value) -> Value {
        let mut args = self.args.clone();
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        NodePeer::run(command, args)
    }

    /// Our view of a job in Node's `get` shape: `Job#toJSON` plus `state`.
    async fn ours(&self, id: &str) -> Value {
        let Some(job) = self.queue.get_job(id).await.unwrap() else { return Value::Null };
        let mut json = job.to_json();
        json["state"] = json!(self.queue.get_job_state(id).await.unwrap().unwrap().as_str());
        json
    }

    async fn assert_same_view(&self, id: &str) {
        let theirs = self.node("get", json!({"id": id}));
        assert_eq!(self.ours(id).await, theirs, "job {id}: ours (left) and Node's (right) differ");
    }
}

#[tokio::test]
async fn jobs_we_add_are_processed_by_node_bull_in_bulls_order() {
    let p = Pair::new("files");
    let q = &p.queue;
    let plain = JobOptions::default();
    let mut ids = Vec::new();
    for (name, data, opts) in [
        ("a", json!({}), plain.clone()),
        ("b", json!({}), plain.clone()),
        ("c", json!({}), plain.clone().priority(3)),
        ("d", json!({}), plain.clone().priority(1)),
        ("e", json!({}), plain.clone().lifo(true)),
        ("f", json!({"ret": [1, "two"]}), plain.clone()),
        ("g", json!({"failTimes": 2}), plain.clone().attempts(3).backoff(Backoff::fixed(200)).stack_trace_limit(5)),
        ("h", json!({"failAlways": true}), plain.clone().attempts(2)),
        ("i", json!({}), plain.clone().remove_on_complete(KeepJobs::Remove(true))),
        ("j", json!({"failAlways": true}), plain.clone().remove_on_fail(KeepJobs::Count(0))),
        ("k", json!({}), plain.clone().delay(1500)),
        ("l", json!({"ret": null}), plain.clone().job_id("custom-l").timeout(5000)),
    ] {
        ids.push(q.add(name, data, opts).await.unwrap());
    }
    let run = p.node("process", json!({"expect": 12, "timeoutMs": 20000}));
    assert_eq!(run["timedOut"], false, "{run}");
    let first_runs: Vec<&str> = run["starts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["attemptsMade"] == 0)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // Tail of `wait` first: LIFO, then priority 1, priority 3, then FIFO; the delayed job last.
    assert_eq!(first_runs, ["e", "d", "c", "a", "b", "f", "g", "h", "i", "j", "l", "k"]);

    let counts = q.get_job_counts().await.unwrap();
    assert_eq!((counts.completed, counts.failed, counts.active, counts.waiting, counts.delayed), (9, 1, 0, 0, 0));
    let id = |name: &str| {
        ids[["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"].iter().position(|n| *n == name).unwrap()]
            .clone()
    };
    let g = q.get_job(&id("g")).await.unwrap().unwrap();
    assert_eq!((g.attempts_made, g.stacktrace.len()), (2, 2));
    assert_eq!(g.returnvalue, Some(json!({"ok": true, "id": id("g")})));
    let h = q.get_job(&id("h")).await.unwrap().unwrap();
    assert_eq!((h.attempts_made, h.failed_reason.as_deref()), (2, Some("always")));
    assert_eq!(q.get_job_state(&id("h")).await.unwrap(), Some(JobState::Failed));
    assert!(q.get_job(&id("i")).await.unwrap().is_none(), "removeOnComplete: true");
    assert!(q.get_job(&id("j")).await.unwrap().is_none(), "removeOnFail: 0");
    let k = q.get_job(&id("k")).await.unwrap().unwrap();
    assert!(k.processed_on.unwrap() - k.timestamp.unwrap() >= 1500, "the delayed job ran early: {k:?}");
    assert_eq!(q.get_job(&id("f")).await.unwrap().unwrap().returnvalue, Some(json!([1, "two"])));
    // Every surviving job reads the same through our getters and Node's.
    for name in ["a", "c", "e", "f", "g", "h", "k", "l"] {
        p.assert_same_view(&id(name)).await;
    }
}

#[tokio::test]
async fn jobs_node_adds_read_back_field_for_field() {
    let p = Pair::new("from-node");
    let jobs = json!([
        {"data": {"i": 1, "path": "/data/file1.mp4"}},
        {"name": "named", "data": {"n": true}, "opts": {"jobId": "custom-7", "attempts": 4, "backoff": 2500}},
        {"name": "p", "data": [], "opts": {"priority": 2, "lifo": true, "timeout": 900, "stackTraceLimit": 3}},
        {"name": "exp", "data": {}, "opts": {"backoff": {"type": "exponential", "delay": 1000}, "attempts": 3,
            "removeOnComplete": true, "removeOnFail": {"age": 3600, "count": 10}}},
        {"name": "late", "data": {"x": "y"}, "opts": {"delay": 60000, "removeOnComplete": 5}},
        {"name": "tick", "data": {}, "opts": {"repeat": {"every": 60000}}},
        {"name": "cronjob", "data": {}, "opts": {"jobId": "myrep", "repeat": {"cron": "*/5 * * * *", "tz": "Europe/Madrid"}}},
        {"name": "custom-backoff", "data": {}, "opts": {"backoff": {"type": "jitter", "options": {"max": 5}}, "attempts": 2}},
    ]);
    let ids: Vec<String> = serde_json::from_value(p.node("add", json!({"jobs": jobs}))).unwrap();
    assert_eq!(ids.len(), 8);
    for id in &ids {
        p.assert_same_view(id).await;
    }
    let counts = p.queue.get_job_counts().await.unwrap();
    assert_eq!(serde_json::to_value(counts).unwrap(), p.node("counts", json!({})));
    for (state, asc) in [("waiting", true), ("waiting", false), ("delayed", true), ("delayed", false)] {
        let ours: Vec<Value> = p
            .queue
            .get_jobs(&[JobState::parse(state).unwrap()], 0, -1, asc)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.map_or(Value::Null, |j| j.to_json()))
            .collect();
        let theirs = p.node("getJobs", json!({"types": [state], "asc": asc}));
        assert_eq!(Value::Array(ours), theirs, "getJobs {state} asc={asc}");
    }
    // Node's repeatable keys and iteration ids are the ones we compute.
    let tick = p.queue.get_job(&ids[5]).await.unwrap().unwrap();
    let repeat = tick.opts.repeat.clone().unwrap();
    let key =
        queue_core::tooling::repeat_key("tick", &RepeatOptions { every: Some(60000), ..Default::default() }).unwrap();
    assert_eq!(repeat.key.as_deref(), Some(key.as_str()));
    let cron = p.queue.get_job(&ids[6]).await.unwrap().unwrap();
    assert_eq!(cron.opts.repeat.unwrap().key.as_deref(), Some("cronjob:myrep::Europe/Madrid:*/5 * * * *"));
    assert_eq!(
        ids[6],
        queue_core::tooling::iteration_id(
            "cronjob",
            &RepeatOptions { job_id: Some("myrep".into()), ..Default::default() },
            "cronjob:myrep::Europe/Madrid:*/5 * * * *",
            cron.opts.prev_millis.unwrap()
        )
    );
}

#[tokio::test]
async fn our_repeatable_and_node_repeatable_are_the_same_job() {
    let p = Pair::new("repeat-both");
    let repeat = RepeatOptions { every: Some(3_600_000), ..Default::default() };
    let ours = p.queue.add("hourly", json!({}), JobOptions::default().repeat(repeat)).await.unwrap();
    let theirs: Vec<String> = serde_json::from_value(
        p.node("add", json!({"jobs": [{"name": "hourly", "data": {}, "opts": {"repeat": {"every": 3600000}}}]})),
    )
    .unwrap();
    assert_eq!(
        theirs.as_slice(),
        std::slice::from_ref(&ours),
        "same repeat key and iteration id, so Node's add is a duplicate"
    );
    assert_eq!(p.queue.get_job_counts().await.unwrap().delayed, 1);
    p.assert_same_view(&ours).await;
}

#[tokio::test]
async fn pause_resume_promote_retry_clean_and_obliterate_are_seen_across() {
    let p = Pair::new("ops");
    let q = &p.queue;

    // Pause here, seen there; resume there, seen here.
    q.pause().await.unwrap();
    assert_eq!(p.node("isPaused", json!({})), true);
    q.add("while-paused", json!({}), JobOptions::default()).await.unwrap();
    assert_eq!(p.node("counts", json!({}))["paused"], 1);
    p.node("resume", json!({}));
    assert!(!q.is_paused().await.unwrap());
    assert_eq!(q.get_job_counts().await.unwrap().waiting, 1);
    p.node("pause", json!({}));
    assert!(q.is_paused().await.unwrap());
    q.resume().await.unwrap();
    assert_eq!(p.node("isPaused", json!({})), false);

    // Promote both ways.
    let ours = q.add("later", json!({}), JobOptions::default().delay(600_000)).await.unwrap();
    assert_eq!(p.node("promote", json!({"id": ours})), true);
    assert_eq!(q.get_job_state(&ours).await.unwrap(), Some(JobState::Waiting));
    let theirs: Vec<String> = serde_json::from_value(
        p.node("add", json!({"jobs": [{"name": "n-later", "data": {}, "opts": {"delay": 600000}}]})),
    )
    .unwrap();
    q.promote(&theirs[0]).await.unwrap();
    assert_eq!(p.node("get", json!({"id": theirs[0]}))["state"], "waiting");

    // Node processes: two complete, one fails for good.
    q.add("boom", json!({"failAlways": true}), JobOptions::default()).await.unwrap();
    let run = p.node("process", json!({"expect": 4}));
    assert_eq!(run["failed"].as_array().unwrap().len(), 1, "{run}");
    let failed_id = run["failed"][0].as_str().unwrap().to_owned();

    // Retry here, seen there; failed again there and retried there, seen here.
    q.retry_job(&failed_id).await.unwrap();
    assert_eq!(p.node("get", json!({"id": failed_id}))["state"], "waiting");
    p.node("process", json!({"expect": 1}));
    assert_eq!(q.get_job_state(&failed_id).await.unwrap(), Some(JobState::Failed));
    assert_eq!(p.node("retry", json!({"id": failed_id})), true);
    assert_eq!(q.get_job_state(&failed_id).await.unwrap(), Some(JobState::Waiting));
    p.node("process", json!({"expect": 1}));

    // Clean completed here, seen there; clean failed there, seen here.
    let cleaned = q.clean(std::time::Duration::ZERO, JobState::Completed, 0, |_| {}).await.unwrap();
    assert_eq!(cleaned.len(), 3);
    assert_eq!(p.node("counts", json!({}))["completed"], 0);
    let node_cleaned = p.node("clean", json!({"grace": 0, "type": "failed"}));
    assert_eq!(node_cleaned, json!([failed_id]));
    assert_eq!(q.get_job_counts().await.unwrap().failed, 0);

    // Obliterate: Node refuses with an active job unless forced, and ours empties what Node sees.
    let left = q.add("left", json!({}), JobOptions::default()).await.unwrap();
    let mut r = crate::support::raw(&test_support::redis_url()).await;
    let _: () = redis::AsyncCommands::rpoplpush(&mut r, keys_of(q).wait(), keys_of(q).active()).await.unwrap();
    assert!(p.node("obliterate", json!({}))["error"].is_string());
    q.obliterate(true, |_| {}).await.unwrap();
    assert_eq!(
        p.node("counts", json!({})),
        json!({"waiting": 0, "active": 0, "completed": 0, "failed": 0, "delayed": 0, "paused": 0})
    );
    assert_eq!(p.node("get", json!({"id": left})), Value::Null);
}
