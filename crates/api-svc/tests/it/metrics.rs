//! `/metrics`: the Prometheus text, read by a strict parser, counts what the requests did.

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{Options, TestApp, expect_error, spawn_with};

/// One sample line: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the text format strictly: every line is `# HELP name text`, `# TYPE name type`, a
/// sample of the family the last `# TYPE` declared, or a final `# EOF`. Anything else is an
/// error naming the line.
fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut family: Option<(String, String)> = None;
    let mut ended = false;
    for (n, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if ended {
            return Err(at("a line after # EOF"));
        }
        if line == "# EOF" {
            ended = true;
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest.split_once(' ').ok_or_else(|| at("HELP without a text"))?;
            check_name(name).map_err(|e| at(&e))?;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE without a type"))?;
            check_name(name).map_err(|e| at(&e))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at("unknown type"));
            }
            family = Some((name.to_owned(), kind.to_owned()));
        } else if line.starts_with('#') || line.is_empty() {
            return Err(at("neither HELP, TYPE, EOF nor a sample"));
        } else {
            let sample = parse_sample(line).map_err(|e| at(&e))?;
            let (base, kind) = family.as_ref().ok_or_else(|| at("a sample before any TYPE"))?;
            let suffixes: &[&str] = match kind.as_str() {
                "histogram" => &["_bucket", "_sum", "_count"],
                "counter" => &["", "_total"],
                _ => &[""],
            };
            if !suffixes.iter().any(|s| sample.name == format!("{base}{s}")) {
                return Err(at(&format!("not a sample of the {kind} {base}")));
            }
            if sample.name.ends_with("_bucket") && !sample.labels.iter().any(|(k, _)| k == "le") {
                return Err(at("a bucket without le"));
            }
            samples.push(sample);
        }
    }
    Ok(samples)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first = chars.next().ok_or("an empty name")?;
    let ok = (first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok { Ok(()) } else { Err(format!("a bad metric or label name {name:?}")) }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
            check_name(key)?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().ok_or("an unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("a bad escape \\{other}")),
                    },
                    (_, c) => value.push(c),
                }
            };
            if labels.iter().any(|(k, _): &(String, String)| k == key) {
                return Err(format!("label {key} twice"));
            }
            labels.push((key.to_owned(), value));
            rest = &after[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("labels not separated by commas".to_owned());
            }
        }
    }
    let raw = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => raw.parse::<f64>().map_err(|_| format!("a bad value {raw:?} (or a timestamp)"))?,
    };
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// The value of the sample `name` with exactly `labels` (in any order), if there is one.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

/// GET `/metrics` without a token; the raw text and its samples.
async fn scrape(app: &TestApp) -> (String, Vec<Sample>) {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.unwrap();
    let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, samples)
}

#[test]
fn the_metrics_parser_refuses_what_is_not_the_text_format() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n# EOF\n";
    let samples = parse(good).unwrap();
    assert_eq!(value(&samples, "a_total", &[("y", "q\""), ("x", "1")]), Some(3.0));
    assert_eq!(value(&samples, "h_count", &[]), Some(1.0));
    for bad in [
        "a 1\n",                                  // no TYPE
        "# TYPE a gauge\na{x=\"1\" 1\n",          // unterminated labels
        "# TYPE a gauge\na{x=1} 1\n",             // unquoted value
        "# TYPE a gauge\na one\n",                // not a number
        "# TYPE a gauge\na 1 1700000000\n",       // a timestamp
        "# TYPE a gauge\nb 1\n",                  // another family
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n", // a label twice
        "# TYPE h histogram\nh_bucket 1\n",       // a bucket without le
        "# TYPE a gauge\n\na 1\n",                // an empty line
        "# comment\n",                            // neither HELP nor TYPE
        "# EOF\n# TYPE a gauge\n",                // after EOF
    ] {
        assert!(parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[tokio::test]
async fn metrics_count_uploads_by_outcome_and_requests_by_route_pattern() {
    let app = spawn_with(Options {
        vars: vec![("MAX_UPLOAD_BYTES", "1000".to_owned()), ("DATABASE_MAX_CONNECTIONS", "3".to_owned())],
        ..Default::default()
    })
    .await;
    let (_, before) = scrape(&app).await;
    let counter = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| value(samples, name, labels).unwrap_or(0.0);

    let raw_bodies: [&'static [u8]; 2] = [b"first upload", b"the second upload, a little longer"];
    let multipart_body = vec![b'm'; 1000];
    let mut ids: Vec<Uuid> = Vec::new();
    for (n, body) in raw_bodies.iter().enumerate() {
        ids.push(app.uploaded(&format!("raw-{n}.txt"), body).await);
    }
    let multipart = app.upload_multipart("at-the-limit.txt", multipart_body.clone(), None).await;
    assert_eq!(multipart.status(), StatusCode::ACCEPTED);
    ids.push(multipart.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap());
    let too_large = app.upload_raw("big.bin", "application/octet-stream", vec![b'x'; 1001]).await;
    expect_error(too_large, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(app.get(&format!("/v1/files/{}", ids[0])).await.status(), StatusCode::OK);
    let nowhere = app.client.get(app.url(&format!("/nowhere/{}", ids[1]))).send().await.unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);

    let (text, after) = scrape(&app).await;
    let grew = |name: &str, labels: &[(&str, &str)]| counter(&after, name, labels) - counter(&before, name, labels);
    assert_eq!(grew("uploads_total", &[("outcome", "accepted")]), 3.0, "{text}");
    assert_eq!(grew("uploads_total", &[("outcome", "too_large")]), 1.0, "{text}");
    for outcome in ["replayed", "rejected", "failed"] {
        assert!(value(&after, "uploads_total", &[("outcome", outcome)]).is_some(), "{outcome} missing: {text}");
        assert_eq!(grew("uploads_total", &[("outcome", outcome)]), 0.0, "{outcome}: {text}");
    }
    let bytes = raw_bodies.iter().map(|b| b.len()).sum::<usize>() + multipart_body.len();
    assert_eq!(grew("upload_bytes_total", &[]), bytes as f64, "{text}");

    let post = |status| [("route", "/v1/files"), ("method", "POST"), ("status", status)];
    assert_eq!(grew("http_requests_total", &post("202")), 3.0, "{text}");
    assert_eq!(grew("http_requests_total", &post("413")), 1.0, "{text}");
    let get_one = [("route", "/v1/files/{id}"), ("method", "GET"), ("status", "200")];
    assert_eq!(grew("http_requests_total", &get_one), 1.0, "{text}");
    let unmatched = [("route", "unmatched"), ("method", "GET"), ("status", "404")];
    assert_eq!(grew("http_requests_total", &unmatched), 1.0, "{text}");
    let posts = [("route", "/v1/files"), ("method", "POST")];
    assert_eq!(grew("http_request_duration_seconds_count", &posts), 4.0, "{text}");
    let inf = [("route", "/v1/files"), ("method", "POST"), ("le", "+Inf")];
    assert_eq!(grew("http_request_duration_seconds_bucket", &inf), 4.0, "{text}");

    // Routes are patterns: no id anywhere, in a label or elsewhere.
    for id in &ids {
        assert!(!text.contains(&id.to_string()), "{id} in the metrics: {text}");
    }
    let known = ["/v1/files", "/v1/files/{id}", "/metrics", "unmatched"];
    for sample in after.iter().filter(|s| s.name.starts_with("http_")) {
        let route = sample.labels.iter().find(|(k, _)| k == "route").map(|(_, v)| v.as_str());
        assert!(route.is_some_and(|r| known.contains(&r)), "{sample:?}");
    }

    // The shared collectors: the one Redis connection, and the Postgres pool.
    assert_eq!(value(&after, "redis_connection_budget", &[]), Some(1.0), "{text}");
    assert_eq!(value(&after, "redis_connections_open", &[("role", "command")]), Some(1.0), "{text}");
    assert_eq!(value(&after, "redis_connections_planned", &[("role", "command")]), Some(1.0), "{text}");
    for name in [
        "redis_connections_in_use",
        "redis_connection_waits_total",
        "redis_timeouts_total",
        "redis_reconnects_total",
        "redis_connect_failures_total",
    ] {
        assert!(value(&after, name, &[("role", "command")]).is_some(), "{name} missing: {text}");
    }
    assert_eq!(value(&after, "db_pool_max_connections", &[]), Some(3.0), "{text}");
    let idle = value(&after, "db_pool_connections", &[("state", "idle")]).expect("idle connections");
    let in_use = value(&after, "db_pool_connections", &[("state", "in_use")]).expect("connections in use");
    assert!(idle >= 0.0 && in_use >= 0.0 && idle + in_use >= 1.0 && idle + in_use <= 3.0, "{text}");
}
