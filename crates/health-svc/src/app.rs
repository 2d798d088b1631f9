//! The wiring: the Redis connection, the Postgres pool, the canary task and the HTTP routes,
//! bound to `LISTEN_ADDR`; and the shutdown sequence.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, HttpServer, web};
use anyhow::Context;
use platform::jobs::FILES_QUEUE;
use platform::records::Database;
use queue_core::{Connections, Queue, QueueView};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::canary::Canary;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ops::Ops;
use crate::page;
use crate::readiness::Readiness;

/// How long requests in flight get at shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle keep-alive connections (longer than a load balancer's usual 60 s; see api-svc).
const KEEP_ALIVE: Duration = Duration::from_secs(75);

struct State {
    readiness: Arc<Readiness>,
    canary: Arc<Canary>,
    ops: Ops,
    metrics: Metrics,
}

/// A built, bound, running health-svc.
pub struct App {
    addr: SocketAddr,
    connections: Connections,
    database: Database,
    server: actix_web::dev::Server,
    handle: ServerHandle,
    shutdown: watch::Sender<bool>,
    canary_task: JoinHandle<()>,
}

impl App {
    /// Connects (lazily), starts the canary and binds `LISTEN_ADDR`.
    ///
    /// # Errors
    ///
    /// A connection plan over budget, a bad queue name, or an address that cannot be bound.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let connections = platform::redis::connect(&config.env, "health-svc", |builder| builder)?;
        let url = config.env.required("DATABASE_URL")?;
        let database = Database::connect_lazy(&url, 1, config.check_timeout)?;
        let readiness =
            Arc::new(Readiness::new(connections.clone(), database.clone(), config.check_timeout, config.ready_cache));
        let canary = Arc::new(Canary::new(config.canary_max_age));
        let views = config
            .queues
            .iter()
            .map(|name| QueueView::new(&connections, name))
            .collect::<Result<Vec<_>, _>>()
            .context("HEALTH_QUEUES")?;
        let files = Queue::new(&connections, FILES_QUEUE)?;
        let (shutdown, stopped) = watch::channel(false);
        let canary_task = tokio::spawn({
            let (canary, interval) = (canary.clone(), config.canary_interval);
            async move { canary.run(files, interval, stopped).await }
        });
        let metrics = Metrics::new(
            connections.clone(),
            database.clone(),
            canary.clone(),
            readiness.clone(),
            views.clone(),
            config.check_timeout,
        );
        let requests = web::Data::new(metrics.requests().clone());
        let state = web::Data::new(State {
            ops: Ops::new(connections.clone(), views, canary.clone(), readiness.clone()),
            metrics,
            readiness,
            canary,
        });
        let listener = TcpListener::bind(config.listen_addr)
            .with_context(|| format!("binding LISTEN_ADDR={}", config.listen_addr))?;
        let addr = listener.local_addr()?;
        let server = HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .app_data(requests.clone())
                .wrap(from_fn(platform::metrics::middleware))
                .route("/livez", web::get().to(livez))
                .route("/readyz", web::get().to(readyz))
                .route("/ops", web::get().to(ops_page))
                .route("/ops/queue", web::get().to(ops_json))
                .route("/metrics", web::get().to(metrics_text))
                .default_service(web::to(not_found))
        })
        .workers(2)
        .disable_signals()
        .keep_alive(KEEP_ALIVE)
        .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
        .listen(listener)?
        .run();
        let handle = server.handle();
        tracing::info!(listen = %addr, queues = ?config.queues, "health-svc listening");
        Ok(App { addr, connections, database, server, handle, shutdown, canary_task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its Redis connections (for their statistics).
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Serves until `signal` resolves (or the server fails), then stops the canary, lets
    /// requests in flight finish and closes the connections.
    ///
    /// # Errors
    ///
    /// When the HTTP server fails.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let App { connections, database, server, handle, shutdown, canary_task, .. } = self;
        let mut server = tokio::spawn(server);
        let result = tokio::select! {
            ended = &mut server => ended.context("the HTTP server task")?.context("the HTTP server"),
            () = signal => {
                tracing::info!("stopping");
                handle.stop(true).await;
                Ok(())
            }
        };
        let _ = shutdown.send(true);
        let _ = canary_task.await;
        connections.close().await;
        database.pool().close().await;
        tracing::info!("health-svc stopped");
        result
    }
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<State>, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    let deep = query.get("deep").is_some_and(|v| v == "1" || v == "true");
    let report = state.readiness.report().await;
    let mut failing: Vec<String> = report
        .checks
        .iter()
        .filter(|(_, c)| !c.ok)
        .map(|(name, c)| {
            format!(
                "{name} failing for {:.0} s: {}",
                c.failing_for_s.unwrap_or(0.0),
                c.error.as_deref().unwrap_or("no answer")
            )
        })
        .collect();
    let canary = deep.then(|| state.canary.verdict());
    if let Some(verdict) = &canary
        && !verdict.ok
    {
        failing.push(format!("canary {}", verdict.summary));
    }
    let mut body = json!({"checks": report.checks});
    if let Some(verdict) = canary {
        body["canary"] = json!(verdict);
    }
    if failing.is_empty() {
        body["status"] = json!("ready");
        HttpResponse::Ok().json(body)
    } else {
        body["status"] = json!("not_ready");
        body["error"] = json!({"code": "not_ready", "message": failing.join("; ")});
        HttpResponse::ServiceUnavailable().insert_header(("retry-after", "1")).json(body)
    }
}

async fn ops_json(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(state.ops.report().await)
}

async fn ops_page(state: web::Data<State>) -> HttpResponse {
    let report = state.ops.report().await;
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page::render(&report))
}

async fn metrics_text(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().content_type(platform::metrics::CONTENT_TYPE).body(state.metrics.encode().await)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": {"code": "not_found", "message": "no such route"}}))
}
