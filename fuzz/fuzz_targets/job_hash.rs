//! A job hash as another producer may have written it: `Job::from_hash` never panics, keeps
//! what it cannot parse raw, and says what was wrong in `malformed`.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use queue_core::{Job, JobOptions};

fuzz_target!(|data: &[u8]| {
    // Fields as `name \0 value \0 ...`, the way HGETALL returns them (lossy UTF-8, as Redis
    // strings reach us).
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut hash = HashMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        hash.insert(name.to_owned(), value.to_owned());
    }
    let job = Job::from_hash("fuzz", &hash);
    assert_eq!(job.id, "fuzz");
    if !hash.contains_key("data") {
        assert!(job.malformed.as_deref().is_some_and(|m| m.contains("data is missing")));
    }
    if let Some(raw) = hash.get("opts") {
        let _ = JobOptions::from_json(raw);
    }
});
