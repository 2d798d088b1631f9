//! The server's own facts: `INFO` as a map, a few `CONFIG GET`s, and a latency sample.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use queue_core::Connections;
use queue_core::tooling::Raw;
use serde::Serialize;

/// `INFO` as `field → value`, sections flattened (field names are unique across sections).
#[derive(Clone, Debug, Default)]
pub struct Info(HashMap<String, String>);

impl Info {
    /// Reads `INFO` (every default section).
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    pub async fn read(c: &Connections) -> queue_core::Result<Info> {
        Raw::new(c).query::<String>(&["INFO"]).await.map(|text| Info::parse(&text))
    }

    /// Parses `INFO`'s text.
    pub fn parse(text: &str) -> Info {
        Info(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.trim().split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// A field as text.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A field as an unsigned number.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.str(key)?.parse().ok()
    }

    /// A field as a number.
    pub fn f64(&self, key: &str) -> Option<f64> {
        self.str(key)?.parse().ok()
    }

    /// A field that is a positive number (`aof_enabled:1`).
    pub fn flag(&self, key: &str) -> bool {
        self.u64(key).is_some_and(|v| v > 0)
    }
}

/// `CONFIG GET` of each of `keys`, one call each (Redis 6.2 takes one parameter per call). Never
/// ask for `*`: that would fetch passwords too.
///
/// # Errors
///
/// When the server cannot be asked, or refuses `CONFIG` (managed services often do).
pub async fn config(c: &Connections, keys: &[&str]) -> queue_core::Result<HashMap<String, String>> {
    let mut config = HashMap::new();
    for key in keys {
        let pairs: HashMap<String, String> = Raw::new(c).query(&["CONFIG", "GET", key]).await?;
        config.extend(pairs);
    }
    Ok(config)
}

/// Round trips of `PING` on a connection, as a client sees them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PingSample {
    /// How many pings.
    pub pings: usize,
    /// The fastest, in milliseconds.
    pub min_ms: f64,
    /// The mean.
    pub avg_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

/// Times `pings` round trips of `PING` (at least one).
///
/// # Errors
///
/// The first ping that fails.
pub async fn ping_sample(c: &Connections, pings: usize) -> queue_core::Result<PingSample> {
    let mut took: Vec<Duration> = Vec::new();
    for _ in 0..pings.max(1) {
        let started = Instant::now();
        c.ping().await?;
        took.push(started.elapsed());
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let total: f64 = took.iter().map(ms).sum();
    Ok(PingSample {
        pings: took.len(),
        min_ms: took.iter().map(ms).fold(f64::MAX, f64::min),
        avg_ms: total / took.len() as f64,
        max_ms: took.iter().map(ms).fold(0.0, f64::max),
    })
}
