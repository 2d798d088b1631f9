//! api-svc against its own `/openapi.json`, by schemathesis (PyPI; `scripts/test` installs the
//! pinned version): generated and mutated requests to every documented operation, once with the
//! token and once without. No answer may be a 5xx, a status the document does not list, another
//! content type, a body its schema refuses, or a 2xx to a request the document forbids; a 405
//! names the allowed methods, and a deleted file is gone. [`CONFIG`] says which checks run
//! and why two do not.
//!
//! Callbacks are disabled in this stack (no `WEBHOOK_SECRET`), so that a generated
//! `callback_url` is refused before its host is looked up: the run touches only localhost.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions, TOKEN};
use test_support::Media;

const LIMIT: Duration = Duration::from_secs(60);

/// schemathesis's configuration (`schemathesis.toml`). 50 test cases per operation and phase
/// keep the whole test well under a minute and a half on two busy cores; the seed is fixed so
/// that a failure reproduces.
const CONFIG: &str = r#"
seed = 20261207
workers = 1
request-timeout = 10

[generation]
max-examples = 50
# Hypothesis keeps no example database: every run starts from the seed alone.
database = "none"
# No made-up query parameters or headers. api-svc ignores what it does not read (so do most
# APIs), and schemathesis then judges a request that also carries a neutral mutation as
# invalid data accepted: an unknown query parameter beside a `callback_url` made an empty
# array, which multipart serializes to nothing, is a valid upload and rightly a 202.
allow-extra-parameters = false

[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
response_headers_conformance.enabled = true
# A request the document forbids (a `limit` of 0, a `status` not in the enum, a cursor of the
# wrong shape, a bad `Idempotency-Key`, a multipart body with another part, ...) gets a 4xx.
# An empty query value means "not given": the document says so with `allowEmptyValue`.
negative_data_rejection.enabled = true
missing_required_header.enabled = true
unsupported_method.enabled = true
allow_header_conformance.enabled = true
ignored_auth.enabled = true
use_after_free.enabled = true
ensure_resource_availability.enabled = true
# Off: the document cannot say all that the API rightly refuses with a 400. A raw upload needs
# `X-Filename` and a multipart one does not (OpenAPI has no header required for one media type
# only); an upload is not empty; a `callback_url` passes a policy and a DNS lookup; a list
# cursor is one the API gave, not any string of its shape.
positive_data_acceptance.enabled = false
# Off: it needs two callers who may not see each other's files, and any valid token sees every
# file (README, "Auth").
object_level_authorization.enabled = false
"#;

/// `python3 -m schemathesis.cli --config-file <CONFIG> <args>`, in a scratch directory.
fn schemathesis(args: &[&str]) -> Output {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let config = scratch.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).expect("write the configuration");
    Command::new("python3")
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config)
        .args(args)
        .current_dir(scratch.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("python3 runs")
}

/// One `st run` against the stack's document, with `headers` on every request; panics with
/// schemathesis's report unless it exits 0.
fn run(stack: &Stack, label: &str, headers: &[String]) {
    let document = format!("{}/openapi.json", stack.api_base);
    let mut args = vec!["run", document.as_str(), "--no-color"];
    for header in headers {
        args.extend(["--header", header.as_str()]);
    }
    let started = Instant::now();
    let out = schemathesis(&args);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!report.contains(TOKEN), "schemathesis printed the token");
    if !out.status.success() {
        // What api-svc logged about its errors (a 500's cause is only there).
        let log = stack.api.log();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
        panic!(
            "schemathesis {label} found problems ({}; each comes with the curl that reproduces it, \
             the token being e2e::TOKEN):\n{report}\napi-svc's errors and warnings (the last 40):\n{}",
            out.status,
            errors[errors.len().saturating_sub(40)..].join("\n")
        );
    }
    let cases = report.lines().skip_while(|l| !l.starts_with("Test cases:")).nth(1).unwrap_or("").trim();
    eprintln!("schemathesis {label}: passed in {:.1?} ({cases})", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_svc_answers_what_its_openapi_document_says_to_generated_requests() {
    let version = schemathesis(&["--version"]);
    assert!(
        version.status.success(),
        "schemathesis is not installed (scripts/test installs it): {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let stack =
        Stack::start(StackOptions { api_vars: vec![("WEBHOOK_SECRET", String::new())], ..StackOptions::default() })
            .await;
    // Processed files for the list to show (a result, artifact links), beside the uploads
    // schemathesis makes itself.
    let image = stack.accepted("seed.png", "image/png", Media::new().png()).await;
    let text = stack.accepted("seed.txt", "text/plain", b"some text\n".to_vec()).await;
    for id in [image, text] {
        assert_eq!(stack.finished(id, LIMIT).await["status"], "done");
    }
    run(&stack, "with the token", &[format!("Authorization: Bearer {TOKEN}")]);
    run(&stack, "without a token", &[]);
}
