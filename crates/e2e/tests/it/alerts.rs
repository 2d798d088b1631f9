//! `deploy/prometheus/alerts.yml`: rules Prometheus accepts (`promtool check rules`, where it is
//! installed), each with what an operator needs to act, and naming only metrics the running
//! services expose, so a renamed metric cannot leave an alert that never fires.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use e2e::{Stack, StackOptions, eventually, scrape};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
/// Series Prometheus makes itself for every target.
const PROMETHEUS_OWN: &[&str] = &["up"];
/// PromQL's keywords; they look like names but are not.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];
/// Aggregation operators, keywords too: `sum by (queue) (...)` has no `(` right after `sum`.
const AGGREGATIONS: &[&str] =
    &["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"];
/// Keywords followed by a list of labels, not of series.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn rules_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/alerts.yml")
}

/// The metric names an expression selects: every identifier outside strings, label matchers,
/// ranges and label lists that is neither a function (followed by `(`) nor a keyword.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // The index just past the bracket that closes the one at `open` (strings inside skipped).
    let skip_group = |open: usize, close: char| {
        let mut j = open + 1;
        while j < chars.len() && chars[j] != close {
            if matches!(chars[j], '"' | '\'' | '`') {
                let quote = chars[j];
                j += 1;
                while j < chars.len() && chars[j] != quote {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_group(i, c) - 1;
            continue;
        }
        if c == '{' {
            i = skip_group(i, '}');
        } else if c == '[' {
            i = skip_group(i, ']');
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`5m`, `1e3`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let called = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if called {
                    i = skip_group(next, ')');
                }
            } else if !called && ![KEYWORDS, AGGREGATIONS].concat().contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The rules file as JSON, read by PyYAML (`scripts/test` installs it).
fn load_rules() -> Value {
    let script = "import json, sys, yaml\njson.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let out = Command::new("python3").args(["-c", script]).arg(rules_file()).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "PyYAML could not read {} (scripts/test installs pyyaml): {}",
        rules_file().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the YAML")
}

/// Every alerting rule of the file, after checking that each says what an operator needs.
fn alerting_rules() -> Vec<Value> {
    let doc = load_rules();
    let mut rules = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in doc["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules in every group") {
            let name = rule["alert"].as_str().unwrap_or_else(|| panic!("a rule without alert: {rule}"));
            assert!(alerts.insert(name.to_owned()), "{name} twice");
            let text = |key: &str| rule.pointer(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
            assert!(text("/expr").is_some(), "{name}: no expr");
            let wait = text("/for").unwrap_or_else(|| panic!("{name}: no for"));
            assert!(
                wait.ends_with(['s', 'm', 'h']) && wait[..wait.len() - 1].parse::<u32>().is_ok(),
                "{name}: for {wait}"
            );
            let severity = text("/labels/severity").unwrap_or_else(|| panic!("{name}: no labels.severity"));
            assert!(["warning", "critical"].contains(&severity), "{name}: severity {severity}");
            assert!(text("/annotations/summary").is_some(), "{name}: no annotations.summary");
            assert!(text("/annotations/description").is_some(), "{name}: no annotations.description");
            rules.push(rule.clone());
        }
    }
    assert!(!rules.is_empty(), "no rules");
    rules
}

#[test]
fn metric_names_are_read_from_promql() {
    let expr = r#"sum by (queue) (rate(worker_jobs_total{outcome="failed", x=~"a{b}"}[10m] offset 5m)) > 0.1
        * on (job) group_left (role) sum without(role) (redis_connections_open) and up == 0
        or (sum(redis_connection_budget) or vector(0)) > scalar(max(redis_maxclients)) and ns:rule:rate5m
        or max without (role) (worker_redis_connections_open)"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    let expected = [
        "ns:rule:rate5m",
        "redis_connection_budget",
        "redis_connections_open",
        "redis_maxclients",
        "up",
        "worker_jobs_total",
        "worker_redis_connections_open",
    ];
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_are_valid_and_use_only_metrics_the_services_expose() {
    let file = rules_file();
    match Command::new("promtool").args(["check", "rules"]).arg(&file).output() {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("promtool is not on PATH: the rules are checked by parsing only (scripts/test installs it)");
        }
        Err(e) => panic!("promtool: {e}"),
    }
    let rules = alerting_rules();

    // Every series family the rules use exists once the stack has done some work: a file
    // processed (worker_jobs_total) and a canary come back.
    let stack = Stack::start(StackOptions {
        health: true,
        health_vars: vec![("HEALTH_CANARY_INTERVAL_MS", "300".to_owned())],
        ..StackOptions::default()
    })
    .await;
    let id = stack.accepted("a.txt", "text/plain", b"alert me\n".to_vec()).await;
    assert_eq!(stack.finished(id, LIMIT).await["status"], "done");
    eventually(LIMIT, "worker-svc to count the job and a canary to come back", async || {
        let worker = scrape(&stack.client, &stack.metrics_base).await;
        let health = scrape(&stack.client, &stack.health_base).await;
        (worker.sum("worker_jobs_total", &[]) >= 1.0 && health.value("canary_up", &[]) == Some(1.0)).then_some(())
    })
    .await;
    let mut exposed: BTreeSet<String> = PROMETHEUS_OWN.iter().map(|s| (*s).to_owned()).collect();
    for base in [&stack.api_base, &stack.metrics_base, &stack.health_base] {
        exposed.extend(scrape(&stack.client, base).await.names().into_iter().map(str::to_owned));
    }

    for rule in &rules {
        let (name, expr) = (rule["alert"].as_str().unwrap(), rule["expr"].as_str().unwrap());
        let used = metric_names(expr);
        assert!(!used.is_empty(), "{name}: no metric in {expr}");
        let unknown: Vec<&String> = used.iter().filter(|m| !exposed.contains(*m)).collect();
        assert!(unknown.is_empty(), "{name} uses {unknown:?}, which no service exposes; exposed: {exposed:?}");
    }
}
