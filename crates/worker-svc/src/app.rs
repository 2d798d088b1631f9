//! The running service: its wiring at start-up and its shutdown.
//!
//! Start-up: ffmpeg, ffprobe and `nice` are found; the Redis connections are built (command +
//! subscriber in zero-blocking mode, plus one blocking connection per queue in blocking mode);
//! the migrations are applied; `/livez` and `/metrics` are served; a first command proves the
//! Redis connection and the worker starts on `files` and `webhooks` (while Redis is down, frozen
//! or full, again and again, 0.5 s doubling to 10 s: the service comes up when Redis does; what
//! waiting cannot fix, such as an untrusted certificate, ends start-up with its reason); the
//! reconciler runs a first pass and then periodically. A shutdown during start-up stops what was
//! started (metrics server, connections and heartbeat, scratch directory) and exits 0.
//!
//! Shutdown (SIGTERM, Ctrl-C, or the future given to [`App::run_until`]): the handlers are told
//! (running ffmpeg groups are killed and those file jobs park, see `drain.rs`), the worker stops
//! taking jobs, and the service waits until every handler has finished or parked, at most
//! `WORKER_DRAIN_DEADLINE_MS`. Then the worker closes (jobs still in hand are left to stall
//! recovery), the reconciler and the metrics server stop, and the connections close.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use anyhow::Context as _;
use platform::jobs::{FILES_QUEUE, FileJob, WEBHOOKS_QUEUE, WebhookJob};
use queue_core::{Connections, Queue, QueueSpec, Worker, WorkerStats, typed_handler};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::context::{Context, instance_name};
use crate::drain::Drain;
use crate::ffmpeg::Tools;
use crate::metrics::{self, Metrics};
use crate::scratch::ScratchRoot;
use crate::{files, reconciler, webhooks};

/// The service name: in connection names, heartbeats and logs.
pub const SERVICE: &str = "worker-svc";

/// worker-svc, started.
pub struct App {
    config: Config,
    ctx: Arc<Context>,
    connections: Connections,
    worker: Worker,
    metrics_addr: SocketAddr,
    metrics_server: ServerHandle,
    reconciler: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

/// First wait before starting the worker again when Redis is not ready at start-up.
const START_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest wait between two start attempts.
const START_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("metrics_addr", &self.metrics_addr).field("worker", &self.worker).finish()
    }
}

impl App {
    /// Starts everything; see the module docs.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let app = App::build_until(config, std::future::pending()).await?;
        Ok(app.expect("a start-up that cannot be stopped ends started"))
    }

    /// Like [`build`](Self::build), unless `shutdown` resolves first: then what was started is
    /// stopped again (the metrics server, the connections and their heartbeat, the scratch
    /// directory), and it ends with `Ok(None)`.
    pub async fn build_until(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<Option<App>> {
        let mut stopping = std::pin::pin!(shutdown);
        let Some(tools) = until(&mut stopping, Tools::find(&config.media)).await else {
            return Ok(None);
        };
        let tools = tools?;
        if !tools.libx264 {
            tracing::warn!("this ffmpeg has no libx264 encoder; previews use mpeg4");
        }
        let queues = if config.blocking { 2 } else { 0 };
        let connections = platform::redis::connect(&config.env, SERVICE, |b| b.subscriber(true).blocking(queues))?;
        let Some(migrated) = until(&mut stopping, config.database.migrate()).await else {
            connections.close().await;
            return Ok(None);
        };
        migrated.context("applying the Postgres migrations (DATABASE_URL)")?;
        let files_queue = Queue::new(&connections, FILES_QUEUE)?;
        let webhooks_queue = Queue::new(&connections, WEBHOOKS_QUEUE)?;
        let scratch = ScratchRoot::create(&config.scratch_dir).with_context(|| {
            format!("creating the scratch directory (WORKER_SCRATCH_DIR={})", config.scratch_dir.display())
        })?;
        let metrics = Arc::new(Metrics::new(
            connections.clone(),
            config.database.clone(),
            &config.storage,
            tools.seconds.clone(),
        ));
        let (metrics_addr, metrics_server) = metrics::serve(config.metrics_addr, metrics.clone())
            .with_context(|| format!("serving /metrics on METRICS_ADDR={}", config.metrics_addr))?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let ctx = Arc::new(Context {
            db: config.database.clone(),
            storage: config.storage.clone(),
            files: files_queue.clone(),
            webhooks: webhooks_queue.clone(),
            tools,
            scratch,
            callbacks: config.callbacks.clone(),
            secret: config.webhook_secret.clone(),
            webhook_timeout: config.webhook_timeout,
            job_timeout: config.job_timeout,
            instance: instance_name(),
            shutdown: shutdown_rx.clone(),
            metrics,
            drain: Arc::new(Drain::default()),
        });
        if ctx.secret.is_none() {
            tracing::warn!("WEBHOOK_SECRET is not set: callbacks will fail without being sent");
        }
        let on_file = {
            let ctx = ctx.clone();
            let on_upload = typed_handler(move |job, data: FileJob| files::handle(ctx.clone(), job, data));
            files::with_canary(on_upload)
        };
        let on_webhook = {
            let ctx = ctx.clone();
            typed_handler(move |job, data: WebhookJob| webhooks::handle(ctx.clone(), job, data))
        };
        let specs = || {
            vec![
                QueueSpec::new(files_queue.clone(), config.files_concurrency, on_file.clone()),
                QueueSpec::new(webhooks_queue.clone(), config.webhook_concurrency, on_webhook.clone()),
            ]
        };
        // Redis down, frozen or full (maxclients) at start-up is waited out, as it is later: the
        // service comes up by itself when Redis does, instead of needing a restart. The first
        // command proves the connection even where the worker itself needs none to start (the
        // zero-blocking mode), so that what waiting cannot fix (a certificate that is not
        // trusted, a wrong password) ends start-up with its reason.
        let mut delay = START_RETRY_FIRST;
        // `Ok(None)`: stopped while starting.
        let started = loop {
            let attempt = async {
                connections.ping().await?;
                Worker::start(&connections, config.worker.clone(), specs()).await
            };
            let error = match until(&mut stopping, attempt).await {
                None => break Ok(None),
                Some(Ok(worker)) => break Ok(Some(worker)),
                Some(Err(e)) => e,
            };
            if !error.is_retryable() {
                break Err(error);
            }
            tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "redis is not ready; starting again soon");
            if until(&mut stopping, tokio::time::sleep(delay)).await.is_none() {
                break Ok(None);
            }
            delay = (delay * 2).min(START_RETRY_MAX);
        };
        let Ok(Some(worker)) = started else {
            // Undo what start-up made: nothing runs yet.
            metrics_server.stop(false).await;
            connections.close().await;
            ctx.scratch.remove();
            let error = started.err();
            if error.is_none() {
                tracing::info!("stopped while starting");
            }
            return error.map_or(Ok(None), |e| Err(e.into()));
        };
        ctx.metrics.watch_worker(worker.stats_handle());
        let reconciler = tokio::spawn(reconciler::run(
            ctx.clone(),
            config.reconcile_interval,
            config.reconcile_min_age,
            shutdown_rx,
        ));
        tracing::info!(
            %metrics_addr,
            storage = ctx.storage.describe(),
            instance = ctx.instance,
            files_concurrency = config.files_concurrency,
            webhook_concurrency = config.webhook_concurrency,
            ffmpeg_threads = config.media.threads,
            nice = config.media.nice,
            "worker-svc started"
        );
        Ok(Some(App { config, ctx, connections, worker, metrics_addr, metrics_server, reconciler, shutdown }))
    }

    /// Where `/livez` and `/metrics` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The process's Redis connections (for their statistics).
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Runs until `shutdown` resolves, then stops as the module docs say and returns the
    /// worker's final counters.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> WorkerStats {
        let App { config, ctx, connections, worker, metrics_server, reconciler, shutdown: stop, .. } = self;
        shutdown.await;
        tracing::info!(deadline_ms = config.drain_deadline.as_millis() as u64, "shutting down");
        stop.send_replace(true);
        let deadline = tokio::time::sleep(config.drain_deadline);
        tokio::select! {
            biased;
            // Stops fetching first, then waits until no job is in hand.
            () = worker.pause_local() => {}
            // Or until what is left in hand is parked, waiting for its lock to expire.
            () = ctx.drain.settled() => tracing::info!("interrupted jobs are left to be retried"),
            () = deadline => tracing::warn!("the drain deadline passed with jobs still running"),
        }
        // Nothing left to wait for: jobs still in hand (parked) are abandoned to stall recovery.
        let stats = worker.close(std::time::Duration::ZERO).await;
        let _ = reconciler.await;
        metrics_server.stop(true).await;
        connections.close().await;
        ctx.scratch.remove();
        tracing::info!(?stats, "worker-svc stopped");
        stats
    }
}

/// Starts worker-svc with `config` and runs it until `shutdown` resolves (also while it is
/// still starting: a start-up that waits for Redis ends at once, with nothing in hand).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<WorkerStats> {
    let mut shutdown = std::pin::pin!(shutdown);
    let Some(app) = App::build_until(config, shutdown.as_mut()).await? else {
        return Ok(WorkerStats::default());
    };
    Ok(app.run_until(shutdown).await)
}

/// `work`'s output, or `None` if `shutdown` resolves first (then `work` is dropped).
async fn until<T>(
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = shutdown.as_mut() => None,
        out = work => Some(out),
    }
}
