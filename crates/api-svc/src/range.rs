//! Single byte ranges (RFC 9110 §14): `bytes=a-b`, `bytes=a-` and `bytes=-n`.
//!
//! A header this API does not serve as a range (another unit, several ranges, a malformed
//! spec) is ignored and the whole content is sent, as the RFC allows. A well-formed range that
//! starts past the end is unsatisfiable (416).

use std::ops::Range;

/// What to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Requested {
    /// Everything (200).
    Full,
    /// These bytes (206).
    Partial(Range<u64>),
    /// Nothing can be sent (416).
    Unsatisfiable,
}

/// Interprets a `Range` header against content of `size` bytes.
pub(crate) fn requested(header: Option<&str>, size: u64) -> Requested {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Requested::Full };
    if spec.contains(',') {
        return Requested::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Requested::Full };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => Requested::Full,
        // Suffix: the last n bytes.
        (true, false) => match number(last) {
            None => Requested::Full,
            Some(0) => Requested::Unsatisfiable,
            Some(_) if size == 0 => Requested::Unsatisfiable,
            Some(n) => Requested::Partial(size.saturating_sub(n)..size),
        },
        (false, open_end) => {
            let Some(start) = number(first) else { return Requested::Full };
            let end = if open_end {
                size
            } else {
                match number(last) {
                    Some(last) if last >= start => last.saturating_add(1).min(size),
                    _ => return Requested::Full,
                }
            };
            if start >= size { Requested::Unsatisfiable } else { Requested::Partial(start..end) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_are_served_and_the_rest_ignored() {
        let r = |h: &str| requested(Some(h), 100);
        assert_eq!(requested(None, 100), Requested::Full);
        assert_eq!(r("bytes=0-9"), Requested::Partial(0..10));
        assert_eq!(r("bytes=90-"), Requested::Partial(90..100));
        assert_eq!(r("bytes=90-1000"), Requested::Partial(90..100));
        assert_eq!(r("bytes=-10"), Requested::Partial(90..100));
        assert_eq!(r("bytes=-1000"), Requested::Partial(0..100));
        assert_eq!(r("bytes=100-"), Requested::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Requested::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Requested::Full);
        assert_eq!(r("items=0-1"), Requested::Full);
        assert_eq!(r("bytes=5-1"), Requested::Full);
        assert_eq!(r("bytes=x-1"), Requested::Full);
        assert_eq!(r("bytes=+1-2"), Requested::Full);
        assert_eq!(requested(Some("bytes=0-"), 0), Requested::Unsatisfiable);
    }
}
