//! The job contract's payloads (`platform::jobs`, compiled here from its source): decoding any
//! bytes never panics, and what decodes encodes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/platform/src/jobs.rs"]
mod jobs;

fn round_trips<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(job) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_str(&serde_json::to_string(&job).expect("encodes")).expect("decodes again");
        assert_eq!(again, job);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trips::<jobs::FileJob>(data);
    round_trips::<jobs::WebhookJob>(data);
    round_trips::<jobs::CanaryJob>(data);
    if let Ok(job) = serde_json::from_slice::<jobs::FileJob>(data) {
        let _ = jobs::check_version(job.v);
        let _ = jobs::file_job_options(&job);
    }
});
