//! The producer and operator side against the shared Redis, checked key by key.

use queue_core::tooling;
use queue_core::tooling::keys_of;
use std::time::Duration;

use queue_core::tooling::{SubscriberEvent, delayed_score, now_ms};
use queue_core::{Backoff, Error, JobOptions, JobState, KeepJobs, NewJob, RepeatOptions};
use redis::AsyncCommands;
use serde_json::json;

use crate::support::{hash, keys, queue, raw};

#[tokio::test]
async fn add_writes_exactly_bulls_fields_and_pushes_to_wait() {
    let q = queue("files");
    let mut r = raw(&test_support::redis_url()).await;
    let before = now_ms();
    let id = q.add("", json!({"i": 1, "path": "/data/file1.mp4"}), JobOptions::default()).await.unwrap();
    assert_eq!(id, "1");
    let h = hash(&mut r, &keys_of(&q).job("1")).await;
    let mut fields: Vec<_> = h.keys().cloned().collect();
    fields.sort();
    assert_eq!(fields, ["data", "delay", "name", "opts", "priority", "timestamp"]);
    assert_eq!(h["name"], "__default__");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&h["data"]).unwrap(),
        json!({"i": 1, "path": "/data/file1.mp4"})
    );
    let opts: serde_json::Value = serde_json::from_str(&h["opts"]).unwrap();
    let ts = opts["timestamp"].as_u64().unwrap();
    assert!(ts >= before && ts <= now_ms());
    assert_eq!(opts, json!({"attempts": 1, "delay": 0, "timestamp": ts}));
    assert_eq!((h["delay"].as_str(), h["priority"].as_str()), ("0", "0"));
    assert_eq!(h["timestamp"], ts.to_string());
    let wait: Vec<String> = r.lrange(keys_of(&q).wait(), 0, -1).await.unwrap();
    assert_eq!(wait, ["1"]);
    let job = q.get_job("1").await.unwrap().unwrap();
    assert_eq!(job.to_json()["data"]["path"], "/data/file1.mp4");
    assert_eq!(q.get_job_state("1").await.unwrap(), Some(JobState::Waiting));
    assert_eq!(q.get_job_state("nope").await.unwrap(), None);
    assert!(q.get_job("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn a_duplicate_custom_id_returns_the_existing_job_unchanged() {
    let q = queue("dups");
    let mut r = raw(&test_support::redis_url()).await;
    let first = q.add("n", json!({"v": 1}), JobOptions::default().job_id("order-17")).await.unwrap();
    let second = q.add("n", json!({"v": 2}), JobOptions::default().job_id("order-17")).await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("order-17", "order-17"));
    assert_eq!(q.get_job("order-17").await.unwrap().unwrap().data, json!({"v": 1}));
    let counter: u64 = r.get(keys_of(&q).id()).await.unwrap();
    assert_eq!(counter, 2, "every add increments the id counter, as in Bull");
    assert_eq!(q.get_job_counts().await.unwrap().waiting, 1);
}

#[tokio::test]
async fn priority_and_lifo_order_the_wait_list_like_bull() {
    let q = queue("order");
    let mut r = raw(&test_support::redis_url()).await;
    let add = |name: &'static str, opts: JobOptions| {
        let q = q.clone();
        async move { q.add(name, json!({}), opts).await.unwrap() }
    };
    let a = add("a", JobOptions::default()).await;
    let b = add("b", JobOptions::default()).await;
    let c = add("c", JobOptions::default().priority(3)).await;
    let d = add("d", JobOptions::default().priority(1)).await;
    let e = add("e", JobOptions::default().lifo(true)).await;
    let f = add("f", JobOptions::default()).await;
    let wait: Vec<String> = r.lrange(keys_of(&q).wait(), 0, -1).await.unwrap();
    assert_eq!(wait, [f, b, a, c.clone(), d.clone(), e]);
    let prio: Vec<(String, u64)> = r.zrange_withscores(keys_of(&q).priority(), 0, -1).await.unwrap();
    assert_eq!(prio, [(d.clone(), 1), (c.clone(), 3)]);
    // Next to run first.
    let jobs = q.get_jobs(&[JobState::Waiting], 0, -1, true).await.unwrap();
    let names: Vec<_> = jobs.iter().map(|j| j.as_ref().unwrap().name.clone()).collect();
    assert_eq!(names, ["e", "d", "c", "a", "b", "f"]);
    let first_two = q.get_jobs(&[JobState::Waiting], 0, 1, true).await.unwrap();
    assert_eq!(first_two.iter().map(|j| j.as_ref().unwrap().name.as_str()).collect::<Vec<_>>(), ["e", "d"]);
}

#[tokio::test]
async fn a_delayed_job_gets_bulls_score_and_can_be_promoted() {
    let q = queue("delays");
    let mut r = raw(&test_support::redis_url()).await;
    q.add("x", json!({}), JobOptions::default()).await.unwrap();
    let id = q.add("later", json!({}), JobOptions::default().delay(60_000).timestamp(1_796_028_460_000)).await.unwrap();
    assert_eq!(id, "2");
    let score: f64 = r.zscore(keys_of(&q).delayed(), &id).await.unwrap();
    assert_eq!(score as u64, delayed_score(1_796_028_460_000 + 60_000, 2));
    assert_eq!(q.get_job_state(&id).await.unwrap(), Some(JobState::Delayed));
    assert_eq!(q.get_job_counts().await.unwrap().delayed, 1);
    q.promote(&id).await.unwrap();
    assert_eq!(q.get_job_state(&id).await.unwrap(), Some(JobState::Waiting));
    assert_eq!(hash(&mut r, &keys_of(&q).job(&id)).await["delay"], "0");
    assert!(matches!(q.promote(&id).await, Err(Error::WrongState { expected: "delayed", .. })));
}

#[tokio::test]
async fn pause_renames_wait_and_later_adds_go_to_paused() {
    let q = queue("pausing");
    let mut r = raw(&test_support::redis_url()).await;
    q.add("a", json!({}), JobOptions::default()).await.unwrap();
    assert!(!q.is_paused().await.unwrap());
    q.pause().await.unwrap();
    assert!(q.is_paused().await.unwrap());
    assert!(r.exists::<_, bool>(keys_of(&q).meta_paused()).await.unwrap());
    assert_eq!(hash(&mut r, &keys_of(&q).meta()).await["paused"], "1");
    q.add("b", json!({}), JobOptions::default()).await.unwrap();
    let counts = q.get_job_counts().await.unwrap();
    assert_eq!((counts.waiting, counts.paused), (0, 2));
    assert_eq!(q.get_job_state("2").await.unwrap(), Some(JobState::Paused));
    q.resume().await.unwrap();
    assert!(!q.is_paused().await.unwrap());
    let counts = q.get_job_counts().await.unwrap();
    assert_eq!((counts.waiting, counts.paused), (2, 0));
    assert!(hash(&mut r, &keys_of(&q).meta()).await.is_empty());
}

#[tokio::test]
async fn remove_is_refused_for_a_locked_job() {
    let q = queue("removal");
    let mut r = raw(&test_support::redis_url()).await;
    let id = q.add("a", json!({}), JobOptions::default()).await.unwrap();
    q.add_log(&id, "line").await.unwrap();
    let _: () = r.set(keys_of(&q).lock(&id), "someone").await.unwrap();
    assert!(matches!(q.remove(&id).await, Err(Error::JobLocked(_))));
    let _: () = r.del(keys_of(&q).lock(&id)).await.unwrap();
    q.remove(&id).await.unwrap();
    assert!(keys(&mut r, &format!("{}*", keys_of(&q).base())).await.iter().all(|k| k.ends_with(":id")));
    assert!(matches!(q.remove(&id).await, Err(Error::JobNotFound(_))));
}

/// Moves a waiting job to `failed` the way a final failure leaves it.
async fn fail_by_hand(r: &mut redis::aio::MultiplexedConnection, q: &queue_core::Queue, id: &str) {
    let _: () = r.lrem(keys_of(q).wait(), 0, id).await.unwrap();
    let _: () = r.zadd(keys_of(q).failed(), id, now_ms()).await.unwrap();
    let _: () = r
        .hset_multiple(
            keys_of(q).job(id),
            &[("failedReason", "boom"), ("finishedOn", "17"), ("processedOn", "16"), ("attemptsMade", "1")],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn retry_moves_failed_jobs_back_and_keeps_their_history() {
    let q = queue("retries");
    let mut r = raw(&test_support::redis_url()).await;
    for _ in 0..3 {
        let id = q.add("a", json!({}), JobOptions::default()).await.unwrap();
        fail_by_hand(&mut r, &q, &id).await;
    }
    assert!(matches!(q.retry_job("404").await, Err(Error::JobNotFound(_))));
    q.retry_job("1").await.unwrap();
    let h = hash(&mut r, &keys_of(&q).job("1")).await;
    assert!(!h.contains_key("failedReason") && !h.contains_key("finishedOn") && !h.contains_key("processedOn"));
    assert_eq!(h["attemptsMade"], "1");
    assert!(h.contains_key("retriedOn"));
    assert!(matches!(q.retry_job("1").await, Err(Error::WrongState { expected: "failed", .. })));
    let mut seen = Vec::new();
    let q = q.with_slices(queue_core::Slices::default().retry(1));
    assert_eq!(q.retry_all_failed(|n| seen.push(n)).await.unwrap(), 2);
    assert_eq!(seen, [1, 2]);
    let counts = q.get_job_counts().await.unwrap();
    assert_eq!((counts.waiting, counts.failed), (3, 0));
}

#[tokio::test]
async fn clean_removes_old_finished_jobs_but_not_locked_ones() {
    let q = queue("cleaning");
    let mut r = raw(&test_support::redis_url()).await;
    for _ in 0..4 {
        let id = q.add("a", json!({}), JobOptions::default()).await.unwrap();
        fail_by_hand(&mut r, &q, &id).await;
    }
    let _: () = r.set(keys_of(&q).lock("4"), "worker").await.unwrap();
    let young = q.clean(Duration::from_secs(3600 * 24 * 365 * 100), JobState::Failed, 0, |_| {}).await.unwrap();
    assert!(young.is_empty(), "finishedOn 17 is old, but a grace longer than the epoch keeps everything");
    let limited = q.clean(Duration::ZERO, JobState::Failed, 2, |_| {}).await.unwrap();
    assert_eq!(limited.len(), 2);
    let rest = q.clean(Duration::ZERO, JobState::Failed, 0, |_| {}).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(q.get_job_counts().await.unwrap().failed, 1, "the locked job stays");
    assert!(q.get_job("4").await.unwrap().is_some());
    // Lists: waiting jobs older than the grace.
    q.add("w", json!({}), JobOptions::default()).await.unwrap();
    assert_eq!(q.clean(Duration::ZERO, JobState::Waiting, 0, |_| {}).await.unwrap().len(), 1);
    assert_eq!(q.get_job_counts().await.unwrap().waiting, 0);
}

#[tokio::test]
async fn obliterate_refuses_active_jobs_unless_forced_and_leaves_no_key() {
    let q = queue("doomed");
    let mut r = raw(&test_support::redis_url()).await;
    for i in 0..5 {
        q.add("a", json!({"i": i}), JobOptions::default().delay(if i % 2 == 0 { 0 } else { 10_000 })).await.unwrap();
    }
    q.add_log("1", "hello").await.unwrap();
    let _: () = r.rpoplpush(keys_of(&q).wait(), keys_of(&q).active()).await.unwrap();
    assert!(matches!(q.obliterate(false, |_| {}).await, Err(Error::ActiveJobs(_))));
    assert!(!q.is_paused().await.unwrap(), "a refused obliterate leaves the queue running");
    q.obliterate(true, |_| {}).await.unwrap();
    assert_eq!(keys(&mut r, &format!("{}*", keys_of(&q).base())).await, Vec::<String>::new());
}

#[tokio::test]
async fn logs_progress_and_data_updates() {
    let connections =
        queue_core::Connections::builder(crate::support::config(&test_support::redis_url(), 2), "it-progress")
            .subscriber(true)
            .build()
            .unwrap();
    let q = queue_core::QueueAdmin::new(&connections, "prog").unwrap();
    let subscriber = tooling::subscriber(&connections).unwrap();
    let mut events = subscriber.events();
    subscriber.subscribe(&keys_of(&q).progress_channel()).await.unwrap();
    let id = q.add("a", json!({"v": 1}), JobOptions::default()).await.unwrap();
    for line in ["one", "two", "three"] {
        q.add_log(&id, line).await.unwrap();
    }
    let logs = q.get_logs(&id, 0, -1, true).await.unwrap();
    assert_eq!((logs.logs, logs.count), (vec!["one".to_owned(), "two".into(), "three".into()], 3));
    assert_eq!(q.get_logs(&id, 0, 0, false).await.unwrap().logs, ["three"]);
    q.update_progress(&id, &json!(42)).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    let SubscriberEvent::Message(message) = event else { panic!("{event:?}") };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&message.payload).unwrap(),
        json!({"jobId": id, "progress": 42})
    );
    q.update_data(&id, json!({"v": 2})).await.unwrap();
    let job = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!((job.progress, job.data), (json!(42), json!({"v": 2})));
    assert!(matches!(q.add_log("404", "x").await, Err(Error::JobNotFound(_))));
    assert!(matches!(q.update_progress("404", &json!(1)).await, Err(Error::JobNotFound(_))));
}

#[tokio::test]
async fn bad_names_ids_data_and_options_are_refused_before_anything_is_written() {
    let q = queue("strict");
    let mut r = raw(&test_support::redis_url()).await;
    assert!(matches!(
        queue_core::QueueAdmin::new(&crate::support::shared(), "a:b"),
        Err(Error::InvalidQueueName { .. })
    ));
    assert!(matches!(queue_core::QueueAdmin::new(&crate::support::shared(), ""), Err(Error::InvalidQueueName { .. })));
    for id in ["wait", "5:lock", ""] {
        let err = q.add("a", json!({}), JobOptions::default().job_id(id)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidJobId { .. }), "{err}");
    }
    let both = RepeatOptions { cron: Some("* * * * *".into()), every: Some(1000), ..Default::default() };
    assert!(matches!(q.add("a", json!({}), JobOptions::default().repeat(both)).await, Err(Error::InvalidOptions(_))));
    let mut bad_map = std::collections::HashMap::new();
    bad_map.insert(vec![1u8], 1);
    assert!(matches!(q.add("a", bad_map, JobOptions::default()).await, Err(Error::Json { .. })));
    // A bulk add with one bad job adds nothing.
    let jobs = vec![
        NewJob::new("ok", json!({}), JobOptions::default()).unwrap(),
        NewJob::new("bad", json!({}), JobOptions::default().attempts(0)).unwrap(),
    ];
    assert!(q.add_bulk(jobs).await.is_err());
    assert_eq!(keys(&mut r, &format!("{}*", keys_of(&q).base())).await, Vec::<String>::new());
}

#[tokio::test]
async fn add_bulk_adds_every_option_in_one_atomic_call() {
    let q = queue("bulk");
    let jobs = vec![
        NewJob::new("a", json!({"i": 0}), JobOptions::default().attempts(3).backoff(Backoff::exponential(1000)))
            .unwrap(),
        NewJob::new("b", json!({"i": 1}), JobOptions::default().remove_on_complete(KeepJobs::Remove(true))).unwrap(),
        NewJob::new(
            "c",
            json!({"i": 2}),
            JobOptions::default().remove_on_fail(KeepJobs::Policy { age: Some(60), count: Some(5) }),
        )
        .unwrap(),
        NewJob::new("d", json!({"i": 3}), JobOptions::default().timeout(500).stack_trace_limit(2).delay(1000)).unwrap(),
    ];
    let ids = q.add_bulk(jobs).await.unwrap();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    let counts = q.get_job_counts().await.unwrap();
    assert_eq!((counts.waiting, counts.delayed), (3, 1));
    let d = q.get_job("4").await.unwrap().unwrap();
    assert_eq!((d.opts.timeout, d.opts.stack_trace_limit, d.delay), (Some(500), Some(2), Some(1000)));
    let c = q.get_job("3").await.unwrap().unwrap().to_json();
    assert_eq!(c["opts"]["removeOnFail"], json!({"age": 60, "count": 5}));
    let a = q.get_job("1").await.unwrap().unwrap().to_json();
    assert_eq!(a["opts"]["backoff"], json!({"type": "exponential", "delay": 1000}));
}

#[tokio::test]
async fn a_repeatable_job_is_stored_as_bull_stores_it() {
    let q = queue("repeats");
    let mut r = raw(&test_support::redis_url()).await;
    let repeat = RepeatOptions { every: Some(60_000), ..Default::default() };
    let id = q.add("tick", json!({}), JobOptions::default().repeat(repeat.clone())).await.unwrap();
    let key = queue_core::tooling::repeat_key("tick", &repeat).unwrap();
    assert_eq!(key, "tick:::60000");
    let next: u64 = r.zscore(keys_of(&q).repeat(), &key).await.unwrap();
    assert_eq!(next % 60_000, 0);
    assert_eq!(id, queue_core::tooling::iteration_id("tick", &repeat, &key, next));
    let job = q.get_job(&id).await.unwrap().unwrap();
    let opts = job.to_json()["opts"].clone();
    assert_eq!(opts["repeat"], json!({"every": 60000, "count": 1, "key": key}));
    assert_eq!(opts["prevMillis"], next);
    assert_eq!(opts["jobId"], id);
    assert_eq!(q.get_job_state(&id).await.unwrap(), Some(JobState::Delayed));
}

#[tokio::test]
async fn generated_ids_skip_numbers_already_taken_by_custom_ids() {
    let q = queue("numbers");
    q.add("custom", json!({"custom": true}), JobOptions::default().job_id("2")).await.unwrap();
    let a = q.add("a", json!({"n": 1}), JobOptions::default()).await.unwrap();
    let b = q.add("b", json!({"n": 2}), JobOptions::default()).await.unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("3", "4"));
    assert_eq!(q.get_job("2").await.unwrap().unwrap().data, json!({"custom": true}));
}

#[tokio::test]
async fn operations_on_jobs_refuse_ids_that_name_the_queue_s_own_keys() {
    let q = queue("ownkeys");
    q.pause().await.unwrap();
    for id in ["meta", "meta-paused", "limiter:index", "7:lock"] {
        assert!(matches!(q.remove(id).await, Err(Error::InvalidJobId { .. })), "{id}");
    }
    assert!(q.is_paused().await.unwrap(), "the meta keys are still there");
}

#[tokio::test]
async fn orphan_ids_without_a_hash_can_be_removed() {
    let q = queue("orphans");
    let mut r = raw(&test_support::redis_url()).await;
    let _: () = r.lpush(keys_of(&q).wait(), "ghost").await.unwrap();
    q.remove("ghost").await.unwrap();
    assert_eq!(q.get_job_counts().await.unwrap().waiting, 0);
    assert!(matches!(q.remove("ghost").await, Err(Error::JobNotFound(_))));
}

#[tokio::test]
async fn cleaning_a_waiting_debounced_job_frees_its_debounce_slot() {
    let q = queue("debounce");
    let mut r = raw(&test_support::redis_url()).await;
    let peer = json!({"redis": test_support::redis_url(), "prefix": keys_of(&q).prefix(), "queue": "debounce"});
    let mut args = peer.clone();
    args["jobs"] = json!([{"name": "d", "data": {}, "opts": {"debounce": {"id": "d1"}}}]);
    let first: Vec<String> = serde_json::from_value(test_support::NodePeer::run("add", args.clone())).unwrap();
    assert!(r.exists::<_, bool>(keys_of(&q).key("de:d1")).await.unwrap());
    assert_eq!(q.clean(Duration::ZERO, JobState::Waiting, 0, |_| {}).await.unwrap(), first);
    assert!(!r.exists::<_, bool>(keys_of(&q).key("de:d1")).await.unwrap());
    let second: Vec<String> = serde_json::from_value(test_support::NodePeer::run("add", args)).unwrap();
    assert_ne!(second, first, "a new debounced add gets a new job");
    assert_eq!(q.get_job_counts().await.unwrap().waiting, 1);
}
