//! Signing callbacks as the Standard Webhooks specification says
//! (<https://www.standardwebhooks.com/>), so a receiver verifies them with any of its libraries.
//!
//! Three headers go with every POST: `webhook-id` (the same on every retry of one message, so a
//! receiver can deduplicate), `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key
//! is the base64 text after `whsec_` in `WEBHOOK_SECRET`, decoded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
const PREFIX: &str = "whsec_";

/// The signing key of `WEBHOOK_SECRET`. Its `Debug` says nothing about the key.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`. The message never repeats the value.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let encoded = raw.trim().strip_prefix(PREFIX).ok_or("must start with whsec_ (Standard Webhooks form)")?;
        let key = STANDARD.decode(encoded).map_err(|_| "the part after whsec_ is not valid base64".to_owned())?;
        if key.len() < 16 {
            return Err(format!("the key is {} bytes; use at least 16 (24 to 64 is usual)", key.len()));
        }
        Ok(WebhookSecret { key })
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // tidy: not a key (the signature header's version and value)
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_specification_example() {
        // The example of the Standard Webhooks reference libraries' tests.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn malformed_secrets_are_refused_without_echoing_them() {
        for raw in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="] {
            let err = WebhookSecret::parse(raw).unwrap_err();
            assert!(!err.contains(raw), "{err}");
        }
        assert_eq!(
            format!("{:?}", WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()),
            "WebhookSecret(***)"
        );
    }
}
