//! The wiring: connections, pool, migrations, routes and middleware, bound to `LISTEN_ADDR`.
//! `main` and the tests build the same [`Application`].

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use platform::records::Database;
use queue_core::{Connections, Queue};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::{request_id, routes};

/// The service name: the first part of its Redis connection names and heartbeat.
pub const SERVICE: &str = "api-svc";
/// How long applying migrations at start-up may take.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long closing the Postgres pool may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long requests in flight get to finish at shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle keep-alive connection stays open. Longer than the idle timeout of the usual
/// load balancers (60 s), so the balancer closes first; actix-web's default (5 s) is shorter than
/// most HTTP clients' pool idle time, and a client that reuses a connection the server has just
/// closed sees a reset request.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(75);

/// A built, bound, not yet running api-svc.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    /// Plans the one Redis connection (opened on first use), prepares the Postgres pool, applies
    /// the migrations (start-up fails if Postgres cannot be reached: the container restarts),
    /// and binds `LISTEN_ADDR`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let connections = platform::redis::connect(&config.env, SERVICE, |plan| plan)?;
        let db = Database::from_env(&config.env)?;
        tokio::time::timeout(MIGRATION_TIMEOUT, db.migrate())
            .await
            .context("applying the migrations timed out")?
            .context("applying the migrations failed (DATABASE_URL)")?;
        // Open the one Redis connection now, on this (the main) runtime rather than on the
        // runtime of whichever actix worker asks first. Redis being down does not stop start-up:
        // uploads are acknowledged meanwhile (see `routes::files`). What waiting cannot fix (a
        // certificate that is not trusted, a user refused PING) does, with its reason.
        match connections.ping().await {
            Ok(()) => {}
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "redis does not answer yet; uploads are recorded and enqueued later");
            }
            Err(e) => {
                connections.close().await;
                return Err(e).context("connecting to Redis");
            }
        }
        let files = Queue::new(&connections, platform::jobs::FILES_QUEUE)?;
        let metrics = Arc::new(Metrics::new(connections.clone(), db.clone(), &config.storage));
        let state = AppState {
            db,
            storage: config.storage,
            files,
            connections,
            tokens: Arc::new(config.tokens),
            metrics: metrics.clone(),
            callback_policy: config.callback_policy,
            callbacks_enabled: config.callbacks_enabled,
            max_upload_bytes: config.max_upload_bytes,
            database_timeout: config.database_timeout,
        };
        let listener = TcpListener::bind(config.listen_addr)
            .with_context(|| format!("cannot listen on LISTEN_ADDR {}", config.listen_addr))?;
        let addr = listener.local_addr()?;
        let data = web::Data::new(state.clone());
        let requests = web::Data::new(metrics.requests().clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(requests.clone())
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::bad_request("invalid_query", format!("the query string is invalid: {e}")).into()
                }))
                .wrap(from_fn(platform::metrics::middleware))
                .wrap(from_fn(request_id::middleware))
                .configure(routes::mount)
                .default_service(web::to(not_found))
        })
        .disable_signals()
        .keep_alive(KEEP_ALIVE)
        .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
        .listen(listener)?
        .run();
        tracing::info!(
            listen = %addr,
            storage = state.storage.describe(),
            max_upload_bytes = state.max_upload_bytes,
            callbacks = state.callbacks_enabled,
            tokens = state.tokens.len(),
            "api-svc listening"
        );
        Ok(Application { server, addr, state })
    }

    /// The bound address (the real port when `LISTEN_ADDR` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process's Redis connections (statistics by role).
    pub fn connections(&self) -> &Connections {
        &self.state.connections
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish (up to
    /// [`SHUTDOWN_TIMEOUT`]) and closes the Redis connections and the Postgres pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application { server, state, .. } = self;
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        let served = tokio::select! {
            result = &mut server => result,
            () = shutdown => {
                tracing::info!("stopping: finishing requests in flight");
                // The command is sent now; the server future must be polled to carry it out.
                let stopped = handle.stop(true);
                let served = server.await;
                stopped.await;
                served
            }
        };
        // Connections opened by a request live on the runtime of the actix worker that served
        // it, which is gone now: closing them politely is bounded, and dropping them is fine.
        state.connections.close().await;
        if tokio::time::timeout(CLOSE_TIMEOUT, state.db.pool().close()).await.is_err() {
            tracing::debug!("postgres connections dropped without a goodbye");
        }
        tracing::info!("api-svc stopped");
        served.context("the HTTP server failed")
    }
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}
