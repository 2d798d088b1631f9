//! The request id: taken from the client's `X-Request-Id` when it is a sane token, else a new
//! UUID; put in the span every log line of the request is written in, and sent back in the
//! response's `X-Request-Id`. One access line per request, without the query string (it may
//! carry a callback URL) and never a header (the token).

use std::time::Instant;

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// The header.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client-given id kept.
const MAX_LEN: usize = 128;

/// A client's id if it is 1 to 128 of `[A-Za-z0-9._:-]`, else `None`.
fn accepted(raw: &HeaderValue) -> Option<&str> {
    let s = raw.to_str().ok()?;
    let ok = (1..=MAX_LEN).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then_some(s)
}

/// The middleware (`actix_web::middleware::from_fn(request_id::middleware)`).
pub(crate) async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id =
        req.headers().get(HEADER).and_then(accepted).map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let mut response = result?;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(status, elapsed_ms = started.elapsed().as_millis() as u64, "request finished");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_client_ids_are_kept_and_others_replaced() {
        assert_eq!(accepted(&HeaderValue::from_static("abc-123_x.y:z")), Some("abc-123_x.y:z"));
        assert_eq!(accepted(&HeaderValue::from_static("has space")), None);
        assert_eq!(accepted(&HeaderValue::from_static("")), None);
        assert_eq!(accepted(&HeaderValue::from_str(&"a".repeat(129)).unwrap()), None);
    }
}
