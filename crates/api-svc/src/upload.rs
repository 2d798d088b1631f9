//! Receiving an upload: a raw body, or `multipart/form-data` with a part `file` and an optional
//! field `callback_url`, streamed chunk by chunk into the store (never buffered whole), with
//! `MAX_UPLOAD_BYTES` enforced while it streams and sha256 and size computed on the way.
//!
//! Whatever fails after bytes reached the store deletes them again before the error goes out,
//! so a refused upload leaves nothing behind. A body over the limit is read on and discarded up
//! to [`DRAIN_LIMIT`] more bytes, so the client, still sending, gets to read its 413.

use std::time::Duration;

use actix_multipart::Multipart;
use std::pin::Pin;

use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::web;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use platform::storage::{Storage, StorageError, Stored};
use uuid::Uuid;

use crate::error::{ApiError, Dependency};
use crate::filename;
use crate::state::AppState;

/// The header that names a raw upload's file.
pub(crate) const FILENAME_HEADER: &str = "x-filename";
/// The multipart part that holds the file.
pub(crate) const FILE_FIELD: &str = "file";
/// The multipart field (or, for a raw body, the query parameter) with the callback URL.
pub(crate) const CALLBACK_FIELD: &str = "callback_url";
/// After the limit is exceeded, at most this many more bytes are read and discarded.
pub(crate) const DRAIN_LIMIT: u64 = 16 << 20;
/// How long discarding the rest of an oversized body may take.
const DRAIN_TIME: Duration = Duration::from_secs(10);
/// Longest accepted callback URL.
const MAX_CALLBACK_BYTES: usize = 2048;
/// Longest accepted content type.
const MAX_CONTENT_TYPE: usize = 255;
/// How long an upload may go without a byte before it is abandoned (400 `invalid_body` or
/// `invalid_multipart`, nothing kept): a client cannot hold a connection and a staged file
/// open by trickling.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long resolving a callback's host may take.
const CALLBACK_CHECK_TIME: Duration = Duration::from_secs(5);

/// An upload that is in the store, whole, under [`Storage::original_key`] of its id.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    /// The client's filename, sanitized.
    pub filename: String,
    /// The client's content type.
    pub content_type: Option<String>,
    /// The callback, checked against the policy.
    pub callback_url: Option<String>,
    /// Size and sha256.
    pub stored: Stored,
}

/// Receives the request's body into the store as file `id`. `query_callback` is the
/// `?callback_url=` parameter (for a raw body; a multipart body may use it or its field, not
/// both).
pub(crate) async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    query_callback: Option<String>,
    payload: web::Payload,
    id: Uuid,
) -> Result<Received, ApiError> {
    // Checked before any byte is read: a refused callback stores nothing.
    let query_callback = match query_callback.filter(|u| !u.is_empty()) {
        Some(url) => Some(check_callback(state, &url).await?),
        None => None,
    };
    let payload = idle_limited(payload, BODY_IDLE_TIMEOUT);
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/"));
    if multipart {
        let mut parts = Parts { query_callback, ..Parts::default() };
        let mut form = Multipart::new(headers, payload);
        let result = read_parts(state, &mut form, &mut parts, id).await;
        let result = result.and_then(|()| {
            let stored = parts.stored.clone().ok_or_else(|| {
                ApiError::bad_request("missing_file", format!("the multipart body has no part named {FILE_FIELD:?}"))
            })?;
            if stored.size == 0 {
                return Err(empty_body());
            }
            Ok(Received {
                filename: parts.filename.clone().unwrap_or_default(),
                content_type: parts.content_type.clone(),
                callback_url: parts.callback_url.clone().or(parts.query_callback.clone()),
                stored,
            })
        });
        if result.is_err() && parts.stored.is_some() {
            discard(&state.storage, id).await;
        }
        result
    } else {
        receive_raw(state, headers, query_callback, payload, id).await
    }
}

/// A request body that fails when no chunk arrives for a while.
type Body = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// `payload`, failing with a timed-out I/O error after `idle` without a chunk.
fn idle_limited<S>(payload: S, idle: Duration) -> Body
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
{
    Box::pin(
        futures_util::stream::unfold(Some(payload), move |state| async move {
            let mut payload = state?;
            match tokio::time::timeout(idle, payload.next()).await {
                Ok(Some(item)) => Some((item, Some(payload))),
                Ok(None) => None,
                Err(_) => {
                    let stalled =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no data for {} s", idle.as_secs()));
                    Some((Err(PayloadError::Io(stalled)), None))
                }
            }
        })
        // The multipart parser may poll again after the end.
        .fuse(),
    )
}

fn empty_body() -> ApiError {
    ApiError::bad_request("empty_body", "the upload is empty")
}

async fn receive_raw(
    state: &AppState,
    headers: &HeaderMap,
    query_callback: Option<String>,
    mut payload: Body,
    id: Uuid,
) -> Result<Received, ApiError> {
    let filename = headers
        .get(FILENAME_HEADER)
        .and_then(|v| filename::sanitize(&String::from_utf8_lossy(v.as_bytes())))
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_filename",
                "a raw upload names its file in the X-Filename header (or send multipart/form-data)",
            )
        })?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(content_type(v.to_str().ok())?),
    };
    let callback_url = query_callback;
    let limit = state.max_upload_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(0) => return Err(empty_body()),
        Some(n) if n > limit => {
            drain(&mut payload).await;
            return Err(ApiError::TooLarge { limit });
        }
        _ => {}
    }
    let key = Storage::original_key(id);
    let stored = match state.storage.put_stream(&key, &mut payload, limit).await {
        Ok(stored) => stored,
        Err(StorageError::TooLarge { limit }) => {
            drain(&mut payload).await;
            return Err(ApiError::TooLarge { limit });
        }
        Err(e) => return Err(store_error(e, "invalid_body")),
    };
    if stored.size == 0 {
        discard(&state.storage, id).await;
        return Err(empty_body());
    }
    Ok(Received { filename, content_type, callback_url, stored })
}

/// What a multipart body said so far.
#[derive(Default)]
struct Parts {
    query_callback: Option<String>,
    callback_url: Option<String>,
    filename: Option<String>,
    content_type: Option<String>,
    stored: Option<Stored>,
}

async fn read_parts(state: &AppState, form: &mut Multipart, parts: &mut Parts, id: Uuid) -> Result<(), ApiError> {
    while let Some(field) = form.next().await {
        let mut field = field.map_err(invalid_multipart)?;
        match field.name() {
            Some(FILE_FIELD) => {
                if parts.stored.is_some() {
                    return Err(ApiError::bad_request("duplicate_field", "only one part named \"file\" is allowed"));
                }
                let disposition = field.content_disposition();
                let raw_name = disposition
                    .and_then(|d| d.get_filename_ext())
                    .map(|ext| String::from_utf8_lossy(&ext.value).into_owned())
                    .or_else(|| disposition.and_then(|d| d.get_filename()).map(str::to_owned));
                let name = raw_name.as_deref().and_then(filename::sanitize).ok_or_else(|| {
                    ApiError::bad_request(
                        "missing_filename",
                        "the part \"file\" needs a filename in its Content-Disposition",
                    )
                })?;
                let content_type = match field.content_type() {
                    Some(mime) => Some(content_type(Some(mime.as_ref()))?),
                    None => None,
                };
                let limit = state.max_upload_bytes;
                let key = Storage::original_key(id);
                match state.storage.put_stream(&key, &mut field, limit).await {
                    Ok(stored) => parts.stored = Some(stored),
                    Err(StorageError::TooLarge { limit }) => {
                        drain_multipart(field, form).await;
                        return Err(ApiError::TooLarge { limit });
                    }
                    Err(e) => return Err(store_error(e, "invalid_multipart")),
                }
                parts.filename = Some(name);
                parts.content_type = content_type;
            }
            Some(CALLBACK_FIELD) => {
                if parts.callback_url.is_some() || parts.query_callback.is_some() {
                    return Err(ApiError::bad_request("duplicate_field", "give callback_url once"));
                }
                let url = read_text(&mut field, MAX_CALLBACK_BYTES).await?;
                if !url.is_empty() {
                    parts.callback_url = Some(check_callback(state, &url).await?);
                }
            }
            other => {
                let name = other.unwrap_or("");
                return Err(ApiError::bad_request(
                    "unexpected_field",
                    format!("unexpected multipart field {name:?}: only \"file\" and \"callback_url\" are read"),
                ));
            }
        }
    }
    Ok(())
}

/// A small text field, whole.
async fn read_text<S, E>(field: &mut S, max: usize) -> Result<String, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut text = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(invalid_multipart)?;
        if text.len() + chunk.len() > max {
            return Err(ApiError::bad_request("field_too_long", format!("a text field is limited to {max} bytes")));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text)
        .map(|s| s.trim().to_owned())
        .map_err(|_| ApiError::bad_request("invalid_multipart", "a text field is not UTF-8"))
}

fn invalid_multipart(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_multipart", format!("the multipart body is malformed: {e}"))
}

/// A content type worth keeping: a media type as RFC 9110 writes one (`type/subtype`, tokens,
/// then parameters), short. It is kept as the client wrote it.
fn content_type(raw: Option<&str>) -> Result<String, ApiError> {
    match raw.map(str::trim) {
        Some(ct) if ct.len() <= MAX_CONTENT_TYPE && is_media_type(ct) => Ok(ct.to_owned()),
        _ => Err(ApiError::bad_request("invalid_content_type", "the content type is not a valid media type")),
    }
}

/// `type "/" subtype *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] )` (RFC 9110 §8.3.1).
fn is_media_type(text: &str) -> bool {
    fn tchar(c: u8) -> bool {
        c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
    }
    fn token(s: &[u8]) -> usize {
        s.iter().take_while(|c| tchar(**c)).count()
    }
    fn ows(s: &[u8]) -> usize {
        s.iter().take_while(|c| **c == b' ' || **c == b'\t').count()
    }
    /// The length of a quoted string at the start of `s`, if one is there, closed.
    fn quoted(s: &[u8]) -> Option<usize> {
        let mut i = 1;
        while i < s.len() {
            match s[i] {
                b'"' => return Some(i + 1),
                b'\\' if i + 1 < s.len() => i += 2,
                c if c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80 => i += 1,
                _ => return None,
            }
        }
        None
    }
    let s = text.as_bytes();
    let type_len = token(s);
    if type_len == 0 || s.get(type_len) != Some(&b'/') {
        return false;
    }
    let mut i = type_len + 1;
    let subtype_len = token(&s[i..]);
    if subtype_len == 0 {
        return false;
    }
    i += subtype_len;
    loop {
        i += ows(&s[i..]);
        if i == s.len() {
            return true;
        }
        if s[i] != b';' {
            return false;
        }
        i += 1;
        i += ows(&s[i..]);
        if i == s.len() || s[i] == b';' {
            continue;
        }
        let name = token(&s[i..]);
        if name == 0 || s.get(i + name) != Some(&b'=') {
            return false;
        }
        i += name + 1;
        let value = if s.get(i) == Some(&b'"') { quoted(&s[i..]) } else { Some(token(&s[i..])).filter(|n| *n > 0) };
        match value {
            Some(n) => i += n,
            None => return false,
        }
    }
}

/// The callback URL, if callbacks are enabled and the policy accepts it.
async fn check_callback(state: &AppState, url: &str) -> Result<String, ApiError> {
    if !state.callbacks_enabled {
        return Err(ApiError::bad_request(
            "callbacks_disabled",
            "callbacks are disabled on this service (no WEBHOOK_SECRET is configured)",
        ));
    }
    match tokio::time::timeout(CALLBACK_CHECK_TIME, state.callback_policy.check(url)).await {
        Ok(Ok(checked)) => Ok(checked.url),
        Ok(Err(refused)) => Err(ApiError::bad_request("callback_refused", refused.to_string())),
        Err(_) => {
            Err(ApiError::bad_request("callback_refused", "callback_url refused: its host did not resolve in time"))
        }
    }
}

/// A storage error while receiving: the body failing is the client's (`body_code`), the store
/// failing is a 503.
fn store_error(e: StorageError, body_code: &'static str) -> ApiError {
    match e {
        StorageError::Source(cause) => ApiError::bad_request(body_code, format!("reading the upload failed: {cause}")),
        StorageError::TooLarge { limit } => ApiError::TooLarge { limit },
        other => ApiError::unavailable(Dependency::Storage, other),
    }
}

/// Deletes what was stored for `id`; a failure is logged (the object is an orphan then).
pub(crate) async fn discard(storage: &Storage, id: Uuid) {
    if let Err(e) = storage.delete_file(id).await {
        tracing::error!(file_id = %id, error = %e, "could not delete a refused upload's content");
    }
}

/// Reads and discards the rest of a body, up to [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`].
async fn drain<S, E>(body: &mut S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut left = DRAIN_LIMIT;
    let _ = tokio::time::timeout(DRAIN_TIME, drain_some(body, &mut left)).await;
}

async fn drain_some<S, E>(body: &mut S, left: &mut u64) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    while let Some(Ok(chunk)) = body.next().await {
        match left.checked_sub(chunk.len() as u64) {
            Some(rest) => *left = rest,
            None => return false,
        }
    }
    true
}

/// [`drain`] for a multipart body: the rest of the current part, then the other parts. The
/// part is dropped before the next is asked for: the body only reaches the newest owner.
async fn drain_multipart(mut field: actix_multipart::Field, form: &mut Multipart) {
    let mut left = DRAIN_LIMIT;
    let all = async {
        if !drain_some(&mut field, &mut left).await {
            return;
        }
        drop(field);
        while let Some(Ok(mut next)) = form.next().await {
            if !drain_some(&mut next, &mut left).await {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, all).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_kept_when_they_look_like_media_types() {
        assert_eq!(content_type(Some(" image/png ")).unwrap(), "image/png");
        assert_eq!(content_type(Some("text/plain; charset=utf-8")).unwrap(), "text/plain; charset=utf-8");
        assert!(content_type(Some("nonsense")).is_err());
        for malformed in ["/", "a/", "/b", "a b/c", "a/b c", "a/b; charset", "a/b/c", "(a)/b", "a/b;=x"] {
            assert!(content_type(Some(malformed)).is_err(), "{malformed:?} is not a media type");
        }
        for fine in [
            "application/vnd.api+json",
            "text/plain;charset=utf-8",
            "text/plain ; charset=\"utf-8\" ; format=flowed",
            "multipart/mixed; boundary=\"a \\\"b\\\" c\"",
            "text/plain;",
        ] {
            assert_eq!(content_type(Some(fine)).unwrap(), fine, "{fine:?} is a media type");
        }
        for malformed in ["text/plain; charset=\"open", "text/plain; =x", "text/plain; a=b c", "a/b\u{7f}"] {
            assert!(content_type(Some(malformed)).is_err(), "{malformed:?} is not a media type");
        }
        assert!(content_type(None).is_err());
        assert!(content_type(Some(&format!("a/{}", "b".repeat(300)))).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_fails_after_the_idle_timeout() {
        let first = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"some"))]);
        let mut body = idle_limited(first.chain(futures_util::stream::pending()), BODY_IDLE_TIMEOUT);
        assert_eq!(body.next().await.unwrap().unwrap(), Bytes::from_static(b"some"));
        let started = tokio::time::Instant::now();
        let stalled = body.next().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), BODY_IDLE_TIMEOUT);
        assert!(stalled.to_string().contains("no data for 30 s"), "{stalled}");
        assert!(body.next().await.is_none(), "ends after the error");
        assert!(body.next().await.is_none(), "and may be polled again (the multipart parser does)");
    }

    #[tokio::test]
    async fn draining_stops_at_the_limit() {
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        let endless = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        let mut body = Box::pin(endless);
        let mut left = 3 << 20;
        assert!(!drain_some(&mut body, &mut left).await);
        let mut short = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))]);
        let mut left = 10;
        assert!(drain_some(&mut short, &mut left).await);
        assert_eq!(left, 7);
    }
}
