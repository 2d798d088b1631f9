//! `Idempotency-Key`, with Stripe's semantics: within [`WINDOW`], the same key from the same
//! token with the same request gets the first upload's answer again (no second file); the same
//! key with another request is a 409. Keys are scoped by token, so two callers cannot collide.
//!
//! "The same request" is the same content (sha256 and size), filename, content type and
//! callback: the [`request_hash`] of what was received.

use std::time::Duration;

use actix_web::http::header::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::upload::Received;

/// The header.
pub(crate) const HEADER: &str = "idempotency-key";
/// How long a key is remembered.
pub(crate) const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Longest key accepted (Stripe's limit).
pub(crate) const MAX_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII characters.
pub(crate) fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The digest of what an upload request said, to tell a retry from another request.
pub(crate) fn request_hash(received: &Received) -> String {
    let canonical = serde_json::json!({
        "sha256": received.stored.sha256,
        "size": received.stored.size,
        "filename": received.filename,
        "content_type": received.content_type,
        "callback_url": received.callback_url,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};
    use platform::storage::Stored;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(HeaderName::from_static(HEADER), HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn keys_are_checked_and_requests_compared_by_what_they_said() {
        assert_eq!(key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(key(&headers("order-42")).unwrap().as_deref(), Some("order-42"));
        assert!(key(&headers("has space")).is_err());
        assert!(key(&headers(&"k".repeat(256))).is_err());

        let a = Received {
            filename: "a.txt".into(),
            content_type: Some("text/plain".into()),
            callback_url: None,
            stored: Stored { size: 3, sha256: "abc".into() },
        };
        let mut b = a.clone();
        assert_eq!(request_hash(&a), request_hash(&b));
        b.filename = "b.txt".into();
        assert_ne!(request_hash(&a), request_hash(&b));
    }
}
