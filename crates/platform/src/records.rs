//! The system of record in Postgres: the `files` table (one row per upload), `deliveries`
//! (every callback attempt) and `executions` (a ledger of job executions). The schema is in
//! `crates/platform/migrations/`; [`Database::migrate`] applies it (sqlx takes an advisory lock,
//! so services starting together do not race).
//!
//! Every write here is idempotent by file id, so a job run twice (after a crash, or because its
//! reply was lost) does no harm: a status only moves forward, and a finished row is not
//! rewritten by a late duplicate.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
// Dynamic SQL here only splices FILE_COLUMNS, a constant; values are always bound.
use sqlx::{AssertSqlSafe, FromRow, Row};
use uuid::Uuid;

use crate::env::{ConfigError, Env};

/// Default size of a service's Postgres pool (`DATABASE_MAX_CONNECTIONS`).
pub const DEFAULT_DATABASE_CONNECTIONS: u32 = 5;
/// How long a caller waits for a pooled connection (`DATABASE_ACQUIRE_TIMEOUT_MS`).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a file is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Stored and recorded; its job is (or will be) in the `files` queue.
    Queued,
    /// A worker runs its job.
    Processing,
    /// Processed; `result` holds what was found.
    Done,
    /// Failed for good; `error` says why.
    Failed,
}

impl FileStatus {
    /// The column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Queued => "queued",
            FileStatus::Processing => "processing",
            FileStatus::Done => "done",
            FileStatus::Failed => "failed",
        }
    }

    /// Parses the column's text (or a query parameter).
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "queued" => FileStatus::Queued,
            "processing" => FileStatus::Processing,
            "done" => FileStatus::Done,
            "failed" => FileStatus::Failed,
            _ => return None,
        })
    }
}

/// One row of `files`.
#[derive(Clone, Debug, PartialEq, FromRow, Serialize)]
pub struct FileRecord {
    /// The file id.
    pub id: Uuid,
    /// `queued`, `processing`, `done` or `failed` (see [`FileStatus`]).
    pub status: String,
    /// The client's filename (metadata only).
    pub filename: String,
    /// The content type the client sent.
    pub content_type: Option<String>,
    /// Bytes.
    pub size: i64,
    /// Hex sha256 of the content, computed while it was received.
    pub sha256: String,
    /// The type found in the content (magic bytes), once processed.
    pub detected_type: Option<String>,
    /// Where the result is POSTed, if anywhere.
    pub callback_url: Option<String>,
    /// Digest of the uploading token.
    pub token_id: String,
    /// The upload's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// Digest of the upload request, for idempotency.
    pub request_hash: Option<String>,
    /// What processing found (metadata, artifacts).
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Executions started.
    pub attempts: i32,
    /// `pending`, `delivered` or `failed` for files with a callback.
    pub delivery_state: Option<String>,
    /// Upload time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached `done` or `failed`.
    pub finished_at: Option<DateTime<Utc>>,
}

impl FileRecord {
    /// The status as an enum.
    pub fn status(&self) -> FileStatus {
        FileStatus::parse(&self.status).unwrap_or(FileStatus::Queued)
    }
}

/// What api-svc records for a new upload.
#[derive(Clone, Debug)]
pub struct NewFile {
    /// The id (also the storage key and the Bull job id).
    pub id: Uuid,
    /// The client's filename.
    pub filename: String,
    /// The client's content type.
    pub content_type: Option<String>,
    /// Bytes received.
    pub size: i64,
    /// Hex sha256 of what was received.
    pub sha256: String,
    /// The callback, validated.
    pub callback_url: Option<String>,
    /// Digest of the uploading token.
    pub token_id: String,
    /// `Idempotency-Key`, if sent.
    pub idempotency_key: Option<String>,
    /// Digest of the request, if an idempotency key was sent.
    pub request_hash: Option<String>,
}

/// One callback delivery attempt.
#[derive(Clone, Debug, PartialEq, FromRow, Serialize)]
pub struct Delivery {
    /// The file.
    pub file_id: Uuid,
    /// Standard Webhooks' `webhook-id`.
    pub webhook_id: String,
    /// 1 on the first try.
    pub attempt: i32,
    /// The receiver's status code; `None` when no answer came.
    pub status_code: Option<i32>,
    /// How long the attempt took.
    pub duration_ms: i32,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A service's Postgres pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
}

const FILE_COLUMNS: &str = "id, status, filename, content_type, size, sha256, detected_type, callback_url, token_id, \
    idempotency_key, request_hash, result, error, attempts, delivery_state, created_at, updated_at, finished_at";

impl Database {
    /// Reads `DATABASE_URL` (required), `DATABASE_MAX_CONNECTIONS` and
    /// `DATABASE_ACQUIRE_TIMEOUT_MS`, and prepares a pool that connects lazily: a service starts
    /// while Postgres is down and answers 503 until it is back.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.required("DATABASE_URL")?;
        let max = env.positive_or("DATABASE_MAX_CONNECTIONS", u64::from(DEFAULT_DATABASE_CONNECTIONS))? as u32;
        let acquire = env.millis_or("DATABASE_ACQUIRE_TIMEOUT_MS", DEFAULT_ACQUIRE_TIMEOUT)?;
        Self::connect_lazy(&url, max, acquire)
    }

    /// A lazily connecting pool of at most `max` connections.
    pub fn connect_lazy(url: &str, max: u32, acquire: Duration) -> Result<Self, ConfigError> {
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(0)
            .acquire_timeout(acquire)
            .connect_lazy(url)
            .map_err(|e| ConfigError::new("DATABASE_URL", format!("{}: {e}", redact(url))))?;
        tracing::info!(endpoint = %redact(url), max_connections = max, "postgres pool planned");
        Ok(Database { pool })
    }

    /// The pool, for queries this module does not have.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations that are not applied yet.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// `SELECT 1`, for readiness.
    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    /// Records a new upload as `queued`.
    pub async fn insert_file(&self, new: &NewFile) -> sqlx::Result<FileRecord> {
        let sql = format!(
            "INSERT INTO files (id, status, filename, content_type, size, sha256, callback_url, token_id, \
             idempotency_key, request_hash, delivery_state) \
             VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $6::text IS NULL THEN NULL ELSE 'pending' END) \
             RETURNING {FILE_COLUMNS}"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(new.id)
            .bind(&new.filename)
            .bind(&new.content_type)
            .bind(new.size)
            .bind(&new.sha256)
            .bind(&new.callback_url)
            .bind(&new.token_id)
            .bind(&new.idempotency_key)
            .bind(&new.request_hash)
            .fetch_one(&self.pool)
            .await
    }

    /// The file, if it exists.
    pub async fn get_file(&self, id: Uuid) -> sqlx::Result<Option<FileRecord>> {
        sqlx::query_as(AssertSqlSafe(format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The upload that used `key` with `token_id` within `window`, if any.
    pub async fn find_idempotent(
        &self,
        token_id: &str,
        key: &str,
        window: Duration,
    ) -> sqlx::Result<Option<FileRecord>> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE token_id = $1 AND idempotency_key = $2 \
             AND created_at > now() - make_interval(secs => $3)"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(token_id)
            .bind(key)
            .bind(window.as_secs_f64())
            .fetch_optional(&self.pool)
            .await
    }

    /// Frees `key` of `token_id` where its window has passed, so it can be used again.
    pub async fn expire_idempotency_key(&self, token_id: &str, key: &str, window: Duration) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE files SET idempotency_key = NULL WHERE token_id = $1 AND idempotency_key = $2 \
             AND created_at <= now() - make_interval(secs => $3)",
        )
        .bind(token_id)
        .bind(key)
        .bind(window.as_secs_f64())
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Newest first, `limit` rows, optionally by status, after the cursor `(created_at, id)` of the
    /// last row of the previous page (keyset pagination: stable while rows are added).
    pub async fn list_files(
        &self,
        status: Option<FileStatus>,
        limit: i64,
        after: Option<(DateTime<Utc>, Uuid)>,
    ) -> sqlx::Result<Vec<FileRecord>> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files \
             WHERE ($1::text IS NULL OR status = $1) \
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(status.map(FileStatus::as_str))
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// Deletes the row (and its deliveries); false when there was none.
    pub async fn delete_file(&self, id: Uuid) -> sqlx::Result<bool> {
        Ok(sqlx::query("DELETE FROM files WHERE id = $1").bind(id).execute(&self.pool).await?.rows_affected() > 0)
    }

    /// A worker starts an execution: the row moves to `processing` (unless already finished) and
    /// the ledger gets a row. Returns the row, or `None` when the file is gone (deleted).
    pub async fn start_execution(&self, id: Uuid, attempt: i32, worker: &str) -> sqlx::Result<Option<FileRecord>> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE files SET status = CASE WHEN status IN ('done', 'failed') THEN status ELSE 'processing' END, \
             attempts = attempts + 1, updated_at = now() WHERE id = $1 RETURNING {FILE_COLUMNS}"
        );
        let row: Option<FileRecord> = sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await?;
        if row.is_some() {
            sqlx::query("INSERT INTO executions (file_id, attempt, worker) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(attempt)
                .bind(worker)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Records the end of an execution in the ledger.
    pub async fn end_execution(&self, id: Uuid, attempt: i32, worker: &str, outcome: &str) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE executions SET ended_at = now(), outcome = $4 \
             WHERE id = (SELECT id FROM executions WHERE file_id = $1 AND attempt = $2 AND worker = $3 \
             AND ended_at IS NULL ORDER BY id DESC LIMIT 1)",
        )
        .bind(id)
        .bind(attempt)
        .bind(worker)
        .bind(outcome)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// The file is processed. A row already `failed` stays failed; a row already `done` keeps
    /// its first result (a duplicate execution changes nothing).
    pub async fn mark_done(&self, id: Uuid, detected_type: &str, result: &serde_json::Value) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE files SET status = 'done', detected_type = $2, result = $3, error = NULL, \
             finished_at = now(), updated_at = now() WHERE id = $1 AND status IN ('queued', 'processing')",
        )
        .bind(id)
        .bind(detected_type)
        .bind(result)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The file failed for good with `reason`. A row already finished is left alone.
    pub async fn mark_failed(&self, id: Uuid, reason: &str, detected_type: Option<&str>) -> sqlx::Result<bool> {
        let failed = sqlx::query(
            "UPDATE files SET status = 'failed', error = $2, detected_type = COALESCE($3, detected_type), \
             finished_at = now(), updated_at = now() WHERE id = $1 AND status IN ('queued', 'processing')",
        )
        .bind(id)
        .bind(reason)
        .bind(detected_type)
        .execute(&self.pool)
        .await?;
        Ok(failed.rows_affected() > 0)
    }

    /// A retryable failure: the row goes back to `queued` (the job will run again).
    pub async fn mark_retrying(&self, id: Uuid, reason: &str) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE files SET status = 'queued', error = $2, updated_at = now() \
             WHERE id = $1 AND status IN ('queued', 'processing')",
        )
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Files still `queued` or `processing` whose row is older than `min_age` (the reconciler
    /// checks whether their job still exists in Redis), oldest first.
    pub async fn unfinished_files(&self, min_age: Duration, limit: i64) -> sqlx::Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id FROM files WHERE status IN ('queued', 'processing') \
             AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2",
        )
        .bind(min_age.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("id")).collect()
    }

    /// Finished files whose callback is still `pending` and that finished more than `min_age`
    /// ago, oldest first: the reconciler checks that their `webhooks` job still exists in Redis.
    pub async fn pending_callbacks(&self, min_age: Duration, limit: i64) -> sqlx::Result<Vec<FileRecord>> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE status IN ('done', 'failed') AND delivery_state = 'pending' \
             AND callback_url IS NOT NULL AND finished_at < now() - make_interval(secs => $1) \
             ORDER BY finished_at LIMIT $2"
        );
        sqlx::query_as(AssertSqlSafe(sql)).bind(min_age.as_secs_f64()).bind(limit).fetch_all(&self.pool).await
    }

    /// Records one callback delivery attempt.
    pub async fn record_delivery(&self, d: &Delivery) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO deliveries (file_id, webhook_id, attempt, status_code, duration_ms, error, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(d.file_id)
        .bind(&d.webhook_id)
        .bind(d.attempt)
        .bind(d.status_code)
        .bind(d.duration_ms)
        .bind(&d.error)
        .bind(d.at)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Sets the callback's state: `pending`, `delivered` or `failed`.
    pub async fn set_delivery_state(&self, id: Uuid, state: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE files SET delivery_state = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(state)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Every delivery attempt of a file, oldest first.
    pub async fn deliveries(&self, id: Uuid) -> sqlx::Result<Vec<Delivery>> {
        sqlx::query_as(
            "SELECT file_id, webhook_id, attempt, status_code, duration_ms, error, at FROM deliveries \
             WHERE file_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// Runs `f` only if this process gets Postgres advisory lock `key` (without waiting), so
    /// one instance of a periodic duty runs at a time. Returns `None` when another holds it.
    pub async fn with_advisory_lock<T, F, Fut>(&self, key: i64, f: F) -> anyhow::Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await?;
        if !got {
            return Ok(None);
        }
        let result = f().await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *conn).await;
        result.map(Some)
    }
}

/// A Postgres URL with its password masked, for logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            // tidy: not a key (a URL's userinfo with the password masked)
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_passwords() {
        assert_eq!(redact("postgres://app:s3cr@t@db:5432/app"), "postgres://app:***@db:5432/app");
        assert_eq!(redact("postgres://db/app"), "postgres://db/app");
        assert_eq!(FileStatus::parse("done"), Some(FileStatus::Done));
        assert_eq!(FileStatus::parse("nope"), None);
    }
}
