//! worker-svc's configuration, read once at start-up. An invalid value, or an unknown variable
//! with one of the product's prefixes (`WORKER_`, `WEBHOOK_`, ...), stops start-up naming it.
//!
//! | Variable | Default |
//! |---|---|
//! | `REDIS_URL`, `QUEUE_PREFIX`, `REDIS_MAX_CONNECTIONS`, `REDIS_*_TIMEOUT_MS` | queue-core's |
//! | `DATABASE_URL` | required |
//! | `DATABASE_MAX_CONNECTIONS`, `DATABASE_ACQUIRE_TIMEOUT_MS` | 5, 3000 |
//! | `STORAGE_DIR` | required unless `STORAGE_URL` (S3, with the `AWS_*` variables) |
//! | `WORKER_CONCURRENCY` | 2 (files at once) |
//! | `WORKER_WEBHOOK_CONCURRENCY` | 4 (callbacks at once) |
//! | `WORKER_BLOCKING` | `false` (zero-blocking: 2 Redis connections) |
//! | `WORKER_FFMPEG`, `WORKER_FFPROBE` | `ffmpeg`, `ffprobe` (on `PATH`) |
//! | `WORKER_FFMPEG_THREADS` | 1 |
//! | `WORKER_NICE` | 10 |
//! | `WORKER_PREVIEW_SECONDS` | 3 |
//! | `WORKER_JOB_TIMEOUT_MS` | 600000 (10 min) |
//! | `WORKER_DRAIN_DEADLINE_MS` | 30000 |
//! | `WORKER_SCRATCH_DIR` | `<system temp>/worker-svc` |
//! | `WORKER_RECONCILE_INTERVAL_MS` | 60000 |
//! | `WORKER_RECONCILE_MIN_AGE_MS` | 10000 |
//! | `WORKER_LOCK_DURATION_MS` | 30000 |
//! | `WORKER_STALLED_INTERVAL_MS` | 30000 |
//! | `WORKER_MAX_STALLED_COUNT` | 1 |
//! | `WORKER_DRAIN_DELAY_MS` | 5000 |
//! | `WEBHOOK_SECRET` | unset: callbacks fail, unsigned ones are never sent |
//! | `WEBHOOK_TIMEOUT_MS` | 10000 |
//! | `CALLBACK_ALLOWED_HOSTS` | empty |
//! | `METRICS_ADDR` | `127.0.0.1:9464` |
//!
//! api-svc's `API_TOKENS`, `API_TOKENS_FILE` and `MAX_UPLOAD_BYTES` are tolerated (and ignored)
//! so that one environment file can serve the whole stack. README's configuration table says
//! what each variable means.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use platform::callback::CallbackPolicy;
use platform::env::{ConfigError, Env};
use platform::records::Database;
use platform::storage::Storage;
use queue_core::{
    DEFAULT_DRAIN_DELAY, DEFAULT_LOCK_DURATION, DEFAULT_MAX_STALLED_COUNT, DEFAULT_STALLED_INTERVAL, WorkerSettings,
};

use crate::signature::WebhookSecret;

/// Files processed at once (`WORKER_CONCURRENCY`).
pub const DEFAULT_FILES_CONCURRENCY: u64 = 2;
/// Callbacks delivered at once (`WORKER_WEBHOOK_CONCURRENCY`).
pub const DEFAULT_WEBHOOK_CONCURRENCY: u64 = 4;
/// Where `/livez` and `/metrics` are served (`METRICS_ADDR`).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
/// Threads of one ffmpeg run (`WORKER_FFMPEG_THREADS`).
pub const DEFAULT_FFMPEG_THREADS: u64 = 1;
/// Nice level of ffmpeg and ffprobe (`WORKER_NICE`): Redis and the API go first.
pub const DEFAULT_NICE: u64 = 10;
/// Length of a video's preview (`WORKER_PREVIEW_SECONDS`).
pub const DEFAULT_PREVIEW_SECONDS: u64 = 3;
/// How long one file job may run (`WORKER_JOB_TIMEOUT_MS`).
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// How long jobs in hand may finish at shutdown (`WORKER_DRAIN_DEADLINE_MS`).
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Period of the reconciler (`WORKER_RECONCILE_INTERVAL_MS`).
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows younger than this are left to the enqueue that api-svc is doing
/// (`WORKER_RECONCILE_MIN_AGE_MS`).
pub const DEFAULT_RECONCILE_MIN_AGE: Duration = Duration::from_secs(10);
/// Limit of one callback POST, connection included (`WEBHOOK_TIMEOUT_MS`).
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The variables this service reads beyond [`platform::env::COMMON_VARS`].
pub const KNOWN_VARS: &[&str] = &[
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_ACQUIRE_TIMEOUT_MS",
    "STORAGE_DIR",
    "STORAGE_URL",
    "WORKER_CONCURRENCY",
    "WORKER_WEBHOOK_CONCURRENCY",
    "WORKER_BLOCKING",
    "WORKER_FFMPEG",
    "WORKER_FFPROBE",
    "WORKER_FFMPEG_THREADS",
    "WORKER_NICE",
    "WORKER_PREVIEW_SECONDS",
    "WORKER_JOB_TIMEOUT_MS",
    "WORKER_DRAIN_DEADLINE_MS",
    "WORKER_SCRATCH_DIR",
    "WORKER_RECONCILE_INTERVAL_MS",
    "WORKER_RECONCILE_MIN_AGE_MS",
    "WORKER_LOCK_DURATION_MS",
    "WORKER_STALLED_INTERVAL_MS",
    "WORKER_MAX_STALLED_COUNT",
    "WORKER_DRAIN_DELAY_MS",
    "WEBHOOK_SECRET",
    "WEBHOOK_TIMEOUT_MS",
    "CALLBACK_ALLOWED_HOSTS",
    "METRICS_ADDR",
    // api-svc's, tolerated so that one environment file can serve the whole stack.
    "API_TOKENS",
    "API_TOKENS_FILE",
    "MAX_UPLOAD_BYTES",
];

/// How media are processed.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// The ffmpeg binary.
    pub ffmpeg: String,
    /// The ffprobe binary.
    pub ffprobe: String,
    /// `-threads` (and `-filter_threads`) of every run.
    pub threads: u64,
    /// `nice -n` of every run.
    pub nice: u64,
    /// Length of a video's preview.
    pub preview: Duration,
}

/// Everything worker-svc needs to run; see the module docs for the variables.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The environment, for the Redis connections (`platform::redis::connect` reads it).
    pub env: Env,
    /// The system of record (a lazy pool).
    pub database: Database,
    /// Uploads and artifacts.
    pub storage: Storage,
    /// Which callback URLs may be called.
    pub callbacks: CallbackPolicy,
    /// The callback signing key; `None` fails every callback with a reason.
    pub webhook_secret: Option<WebhookSecret>,
    /// Limit of one callback POST.
    pub webhook_timeout: Duration,
    /// Files processed at once.
    pub files_concurrency: usize,
    /// Callbacks delivered at once.
    pub webhook_concurrency: usize,
    /// One blocking connection per queue instead of zero-blocking mode.
    pub blocking: bool,
    /// ffmpeg and ffprobe.
    pub media: MediaConfig,
    /// Per-job scratch directories go under this one.
    pub scratch_dir: PathBuf,
    /// How long one file job may run.
    pub job_timeout: Duration,
    /// How long jobs in hand may finish at shutdown.
    pub drain_deadline: Duration,
    /// Period of the reconciler.
    pub reconcile_interval: Duration,
    /// Rows younger than this are not reconciled.
    pub reconcile_min_age: Duration,
    /// Lock, stalled-check and polling timings of the queue worker.
    pub worker: WorkerSettings,
    /// Where `/livez` and `/metrics` are served (port 0: any free port).
    pub metrics_addr: SocketAddr,
}

impl Config {
    /// Reads the process environment.
    pub fn from_process() -> Result<Self, ConfigError> {
        Self::from_env(&Env::from_process())
    }

    /// Reads `env`. Must run inside a tokio runtime (the Postgres pool is prepared here; it
    /// connects lazily).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        env.refuse_unknown(KNOWN_VARS)?;
        // Checked now so a bad Redis variable stops start-up before anything else happens.
        platform::redis::config(env)?;
        let nice = env.parse_or("WORKER_NICE", DEFAULT_NICE)?;
        if nice > 19 {
            return Err(ConfigError::new("WORKER_NICE", format!("{nice}: must be 0 to 19")));
        }
        let webhook_secret = env
            .get("WEBHOOK_SECRET")
            .map(|raw| WebhookSecret::parse(raw).map_err(|e| ConfigError::new("WEBHOOK_SECRET", e)))
            .transpose()?;
        let metrics_addr = env.parse_or("METRICS_ADDR", DEFAULT_METRICS_ADDR.parse().expect("a socket address"))?;
        let lock_duration = env.millis_or("WORKER_LOCK_DURATION_MS", DEFAULT_LOCK_DURATION)?;
        let worker = WorkerSettings::default()
            .lock_duration(lock_duration)
            .stalled_interval(env.millis_or("WORKER_STALLED_INTERVAL_MS", DEFAULT_STALLED_INTERVAL)?)
            .max_stalled_count(env.parse_or("WORKER_MAX_STALLED_COUNT", DEFAULT_MAX_STALLED_COUNT)?)
            .drain_delay(env.millis_or("WORKER_DRAIN_DELAY_MS", DEFAULT_DRAIN_DELAY)?);
        let scratch_dir =
            env.get("WORKER_SCRATCH_DIR").map_or_else(|| std::env::temp_dir().join("worker-svc"), PathBuf::from);
        Ok(Config {
            database: Database::from_env(env)?,
            storage: Storage::from_env(env)?,
            callbacks: CallbackPolicy::from_env(env)?,
            webhook_secret,
            webhook_timeout: env.millis_or("WEBHOOK_TIMEOUT_MS", DEFAULT_WEBHOOK_TIMEOUT)?,
            files_concurrency: env.positive_or("WORKER_CONCURRENCY", DEFAULT_FILES_CONCURRENCY)? as usize,
            webhook_concurrency: env.positive_or("WORKER_WEBHOOK_CONCURRENCY", DEFAULT_WEBHOOK_CONCURRENCY)? as usize,
            blocking: env.parse_or("WORKER_BLOCKING", false)?,
            media: MediaConfig {
                ffmpeg: env.get("WORKER_FFMPEG").unwrap_or("ffmpeg").to_owned(),
                ffprobe: env.get("WORKER_FFPROBE").unwrap_or("ffprobe").to_owned(),
                threads: env.positive_or("WORKER_FFMPEG_THREADS", DEFAULT_FFMPEG_THREADS)?,
                nice,
                preview: Duration::from_secs(env.positive_or("WORKER_PREVIEW_SECONDS", DEFAULT_PREVIEW_SECONDS)?),
            },
            scratch_dir,
            job_timeout: env.millis_or("WORKER_JOB_TIMEOUT_MS", DEFAULT_JOB_TIMEOUT)?,
            drain_deadline: env.millis_or("WORKER_DRAIN_DEADLINE_MS", DEFAULT_DRAIN_DEADLINE)?,
            reconcile_interval: env.millis_or("WORKER_RECONCILE_INTERVAL_MS", DEFAULT_RECONCILE_INTERVAL)?,
            reconcile_min_age: env.millis_or("WORKER_RECONCILE_MIN_AGE_MS", DEFAULT_RECONCILE_MIN_AGE)?,
            worker,
            metrics_addr,
            env: env.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&'static str, &'static str)]) -> Env {
        let mut pairs =
            vec![("DATABASE_URL", "postgres://app:app@127.0.0.1:1/x"), ("STORAGE_DIR", "/tmp/worker-svc-config-test")];
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[tokio::test]
    async fn defaults_need_only_what_cannot_be_guessed() {
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!((config.files_concurrency, config.webhook_concurrency, config.blocking), (2, 4, false));
        assert_eq!((config.media.threads, config.media.nice), (1, 10));
        assert_eq!(config.metrics_addr, "127.0.0.1:9464".parse().unwrap());
        assert!(config.webhook_secret.is_none());
        assert_eq!(config.worker.lock_duration, DEFAULT_LOCK_DURATION);
    }

    #[tokio::test]
    async fn bad_values_and_typos_name_the_variable() {
        for (pairs, var) in [
            (vec![("WORKER_NICE", "20")], "WORKER_NICE"),
            (vec![("WORKER_BLOCKING", "yes please")], "WORKER_BLOCKING"),
            (vec![("WORKER_CONCURENCY", "3")], "WORKER_CONCURENCY"),
            (vec![("WEBHOOK_SECRET", "hunter2")], "WEBHOOK_SECRET"),
            (vec![("METRICS_ADDR", "localhost")], "METRICS_ADDR"),
            (vec![("WORKER_JOB_TIMEOUT_MS", "0")], "WORKER_JOB_TIMEOUT_MS"),
            (vec![("REDIS_URL", "http://x")], "REDIS_URL"),
        ] {
            let err = Config::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(err.var, var, "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let shared = env(&[("API_TOKENS", "dev"), ("MAX_UPLOAD_BYTES", "10"), ("LISTEN_ADDR", "0.0.0.0:8080")]);
        assert!(Config::from_env(&shared).is_ok(), "api-svc's variables in a shared environment");
        let missing = Config::from_env(&Env::from_pairs([("STORAGE_DIR", "/tmp/x")])).unwrap_err();
        assert_eq!(missing.var, "DATABASE_URL");
    }
}
