//! `spawn_app`: api-svc built exactly as `main` builds it, on port 0, against real Redis (the
//! shared server with a unique prefix, or a private one), a fresh Postgres database and a
//! temporary storage directory; plus typed request helpers and a TCP proxy that can cut the
//! link to Postgres.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use api_svc::{Application, Config};
use platform::env::Env;
use platform::records::{Database, FileRecord};
use queue_core::{Connections, Job, Queue, RedisConfig};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use uuid::Uuid;

pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";
pub(crate) const OTHER_TOKEN: &str = "other-token-0123456789abcdef";
/// A valid Standard Webhooks secret.
pub(crate) const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running api-svc and handles to look behind it.
pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    /// The app's own connections (for their statistics).
    pub(crate) connections: Connections,
    /// The test's view of the same Postgres database.
    pub(crate) db: Database,
    /// The test's producer on the same `files` queue (its own connection).
    pub(crate) files: Queue,
    pub(crate) storage_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// What to change in the default environment.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) redis_url: Option<String>,
    pub(crate) database_url: Option<String>,
    /// The database the test itself reads, when the app's URL goes through a proxy.
    pub(crate) direct_database_url: Option<String>,
    pub(crate) vars: Vec<(&'static str, String)>,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub(crate) async fn spawn_with(options: Options) -> TestApp {
    let _ = platform::telemetry::init(platform::telemetry::LogFormat::Pretty, &Env::from_process());
    let database_url = match options.database_url {
        Some(url) => url,
        None => test_support::fresh_database().await,
    };
    let redis_url = options.redis_url.unwrap_or_else(test_support::redis_url);
    let prefix = test_support::unique("api");
    let storage_dir = tempfile::tempdir().unwrap();
    let mut vars: Vec<(&'static str, String)> = vec![
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("API_TOKENS", format!("{TOKEN},{OTHER_TOKEN}")),
        ("DATABASE_URL", database_url.clone()),
        ("STORAGE_DIR", storage_dir.path().to_str().unwrap().to_owned()),
        ("REDIS_URL", redis_url.clone()),
        ("QUEUE_PREFIX", prefix.clone()),
        ("REDIS_COMMAND_TIMEOUT_MS", "1000".to_owned()),
        ("REDIS_CONNECT_TIMEOUT_MS", "1000".to_owned()),
    ];
    for (name, value) in options.vars {
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
    }
    let env = Env::from_pairs(vars.iter().map(|(k, v)| (*k, v.as_str())));
    let config = Config::from_env(&env).expect("test configuration");
    let app = Application::build(config).await.expect("api-svc builds");
    let addr: SocketAddr = app.addr();
    let connections = app.connections().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    let mut test_redis = RedisConfig::from_lookup(|name| match name {
        "REDIS_URL" => Some(redis_url.clone()),
        "QUEUE_PREFIX" => Some(prefix.clone()),
        "REDIS_COMMAND_TIMEOUT_MS" => Some("1000".to_owned()),
        _ => None,
    })
    .unwrap();
    test_redis.max_connections = None;
    let test_connections = Connections::builder(test_redis, "api-svc-test").heartbeat(None).build().unwrap();
    let files = Queue::new(&test_connections, "files").unwrap();
    let direct = options.direct_database_url.unwrap_or(database_url);
    let db = Database::connect_lazy(&direct, 2, Duration::from_secs(3)).unwrap();
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        connections,
        db,
        files,
        storage_dir,
        stop: Some(stop),
        running: Some(running),
    }
}

impl TestApp {
    /// Sends the shutdown signal; returns what `run_until` returned.
    pub(crate) async fn shut_down(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let _ = self.stop.take().expect("running").send(());
        self.running.take().expect("running")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A raw upload with the default token.
    pub(crate) async fn upload_raw(&self, name: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client
            .post(self.url("/v1/files"))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .header("x-filename", name)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A multipart upload: a part `file`, and a field `callback_url` first when given.
    pub(crate) async fn upload_multipart(&self, name: &str, bytes: Vec<u8>, callback: Option<&str>) -> Response {
        let mut form = reqwest::multipart::Form::new();
        if let Some(url) = callback {
            form = form.text("callback_url", url.to_owned());
        }
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()).mime_str("text/plain").unwrap();
        form = form.part("file", part);
        self.client.post(self.url("/v1/files")).bearer_auth(TOKEN).multipart(form).send().await.unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(TOKEN).send().await.unwrap()
    }

    /// Uploads `body` as a raw text file and returns its id.
    pub(crate) async fn uploaded(&self, name: &str, body: &'static [u8]) -> Uuid {
        let response = self.upload_raw(name, "text/plain", body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let json: Value = response.json().await.unwrap();
        json["id"].as_str().unwrap().parse().unwrap()
    }

    pub(crate) async fn row(&self, id: Uuid) -> Option<FileRecord> {
        self.db.get_file(id).await.unwrap()
    }

    pub(crate) async fn rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(self.db.pool()).await.unwrap()
    }

    pub(crate) async fn job(&self, id: Uuid) -> Option<Job> {
        self.files.get_job(&id.to_string()).await.unwrap()
    }

    /// Every file under the storage directory (directories left empty do not count).
    pub(crate) fn stored_files(&self) -> Vec<PathBuf> {
        test_support::files_under(self.storage_dir.path())
    }
}

/// Asserts a JSON error body with `code` and returns it.
pub(crate) async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let got = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(json["error"]["code"], code, "{json}");
    assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
    json
}

/// Checks `check` every 20 ms until it holds or `limit` passes.
pub(crate) async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
