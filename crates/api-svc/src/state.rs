//! What every handler shares: the one Redis connection (through the `files` queue handle), the
//! Postgres pool, the file store, the metrics and the settings. Cloned per actix worker; every clone shares
//! the same connections.

use std::sync::Arc;
use std::time::Duration;

use platform::callback::CallbackPolicy;
use platform::records::Database;
use platform::storage::Storage;
use queue_core::{Connections, Queue};

use crate::auth::Tokens;
use crate::error::{ApiError, database_timeout};
use crate::metrics::Metrics;

/// The handlers' shared state.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The system of record.
    pub db: Database,
    /// Where files are.
    pub storage: Storage,
    /// The `files` queue, producer side.
    pub files: Queue,
    /// The process's Redis connections (one command connection), for readiness.
    pub connections: Connections,
    /// Bearer tokens.
    pub tokens: Arc<Tokens>,
    /// What `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// Which callback URLs are accepted.
    pub callback_policy: CallbackPolicy,
    /// Whether `WEBHOOK_SECRET` is set.
    pub callbacks_enabled: bool,
    /// `MAX_UPLOAD_BYTES`.
    pub max_upload_bytes: u64,
    /// Limit of one database call.
    pub database_timeout: Duration,
}

impl AppState {
    /// Runs one database call within the database timeout; a connection that cannot be had,
    /// is lost, or does not answer in time is a 503.
    pub(crate) async fn db<T>(&self, call: impl Future<Output = sqlx::Result<T>>) -> Result<T, ApiError> {
        match tokio::time::timeout(self.database_timeout, call).await {
            Ok(result) => result.map_err(ApiError::from_database),
            Err(_) => Err(database_timeout(self.database_timeout)),
        }
    }
}
