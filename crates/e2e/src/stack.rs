//! api-svc and worker-svc together on one place: a Redis prefix, a fresh Postgres database and
//! one storage directory; what a client does over HTTP, and the ledger a test checks.

use std::time::{Duration, Instant};

use queue_core::{Connections, QueueAdmin, RedisConfig, RedisUrl};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::service::{Service, free_addr};

/// The bearer token the stack's api-svc accepts.
pub const TOKEN: &str = "e2e-token-0123456789abcdef";
/// The Standard Webhooks secret the stack signs callbacks with.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long a service may take to answer its health route after it starts (a debug build
/// applying migrations on a busy machine).
const START_LIMIT: Duration = Duration::from_secs(60);

/// Polls `check` every 25 ms until it returns `Some` or `limit` passes. `limit` only bounds a
/// wait for a state, so a broken test fails instead of hanging.
///
/// # Panics
///
/// When `limit` passes first, naming `what`.
pub async fn eventually<T>(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What to change in the stack's environment.
#[derive(Debug, Default)]
pub struct StackOptions {
    /// The Redis both services use; the shared test Redis when `None`.
    pub redis_url: Option<String>,
    /// The queue prefix; a unique one when `None` (tests share a Redis).
    pub prefix: Option<String>,
    /// The Postgres database every service uses; a fresh one on the shared server when `None`.
    pub database_url: Option<String>,
    /// Extra or overriding variables for api-svc.
    pub api_vars: Vec<(&'static str, String)>,
    /// Extra or overriding variables for worker-svc.
    pub worker_vars: Vec<(&'static str, String)>,
    /// Whether health-svc runs too.
    pub health: bool,
    /// Extra or overriding variables for health-svc.
    pub health_vars: Vec<(&'static str, String)>,
}

/// The two services, running.
#[derive(Debug)]
pub struct Stack {
    /// The api-svc process.
    pub api: Service,
    /// The worker-svc process.
    pub worker: Service,
    /// The health-svc process, when asked for.
    pub health: Option<Service>,
    /// `http://<health-svc's LISTEN_ADDR>` (empty without health-svc).
    pub health_base: String,
    /// `http://<api-svc's LISTEN_ADDR>`.
    pub api_base: String,
    /// `http://<worker-svc's METRICS_ADDR>`.
    pub metrics_base: String,
    /// A plain HTTP client.
    pub client: reqwest::Client,
    /// The stack's database, as the test reads it.
    pub db: PgPool,
    /// The Redis URL both services use.
    pub redis_url: String,
    /// Their queue prefix.
    pub prefix: String,
    /// worker-svc's environment, to start another like it.
    worker_env: Vec<(String, String)>,
    /// Storage, scratch and logs; removed last.
    dir: tempfile::TempDir,
}

/// `value` with every byte but RFC 3986's unreserved ones percent-encoded, for a query.
fn percent_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn with(mut base: Vec<(&'static str, String)>, extra: &[(&'static str, String)]) -> Vec<(String, String)> {
    for (name, value) in extra {
        base.retain(|(n, _)| n != name);
        base.push((name, value.clone()));
    }
    base.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Stack {
    /// Starts api-svc (and waits until `/readyz` answers 200), then worker-svc (until `/livez`
    /// does), on a fresh database and a unique prefix. Short lock, stall and drain intervals;
    /// the reconciler runs every minute unless `options` say otherwise.
    ///
    /// # Panics
    ///
    /// If a service does not come up.
    pub async fn start(options: StackOptions) -> Stack {
        let dir = tempfile::Builder::new().prefix("e2e-stack-").tempdir().expect("a temporary directory");
        for sub in ["storage", "scratch", "logs"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create a stack directory");
        }
        let path = |sub: &str| dir.path().join(sub).to_str().expect("a UTF-8 path").to_owned();
        let redis_url = options.redis_url.unwrap_or_else(test_support::redis_url);
        let prefix = options.prefix.unwrap_or_else(|| test_support::unique("e2e"));
        let database_url = match options.database_url {
            Some(url) => url,
            None => test_support::fresh_database().await,
        };
        let shared = vec![
            ("REDIS_URL", redis_url.clone()),
            ("QUEUE_PREFIX", prefix.clone()),
            ("DATABASE_URL", database_url.clone()),
            ("STORAGE_DIR", path("storage")),
            ("REDIS_COMMAND_TIMEOUT_MS", "1000".to_owned()),
            ("REDIS_CONNECT_TIMEOUT_MS", "1000".to_owned()),
            ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ];

        let listen = free_addr();
        let mut api_env = shared.clone();
        api_env.extend([("LISTEN_ADDR", listen.to_string()), ("API_TOKENS", TOKEN.to_owned())]);
        let api = Service::start("api-svc", &with(api_env, &options.api_vars), &dir.path().join("logs"));

        let metrics = free_addr();
        let mut worker_env = shared;
        worker_env.extend([
            ("METRICS_ADDR", metrics.to_string()),
            ("WORKER_SCRATCH_DIR", path("scratch")),
            ("WORKER_LOCK_DURATION_MS", "5000".to_owned()),
            ("WORKER_STALLED_INTERVAL_MS", "1000".to_owned()),
            ("WORKER_DRAIN_DELAY_MS", "1000".to_owned()),
            ("WORKER_DRAIN_DEADLINE_MS", "10000".to_owned()),
            ("WORKER_RECONCILE_INTERVAL_MS", "60000".to_owned()),
            ("WORKER_RECONCILE_MIN_AGE_MS", "60000".to_owned()),
            ("WEBHOOK_TIMEOUT_MS", "3000".to_owned()),
        ]);
        let worker_full_env = with(worker_env.clone(), &options.worker_vars);
        let worker = Service::start("worker-svc", &worker_full_env, &dir.path().join("logs"));
        let (health, health_base) = if options.health {
            let addr = free_addr();
            let mut env: Vec<(&'static str, String)> =
                worker_env.into_iter().filter(|(k, _)| !k.starts_with("WORKER_") && *k != "METRICS_ADDR").collect();
            env.extend([("LISTEN_ADDR", addr.to_string())]);
            let service = Service::start("health-svc", &with(env, &options.health_vars), &dir.path().join("logs"));
            (Some(service), format!("http://{addr}"))
        } else {
            (None, String::new())
        };

        let db = PgPool::connect(&database_url).await.expect("the stack's database");
        let stack = Stack {
            api,
            worker,
            health,
            health_base,
            api_base: format!("http://{listen}"),
            metrics_base: format!("http://{metrics}"),
            client: reqwest::Client::new(),
            db,
            redis_url,
            prefix,
            worker_env: worker_full_env,
            dir,
        };
        let mut health_urls = vec![format!("{}/readyz", stack.api_base), format!("{}/livez", stack.metrics_base)];
        if stack.health.is_some() {
            health_urls.push(format!("{}/readyz", stack.health_base));
        }
        for url in health_urls {
            eventually(START_LIMIT, &url, async || {
                let answer = stack.client.get(&url).send().await.ok()?;
                (answer.status() == StatusCode::OK).then_some(())
            })
            .await;
        }
        stack
    }

    /// worker-svc's environment as it was started, to start a second worker like it.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        self.worker_env.clone()
    }

    /// Where the services' logs go (for a service started beside them).
    pub fn log_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("logs")
    }

    /// The stack's storage directory.
    pub fn storage_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }

    /// `GET <api><path>` with the token.
    ///
    /// # Panics
    ///
    /// If api-svc cannot be reached.
    pub async fn get(&self, path: &str) -> Response {
        let url = format!("{}{path}", self.api_base);
        self.client.get(&url).bearer_auth(TOKEN).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// A raw upload of `body` as `name`, with a `callback_url` when given.
    ///
    /// # Panics
    ///
    /// If api-svc cannot be reached.
    pub async fn upload(&self, name: &str, content_type: &str, body: Vec<u8>, callback_url: Option<&str>) -> Response {
        let query = callback_url.map(|url| format!("?callback_url={}", percent_encode(url))).unwrap_or_default();
        self.client
            .post(format!("{}/v1/files{query}", self.api_base))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .header("x-filename", name)
            .body(body)
            .send()
            .await
            .expect("api-svc answers an upload")
    }

    /// [`Stack::upload`] that must be acknowledged (202); the new file's id.
    ///
    /// # Panics
    ///
    /// If the upload is not acknowledged.
    pub async fn accepted(&self, name: &str, content_type: &str, body: Vec<u8>) -> Uuid {
        let answer = self.upload(name, content_type, body, None).await;
        let status = answer.status();
        let body: Value = answer.json().await.expect("a JSON answer");
        assert_eq!(status, StatusCode::ACCEPTED, "upload of {name}: {body}");
        body["id"].as_str().and_then(|id| id.parse().ok()).expect("an id")
    }

    /// `GET /v1/files/{id}`, which must answer 200.
    ///
    /// # Panics
    ///
    /// If it does not.
    pub async fn file(&self, id: Uuid) -> Value {
        let answer = self.get(&format!("/v1/files/{id}")).await;
        let status = answer.status();
        let body: Value = answer.json().await.expect("a JSON answer");
        assert_eq!(status, StatusCode::OK, "file {id}: {body}");
        body
    }

    /// Waits until file `id` is `done` or `failed` (as api-svc reports it), and returns it.
    pub async fn finished(&self, id: Uuid, limit: Duration) -> Value {
        eventually(limit, &format!("file {id} to finish"), async || {
            let file = self.file(id).await;
            matches!(file["status"].as_str(), Some("done" | "failed")).then_some(file)
        })
        .await
    }

    /// The bytes at `path` (a link api-svc gave), which must answer 200.
    ///
    /// # Panics
    ///
    /// If it does not.
    pub async fn download(&self, path: &str) -> Vec<u8> {
        let answer = self.get(path).await;
        assert_eq!(answer.status(), StatusCode::OK, "GET {path}");
        answer.bytes().await.expect("the body").to_vec()
    }

    /// The test's own operator handle on queue `name` of the stack (its own connection, outside
    /// the services' budgets; it writes no heartbeat).
    ///
    /// # Panics
    ///
    /// If the connection cannot be configured.
    pub fn queue(&self, name: &str) -> QueueAdmin {
        QueueAdmin::new(&self.connections("e2e-test"), name).expect("a queue name")
    }

    /// Connections of a test's own, named `service`, on the stack's Redis and prefix (outside
    /// the services' budgets; no heartbeat).
    ///
    /// # Panics
    ///
    /// If the connection cannot be configured.
    pub fn connections(&self, service: &str) -> Connections {
        let mut config = RedisConfig::new(RedisUrl::parse(&self.redis_url).expect("a Redis URL"));
        config.prefix = self.prefix.clone();
        Connections::builder(config, service).heartbeat(None).build().expect("connections")
    }

    /// How many executions worker-svc recorded for file `id` (its ledger in Postgres).
    ///
    /// # Panics
    ///
    /// If the database cannot be read.
    pub async fn executions(&self, id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM executions WHERE file_id = $1")
            .bind(id)
            .fetch_one(&self.db)
            .await
            .expect("read the executions")
    }
}
