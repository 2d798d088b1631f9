//! The one wall clock of the crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, by this host's clock. Bull schedules delayed jobs and
/// stamps `timestamp`, `processedOn` and `finishedOn` by the client's clock too; only lock
/// expiry runs on the server's.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
