//! Where files live: one layer over the `object_store` crate, used by api-svc and worker-svc
//! alike: local files under `STORAGE_DIR` by default, or S3-compatible object storage when
//! `STORAGE_URL=s3://bucket[/prefix]` (AWS S3, Garage, MinIO, R2...), configured by the standard
//! variables `AWS_ENDPOINT_URL` (path-style requests when set), `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_REGION`.
//!
//! Keys: `files/<id>/original` for an upload, `files/<id>/artifacts/<name>` for what processing
//! makes. A client's filename never becomes part of a key.
//!
//! Writes are all-or-nothing: an upload streams into a multipart upload, which the local store
//! stages in a temporary file and renames into place when it completes (and fsyncs here); an
//! upload that fails or is too large is aborted, so nothing is ever visible under a final key
//! until it is whole.

pub mod stats;

use std::future::Future;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, RetryConfig};
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, PutResult, UploadPart,
    WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::env::{ConfigError, Env};
use stats::{StoreOp, StoreStats};

/// Limit of one S3 request (and of its retries together).
pub const S3_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Limit of connecting to S3.
const S3_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Chunk size of multipart writes: S3's smallest part (all but the last must be at least this).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts sent at once by one upload (see [`WriteMultipart::wait_for_capacity`]: a part is sent
/// only once the previous one is done).
const PARTS_IN_FLIGHT: usize = 1;

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// More bytes than allowed arrived; nothing was kept.
    #[error("content is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body stream failed (the client went away, a broken multipart body).
    #[error("reading the content failed: {0}")]
    Source(String),
    /// No object under that key.
    #[error("not found")]
    NotFound,
    /// The store failed (disk full, permissions, a network error for remote stores).
    #[error("storage failed: {0}")]
    Store(#[from] object_store::Error),
    /// A local file operation failed.
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    fn from_store(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            other => StorageError::Store(other),
        }
    }
}

/// What was stored: its size and sha256, computed on the way in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Bytes.
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// An object's size and ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Bytes.
    pub size: u64,
    /// The store's entity tag, if it has one.
    pub e_tag: Option<String>,
}

impl From<ObjectMeta> for Meta {
    fn from(m: ObjectMeta) -> Self {
        Meta { size: m.size, e_tag: m.e_tag }
    }
}

/// The file store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The directory of the local store, to fsync what lands there.
    local_root: Option<PathBuf>,
    description: String,
    /// Every request made, by operation.
    stats: Arc<StoreStats>,
}

impl Storage {
    /// `STORAGE_URL` unset: local files under `STORAGE_DIR` (required; created if missing).
    /// `STORAGE_URL=s3://bucket[/prefix]`: S3 (see the module docs). A bad value names its
    /// variable; credentials never appear in errors or in [`Storage::describe`].
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.get("STORAGE_URL") {
            Some(url) => Self::s3(url, env),
            None => {
                let dir = env.required("STORAGE_DIR")?;
                Self::local(FsPath::new(&dir)).map_err(|e| ConfigError::new("STORAGE_DIR", format!("{dir}: {e}")))
            }
        }
    }

    /// S3-compatible object storage at `url` (`s3://bucket[/prefix]`), with the `AWS_*`
    /// variables of `env`. Requests time out after [`S3_TIMEOUT`] and are retried twice at most,
    /// so a store that is down is known within seconds (uploads then get 503).
    fn s3(url: &str, env: &Env) -> Result<Self, ConfigError> {
        let bad = |m: String| ConfigError::new("STORAGE_URL", m);
        let rest = url.strip_prefix("s3://").ok_or_else(|| bad(format!("{url:?}: only s3:// URLs are supported")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || bucket.contains(['?', '#', '@']) {
            return Err(bad(format!("{url:?}: expected s3://bucket or s3://bucket/prefix")));
        }
        let prefix = prefix.trim_matches('/');
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(env.get("AWS_REGION").unwrap_or("us-east-1"))
            .with_client_options(ClientOptions::new().with_timeout(S3_TIMEOUT).with_connect_timeout(S3_CONNECT_TIMEOUT))
            .with_retry(RetryConfig { max_retries: 2, retry_timeout: S3_TIMEOUT, ..RetryConfig::default() });
        let mut at = "AWS".to_owned();
        if let Some(endpoint) = env.get("AWS_ENDPOINT_URL") {
            let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", ""));
            // The host and port only: never userinfo, path or query in a description.
            let host = rest.split(['/', '?', '#']).next().unwrap_or("").rsplit('@').next().unwrap_or("");
            if !matches!(scheme, "http" | "https") || host.is_empty() {
                return Err(ConfigError::new("AWS_ENDPOINT_URL", "expected http(s)://host[:port]"));
            }
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(scheme == "http")
                .with_virtual_hosted_style_request(false);
            at = format!("{scheme}://{host}");
        }
        match (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => builder = builder.with_access_key_id(id).with_secret_access_key(secret),
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::new("AWS_SECRET_ACCESS_KEY", "is required with AWS_ACCESS_KEY_ID"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new("AWS_ACCESS_KEY_ID", "is required with AWS_SECRET_ACCESS_KEY"));
            }
        }
        let s3 = builder.build().map_err(|e| bad(format!("{url:?}: {e}")))?;
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) };
        Ok(Storage {
            store,
            local_root: None,
            description: format!("S3 bucket {bucket} prefix /{prefix} at {at}"),
            stats: Arc::new(StoreStats::new("s3")),
        })
    }

    /// Local files under `dir`.
    pub fn local(dir: &FsPath) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        let root = dir.canonicalize()?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Storage {
            store: Arc::new(store),
            description: format!("local files under {}", root.display()),
            local_root: Some(root),
            stats: Arc::new(StoreStats::new("local")),
        })
    }

    /// What the store is, for logs and ops pages (no credentials).
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The counters of every request made to the store (shared by clones).
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// Shows the store's counters in `registry` (the `storage_*` series of [`stats`]) and in the
    /// process's heartbeat, where health-svc's `/ops` reads them.
    pub fn report(&self, registry: &mut prometheus_client::registry::Registry, connections: &queue_core::Connections) {
        self.stats.register(registry);
        let stats = self.stats.clone();
        connections.report_in_heartbeat(stats::HEARTBEAT_FACT, move || {
            serde_json::to_value(stats.snapshot()).unwrap_or_default()
        });
    }

    /// Runs one request of `op`, counting it. A missing object is an answer, not a failure of
    /// the store.
    async fn timed<T>(
        &self,
        op: StoreOp,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let started = Instant::now();
        let result = request.await;
        let error = match &result {
            Err(e) if !matches!(e, object_store::Error::NotFound { .. }) => Some(e as &dyn std::fmt::Display),
            _ => None,
        };
        self.stats.record(op, started.elapsed(), error);
        result
    }

    /// The key of a file's upload.
    pub fn original_key(id: Uuid) -> Path {
        Path::from_iter(["files", &id.to_string(), "original"])
    }

    /// The key of a file's artifact `name` (a name this product chose, e.g. `thumbnail.jpg`).
    pub fn artifact_key(id: Uuid, name: &str) -> Path {
        Path::from_iter(["files", &id.to_string(), "artifacts", name])
    }

    /// Streams `body` into `key`, at most `limit` bytes, computing size and sha256 on the way.
    /// On any error (too large, the body failing, the store failing) the upload is aborted and
    /// nothing is left under `key`.
    pub async fn put_stream<S, E>(&self, key: &Path, body: S, limit: u64) -> Result<Stored, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.timed(StoreOp::CreateUpload, self.store.put_multipart(key)).await;
        let upload =
            Box::new(MeteredUpload { inner: upload.map_err(StorageError::from_store)?, stats: self.stats.clone() });
        let mut writer = AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)));
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = body;
        let failed = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(StorageError::Source(e.to_string())),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > limit {
                        break Some(StorageError::TooLarge { limit });
                    }
                    hasher.update(&chunk);
                    // At most one part in flight, and the body is not read meanwhile: memory stays
                    // at about one part (5 MiB) whatever the file's size and the store's speed,
                    // at the cost of reading and sending in turn rather than at once.
                    if let Err(e) = writer.get().wait_for_capacity(PARTS_IN_FLIGHT).await {
                        break Some(StorageError::from_store(e));
                    }
                    writer.get().put(chunk);
                }
            }
        };
        let writer = writer.0.take().expect("the upload is still open");
        if let Some(e) = failed {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key = %key, error = %abort, "could not abort an upload");
            }
            return Err(e);
        }
        // `finish` sends the last part and completes the upload, aborting it itself when it fails.
        // It runs as a task of its own, so that a request dropped meanwhile cannot leave the
        // upload half done: the task completes or aborts it either way.
        let finished = tokio::spawn(writer.finish()).await;
        finished.map_err(|e| StorageError::Io(std::io::Error::other(e)))?.map_err(StorageError::from_store)?;
        self.sync(key).await?;
        Ok(Stored { size, sha256: hex::encode(hasher.finalize()) })
    }

    /// Makes what landed under `key` durable (local store: fsync the file and its directory).
    async fn sync(&self, key: &Path) -> Result<(), StorageError> {
        let Some(root) = &self.local_root else { return Ok(()) };
        let path = root.join(key.as_ref());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&path)?.sync_all()?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    /// Uploads a local file (a derivative a worker made) to `key`.
    pub async fn put_file(&self, key: &Path, file: &FsPath) -> Result<Stored, StorageError> {
        let reader = tokio::fs::File::open(file).await?;
        let stream = tokio_util_stream(reader);
        self.put_stream(key, stream, u64::MAX).await
    }

    /// Size and ETag of `key`.
    pub async fn head(&self, key: &Path) -> Result<Meta, StorageError> {
        self.timed(StoreOp::Head, self.store.head(key)).await.map(Meta::from).map_err(StorageError::from_store)
    }

    /// The bytes of `key` (a `range` of them when given), as a stream, with the object's meta
    /// and the range actually served.
    pub async fn get(
        &self,
        key: &Path,
        range: Option<Range<u64>>,
    ) -> Result<(Meta, Range<u64>, BoxStream<'static, Result<Bytes, StorageError>>), StorageError> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let got =
            self.timed(StoreOp::Get, self.store.get_opts(key, options)).await.map_err(StorageError::from_store)?;
        let (meta, served) = (Meta::from(got.meta.clone()), got.range.clone());
        let stats = self.stats.clone();
        let body = got.into_stream().inspect(move |chunk| match chunk {
            Ok(bytes) => stats.bytes(StoreOp::Get, bytes.len() as u64),
            Err(e) => stats.failed(StoreOp::Get, e),
        });
        Ok((meta, served, body.map_err(StorageError::from_store).boxed()))
    }

    /// Copies `key` to a local file (ffmpeg reads files), returning its size and sha256.
    pub async fn download_to(&self, key: &Path, file: &FsPath) -> Result<Stored, StorageError> {
        let (_, _, mut stream) = self.get(key, None).await?;
        let mut out = tokio::fs::File::create(file).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(Stored { size, sha256: hex::encode(hasher.finalize()) })
    }

    /// Deletes every object of file `id` (its upload and artifacts); deleting nothing is fine.
    pub async fn delete_file(&self, id: Uuid) -> Result<(), StorageError> {
        let prefix = Path::from_iter(["files", &id.to_string()]);
        let listing = self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect::<Vec<Path>>();
        let keys = self.timed(StoreOp::List, listing).await?;
        for key in keys {
            match self.timed(StoreOp::Delete, self.store.delete(&key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A cheap request that proves the store answers (readiness).
    pub async fn ping(&self) -> Result<(), StorageError> {
        let probe = Path::from("files");
        let listing = self.store.list_with_delimiter(Some(&probe));
        self.timed(StoreOp::List, listing).await.map(drop).map_err(StorageError::from_store)
    }
}

/// An upload being written, aborted if dropped unfinished: an upload request whose client went
/// away may be dropped (cancelled) by the server in the middle of a part, and must not leave an
/// incomplete multipart upload behind.
struct AbortOnDrop(Option<WriteMultipart>);

impl AbortOnDrop {
    fn get(&mut self) -> &mut WriteMultipart {
        self.0.as_mut().expect("the upload is still open")
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(writer) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = writer.abort().await {
                        tracing::warn!(error = %e, "could not abort a cancelled upload");
                    }
                });
            }
            Err(_) => tracing::warn!("a cancelled upload could not be aborted: no runtime"),
        }
    }
}

/// A multipart upload whose requests are counted in the store's [`StoreStats`].
#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    stats: Arc<StoreStats>,
}

#[async_trait::async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let bytes = data.content_length() as u64;
        let stats = self.stats.clone();
        let request = self.inner.put_part(data);
        Box::pin(async move {
            let started = Instant::now();
            let result = request.await;
            stats.record(StoreOp::PutPart, started.elapsed(), result.as_ref().err().map(|e| e as _));
            if result.is_ok() {
                stats.bytes(StoreOp::PutPart, bytes);
            }
            result
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let started = Instant::now();
        let result = self.inner.complete().await;
        self.stats.record(StoreOp::CompleteUpload, started.elapsed(), result.as_ref().err().map(|e| e as _));
        result
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let started = Instant::now();
        let result = self.inner.abort().await;
        self.stats.record(StoreOp::AbortUpload, started.elapsed(), result.as_ref().err().map(|e| e as _));
        result
    }
}

/// A file as a stream of byte chunks.
fn tokio_util_stream(file: tokio::fs::File) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    use tokio::io::AsyncReadExt;
    Box::pin(futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[test]
    fn s3_configuration_names_the_variable_at_fault_and_hides_credentials() {
        let env = |pairs: &[(&'static str, &'static str)]| Env::from_pairs(pairs.iter().copied());
        let var = |pairs: &[(&'static str, &'static str)]| Storage::from_env(&env(pairs)).unwrap_err().var;
        assert_eq!(var(&[("STORAGE_URL", "gs://bucket")]), "STORAGE_URL");
        assert_eq!(var(&[("STORAGE_URL", "s3://")]), "STORAGE_URL");
        assert_eq!(var(&[("STORAGE_URL", "s3://b"), ("AWS_ENDPOINT_URL", "garage:3900")]), "AWS_ENDPOINT_URL");
        assert_eq!(var(&[("STORAGE_URL", "s3://b"), ("AWS_ACCESS_KEY_ID", "GK1")]), "AWS_SECRET_ACCESS_KEY");
        let storage = Storage::from_env(&env(&[
            ("STORAGE_URL", "s3://files/stack-a/"),
            ("AWS_ENDPOINT_URL", "http://user:pw@127.0.0.1:3900/"),
            ("AWS_ACCESS_KEY_ID", "GK0123"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
        ]))
        .unwrap();
        let described = storage.describe();
        assert_eq!(described, "S3 bucket files prefix /stack-a at http://127.0.0.1:3900");
        assert!(!described.contains("very-secret") && !described.contains("pw"));
    }

    #[tokio::test]
    async fn an_upload_is_whole_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let id = Uuid::new_v4();
        let key = Storage::original_key(id);
        let stored = storage.put_stream(&key, chunks(&[b"hello ", b"world"]), 100).await.unwrap();
        assert_eq!(stored.size, 11);
        assert_eq!(stored.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        let (meta, served, body) = storage.get(&key, Some(6..11)).await.unwrap();
        assert_eq!((meta.size, served), (11, 6..11));
        let bytes: Vec<Bytes> = body.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"world");

        let big = Storage::artifact_key(id, "big");
        let err = storage.put_stream(&big, chunks(&[b"0123456789", b"0123456789"]), 15).await.unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { limit: 15 }));
        assert!(matches!(storage.head(&big).await, Err(StorageError::NotFound)));
        storage.delete_file(id).await.unwrap();
        assert!(matches!(storage.head(&key).await, Err(StorageError::NotFound)));
        // Nothing is left on disk: no staged part, no directory entry for the aborted upload.
        let leftovers: Vec<_> = walk(dir.path());
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn an_upload_dropped_midway_is_aborted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let key = Storage::original_key(Uuid::new_v4());
        // A body that sends 6 MiB (a part goes out) and then never ends, like a client that
        // stalled; the server gives up on the request, dropping the upload.
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 6 << 20]))]);
        let body = Box::pin(first.chain(futures_util::stream::pending()));
        let cut = tokio::time::timeout(std::time::Duration::from_millis(300), storage.put_stream(&key, body, u64::MAX));
        assert!(cut.await.is_err(), "the upload was still waiting for its body");
        let staged = walk(dir.path());
        assert!(!staged.is_empty(), "the upload had staged its first part");
        for _ in 0..100 {
            if walk(dir.path()).is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(walk(dir.path()).is_empty(), "staged parts remain: {:?}", walk(dir.path()));
        assert_eq!(storage.stats().snapshot().ops["abort_upload"].requests, 1);
    }

    fn walk(dir: &FsPath) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                out.extend(walk(&entry.path()));
            } else {
                out.push(entry.path());
            }
        }
        out
    }
}
