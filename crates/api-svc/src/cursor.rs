//! The list's cursor: the position `(created_at, id)` of the last file of a page, opaque to
//! clients (base64url of 8 bytes of microseconds and 16 bytes of id). Keyset pagination: pages
//! stay stable while files are added.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where a page ends.
pub(crate) type Position = (DateTime<Utc>, Uuid);

/// The cursor of `position`.
pub(crate) fn encode(position: Position) -> String {
    let mut raw = [0u8; 24];
    raw[..8].copy_from_slice(&position.0.timestamp_micros().to_be_bytes());
    raw[8..].copy_from_slice(position.1.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// The latest time a cursor may name: 9999-12-31T23:59:59.999999Z. Rows are created now, so
/// no cursor this API gives is outside 1970 to 9999; a forged one could name a time Postgres
/// cannot compare with (before 4713 BC), which must be a 400, not a failed query.
const LATEST_MICROS: i64 = 253_402_300_799_999_999;

/// The position in `cursor`, or `None` when it is not one of ours.
pub(crate) fn decode(cursor: &str) -> Option<Position> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let raw: [u8; 24] = raw.try_into().ok()?;
    let micros = i64::from_be_bytes(raw[..8].try_into().ok()?);
    if !(0..=LATEST_MICROS).contains(&micros) {
        return None;
    }
    let at = DateTime::from_timestamp_micros(micros)?;
    Some((at, Uuid::from_bytes(raw[8..].try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_to_the_microsecond_and_refuse_garbage() {
        let at = DateTime::from_timestamp_micros(1_765_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode(&encode((at, id))), Some((at, id)));
        assert_eq!(decode("not-a-cursor"), None);
        assert_eq!(decode(""), None);
        assert_eq!(decode(&URL_SAFE_NO_PAD.encode([1u8; 23])), None);
        // Well-formed, but naming a time no row has (schemathesis sent the first: Postgres
        // refused the comparison, and the list answered 500).
        assert_eq!(decode("00000000000000000000000000000000"), None);
        let before_1970 = DateTime::from_timestamp_micros(-1).unwrap();
        assert_eq!(decode(&encode((before_1970, id))), None);
        let last = DateTime::from_timestamp_micros(LATEST_MICROS).unwrap();
        assert_eq!(last.to_rfc3339(), "9999-12-31T23:59:59.999999+00:00");
        assert_eq!(decode(&encode((last, id))), Some((last, id)));
        let epoch = DateTime::from_timestamp_micros(0).unwrap();
        assert_eq!(decode(&encode((epoch, id))), Some((epoch, id)));
    }
}
