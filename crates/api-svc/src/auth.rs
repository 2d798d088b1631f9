//! Bearer tokens: `Authorization: Bearer <token>` against the configured tokens.
//!
//! Tokens are kept only as sha256 digests. A presented token is hashed and compared with every
//! configured digest, all of them, each in constant time, so neither the position of a match
//! nor the length of a common prefix shows in the response time. A caller is known afterwards by
//! its [`TokenId`], a digest that can be stored and logged; the token itself never is.

use std::fmt;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Tokens shorter than this are accepted with a warning at start-up.
const SHORT_TOKEN: usize = 16;

/// Who uploaded a file, without the token: 32 hex characters of a sha256 of the token under
/// its own label (not the digest used for comparison).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenId(String);

impl TokenId {
    /// The id as stored in `files.token_id`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

struct Token {
    digest: [u8; 32],
    id: TokenId,
}

/// The configured tokens, as digests. `Debug` prints only their number.
pub(crate) struct Tokens {
    tokens: Vec<Token>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.tokens.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Equal in time independent of where the digests differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Tokens {
    /// The tokens given; refuses none at all, and tokens with whitespace or control characters
    /// (a pasted newline would otherwise become part of a token no client can send).
    pub(crate) fn new<I, S>(tokens: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for (n, token) in tokens.into_iter().enumerate() {
            let token = token.as_ref();
            if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("token #{} is empty or contains whitespace or control characters", n + 1));
            }
            if token.len() < SHORT_TOKEN {
                tracing::warn!(token = n + 1, "an API token is shorter than {SHORT_TOKEN} characters");
            }
            let mut label = b"api-svc token id\0".to_vec();
            label.extend_from_slice(token.as_bytes());
            let id = TokenId(hex::encode(&digest(&label)[..16]));
            out.push(Token { digest: digest(token.as_bytes()), id });
        }
        if out.is_empty() {
            return Err("no token configured".to_owned());
        }
        Ok(Tokens { tokens: out })
    }

    /// How many tokens are configured.
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The id of the token `presented` matches, comparing against every token.
    pub(crate) fn authenticate(&self, presented: &[u8]) -> Option<TokenId> {
        let presented = digest(presented);
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(&token.digest, &presented) {
                found = Some(token.id.clone());
            }
        }
        found
    }
}

/// An authenticated caller: the extractor that guards every `/v1` route.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// Which token it presented.
    pub token_id: TokenId,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal("no app state"))?;
    let value = req.headers().get(header::AUTHORIZATION).ok_or(ApiError::Unauthorized)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ').ok_or(ApiError::Unauthorized)?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(ApiError::Unauthorized);
    }
    let token = token.trim_ascii();
    let token_id = state.tokens.authenticate(token).ok_or(ApiError::Unauthorized)?;
    Ok(Caller { token_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_are_never_printed() {
        let tokens = Tokens::new(["alpha-token-0123456789", "beta-token-0123456789"]).unwrap();
        let a = tokens.authenticate(b"alpha-token-0123456789").unwrap();
        let b = tokens.authenticate(b"beta-token-0123456789").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(tokens.authenticate(b"alpha-token-012345678").is_none());
        assert!(tokens.authenticate(b"").is_none());
        assert_eq!(format!("{tokens:?}"), "Tokens(2 configured)");
        assert!(Tokens::new(Vec::<String>::new()).is_err());
        assert!(Tokens::new(["has space"]).is_err());
        assert!(constant_time_eq(&[7; 32], &[7; 32]) && !constant_time_eq(&[7; 32], &[8; 32]));
    }
}
