//! Running worker-svc in-process against real Redis, Postgres and ffmpeg, and doing what api-svc
//! does to give it work.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use platform::env::Env;
use platform::jobs::{FILES_QUEUE, FileJob, WEBHOOKS_QUEUE, file_job_options};
use platform::records::{Database, FileRecord, NewFile};
use platform::storage::Storage;
use queue_core::{Connections, DEFAULT_JOB_NAME, Job, JobState, Queue, RedisConfig, RedisUrl, WorkerStats};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;
use worker_svc::{App, Config};

/// A callback signing secret for tests (Standard Webhooks form).
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Polls `check` every 50 ms until it returns `Some` or `limit` passes. `limit` only bounds a
/// wait for a state, so a broken test fails instead of hanging.
pub(crate) async fn eventually<T>(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a test's service lives: its Redis prefix, database, storage and scratch directories.
pub(crate) struct Place {
    pub(crate) redis_url: String,
    pub(crate) prefix: String,
    pub(crate) database_url: String,
    pub(crate) storage_dir: tempfile::TempDir,
    pub(crate) scratch_dir: tempfile::TempDir,
}

impl Place {
    /// A fresh database and a unique prefix on the shared Redis (or on `redis_url`).
    pub(crate) async fn new(redis_url: Option<String>) -> Place {
        Place {
            redis_url: redis_url.unwrap_or_else(test_support::redis_url),
            prefix: test_support::unique("ws"),
            database_url: test_support::fresh_database().await,
            storage_dir: tempfile::tempdir().unwrap(),
            scratch_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The service's environment: test timings, then `extra` (which may override them).
    pub(crate) fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = [
            ("REDIS_URL", self.redis_url.as_str()),
            ("QUEUE_PREFIX", &self.prefix),
            ("DATABASE_URL", &self.database_url),
            ("STORAGE_DIR", self.storage_dir.path().to_str().unwrap()),
            ("WORKER_SCRATCH_DIR", self.scratch_dir.path().to_str().unwrap()),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("WORKER_LOCK_DURATION_MS", "5000"),
            ("WORKER_STALLED_INTERVAL_MS", "1000"),
            ("WORKER_DRAIN_DELAY_MS", "1000"),
            ("WORKER_RECONCILE_INTERVAL_MS", "60000"),
            ("WORKER_RECONCILE_MIN_AGE_MS", "60000"),
            ("WORKER_DRAIN_DEADLINE_MS", "10000"),
            ("WEBHOOK_TIMEOUT_MS", "3000"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            pairs.retain(|(name, _)| name != k);
            pairs.push(((*k).to_owned(), (*v).to_owned()));
        }
        pairs
    }
}

/// What a test uses to feed and inspect a service at a place, as api-svc would: Postgres,
/// storage, and Redis connections of its own (outside the service's budget).
pub(crate) struct Fixture {
    pub(crate) place: Place,
    pub(crate) db: Database,
    pub(crate) storage: Storage,
    pub(crate) connections: Connections,
    pub(crate) files: Queue,
    pub(crate) webhooks: Queue,
}

impl Fixture {
    /// Connects to `place` and applies the migrations.
    pub(crate) async fn new(place: Place) -> Fixture {
        let db = Database::connect_lazy(&place.database_url, 3, Duration::from_secs(5)).unwrap();
        db.migrate().await.unwrap();
        let storage = Storage::local(place.storage_dir.path()).unwrap();
        let mut redis = RedisConfig::new(RedisUrl::parse(&place.redis_url).unwrap());
        redis.prefix = place.prefix.clone();
        let connections =
            Connections::builder(redis, "worker-svc-test").subscriber(true).heartbeat(None).build().unwrap();
        let files = Queue::new(&connections, FILES_QUEUE).unwrap();
        let webhooks = Queue::new(&connections, WEBHOOKS_QUEUE).unwrap();
        Fixture { place, db, storage, connections, files, webhooks }
    }

    /// Stores `content` and its row, as api-svc does before it answers 202; no job yet.
    pub(crate) async fn store(&self, content: &[u8], filename: &str, callback_url: Option<&str>) -> Uuid {
        let id = Uuid::new_v4();
        let staged = self.place.scratch_dir.path().join(format!("upload-{id}"));
        std::fs::write(&staged, content).unwrap();
        let stored = self.storage.put_file(&Storage::original_key(id), &staged).await.unwrap();
        std::fs::remove_file(&staged).unwrap();
        let new = NewFile {
            id,
            filename: filename.to_owned(),
            content_type: None,
            size: stored.size as i64,
            sha256: stored.sha256,
            callback_url: callback_url.map(str::to_owned),
            token_id: "test-token".to_owned(),
            idempotency_key: None,
            request_hash: None,
        };
        self.db.insert_file(&new).await.unwrap();
        id
    }

    /// Enqueues file `id`'s job as api-svc does.
    pub(crate) async fn enqueue(&self, id: Uuid) {
        let job = FileJob::new(id);
        self.files.add(DEFAULT_JOB_NAME, &job, file_job_options(&job)).await.unwrap();
    }

    /// [`Fixture::store`] then [`Fixture::enqueue`]: an upload.
    pub(crate) async fn upload(&self, content: &[u8], filename: &str, callback_url: Option<&str>) -> Uuid {
        let id = self.store(content, filename, callback_url).await;
        self.enqueue(id).await;
        id
    }

    /// Waits until file `id` is `done` or `failed`.
    pub(crate) async fn finished(&self, id: Uuid, limit: Duration) -> FileRecord {
        eventually(limit, &format!("file {id} to finish"), async || {
            let row = self.db.get_file(id).await.unwrap().expect("the row exists");
            matches!(row.status.as_str(), "done" | "failed").then_some(row)
        })
        .await
    }

    /// Waits until job `id` of `queue` is in `state`, and returns it.
    pub(crate) async fn job_in_state(&self, queue: &Queue, id: &str, state: JobState, limit: Duration) -> Job {
        eventually(limit, &format!("job {id} to be {state:?}"), async || {
            if queue.get_job_state(id).await.unwrap() == Some(state) { queue.get_job(id).await.unwrap() } else { None }
        })
        .await
    }

    /// The executions ledger of file `id`: `(attempt, outcome)` in order.
    pub(crate) async fn executions(&self, id: Uuid) -> Vec<(i32, Option<String>)> {
        sqlx::query_as("SELECT attempt, outcome FROM executions WHERE file_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(self.db.pool())
            .await
            .unwrap()
    }

    /// The bytes of an artifact of file `id`.
    pub(crate) async fn artifact(&self, id: Uuid, name: &str) -> Vec<u8> {
        let path = self.place.storage_dir.path().join("files").join(id.to_string()).join("artifacts").join(name);
        tokio::fs::read(&path).await.unwrap_or_else(|e| panic!("artifact {name} of {id}: {e}"))
    }
}

/// worker-svc running in this process, with its [`Fixture`] (what it derefs to).
pub(crate) struct TestApp {
    fixture: Fixture,
    pub(crate) metrics_addr: SocketAddr,
    /// The service's own connections, for their statistics.
    pub(crate) service_connections: Connections,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<WorkerStats>>,
}

impl std::ops::Deref for TestApp {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

impl TestApp {
    /// Starts worker-svc on a fresh place with `extra` variables.
    pub(crate) async fn spawn(extra: &[(&str, &str)]) -> TestApp {
        Self::spawn_at(Place::new(None).await, extra).await
    }

    /// Starts worker-svc at `place`.
    pub(crate) async fn spawn_at(place: Place, extra: &[(&str, &str)]) -> TestApp {
        Self::spawn_with(Fixture::new(place).await, extra).await
    }

    /// Starts worker-svc at the fixture's place.
    pub(crate) async fn spawn_with(fixture: Fixture, extra: &[(&str, &str)]) -> TestApp {
        let pairs = fixture.place.env(extra);
        let env = Env::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let config = Config::from_env(&env).expect("test configuration");
        let app = App::build(config).await.expect("worker-svc starts");
        let metrics_addr = app.metrics_addr();
        let service_connections = app.connections().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        TestApp { fixture, metrics_addr, service_connections, stop: Some(stop), task: Some(task) }
    }

    /// Stops the service as SIGTERM would and returns its final counters.
    pub(crate) async fn stop(mut self) -> WorkerStats {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.expect("worker-svc's task")
    }

    /// GET `path` on the metrics listener.
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.metrics_addr)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}
