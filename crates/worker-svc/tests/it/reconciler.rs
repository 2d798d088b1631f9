//! The reconciler: what Postgres acknowledged and Redis lost (an enqueue that failed after the
//! commit, a `FLUSHALL`, the last second of an AOF) is processed anyway, without a restart.

use std::time::Duration;

use queue_core::QueueAdmin;
use serde_json::json;
use test_support::RedisServer;

use crate::support::{Place, SECRET, TestApp, eventually};
use e2e::receiver::{Receiver, verify};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_callbacks_redis_lost_are_processed_without_a_restart() {
    let redis = RedisServer::start();
    let receiver = Receiver::start(vec![]);
    let allowed = receiver.addr.to_string();
    let app = TestApp::spawn_at(
        Place::new(Some(redis.url())).await,
        &[
            ("WORKER_RECONCILE_INTERVAL_MS", "300"),
            ("WORKER_RECONCILE_MIN_AGE_MS", "1"),
            ("WEBHOOK_SECRET", SECRET),
            ("CALLBACK_ALLOWED_HOSTS", &allowed),
        ],
    )
    .await;

    // Acknowledged uploads whose jobs wait in Redis (the queue is paused so none starts)...
    QueueAdmin::new(&app.connections, "files").unwrap().pause().await.unwrap();
    let waiting = app.upload(b"waiting\n", "w.txt", None).await;
    // ... an upload whose enqueue never happened ...
    let never_enqueued = app.store(b"never enqueued\n", "n.txt", None).await;
    // ... and a processed file whose callback job is lost with the rest.
    let finished = app.store(b"finished\n", "f.txt", Some(&receiver.url("/hook"))).await;
    let result = json!({"detected_type": "text/plain", "kind": "other", "artifacts": []});
    assert!(app.db.mark_done(finished, "text/plain", &result).await.unwrap());
    assert_eq!(app.files.get_job_counts().await.unwrap().paused, 1, "nothing ran yet");

    assert_eq!(redis.command(&["FLUSHALL"]), "+OK\r\n");

    for id in [waiting, never_enqueued] {
        let row = app.finished(id, LIMIT).await;
        assert_eq!(row.status, "done", "{row:?}");
        assert_eq!(app.executions(id).await.len(), 1, "processed once");
    }
    let row = eventually(LIMIT, "the lost callback to be delivered", async || {
        let row = app.db.get_file(finished).await.unwrap().unwrap();
        (row.delivery_state.as_deref() == Some("delivered")).then_some(row)
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    verify(SECRET, &received[0]).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(
        (body["type"].as_str(), body["data"]["id"].as_str()),
        (Some("file.done"), Some(row.id.to_string().as_str()))
    );
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_failed_without_its_row_is_recorded_as_failed() {
    // A row younger than the minimum age is left alone, so the reconciler cannot enqueue a job of
    // its own between the row and the job below (that job would then be a duplicate id, ignored).
    let app = TestApp::spawn(&[("WORKER_RECONCILE_INTERVAL_MS", "300"), ("WORKER_RECONCILE_MIN_AGE_MS", "2000")]).await;
    // A producer of another contract version: the worker refuses the job before touching the row.
    let id = app.store(b"from the future\n", "f.txt", None).await;
    let options = platform::jobs::file_job_options(&platform::jobs::FileJob::new(id));
    app.files.add("__default__", json!({"v": 99, "file_id": id}), options).await.unwrap();
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row.status, "failed");
    assert!(row.error.as_deref().unwrap().contains("unsupported job contract version 99"), "{row:?}");
    app.stop().await;
}
