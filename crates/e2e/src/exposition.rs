//! A service's `/metrics`, read by the Prometheus reference parser (Python
//! `prometheus_client.parser`, PyPI `prometheus-client`, which `scripts/test` installs) rather
//! than by a parser of our own, so the test and the services cannot share a misreading of the
//! format. Anything it refuses fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

/// Reads the exposition on stdin; prints one JSON object per sample, or the parser's error on
/// stderr with exit code 3.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
try:
    samples = [
        {"family": f.name, "type": f.type, "name": s.name, "labels": s.labels, "value": repr(float(s.value))}
        for f in text_string_to_metric_families(sys.stdin.read())
        for s in f.samples
    ]
except Exception as e:
    print(type(e).__name__, e, file=sys.stderr)
    sys.exit(3)
json.dump(samples, sys.stdout)
"#;

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The family it belongs to, as the parser names it (`http_requests` for
    /// `http_requests_total`).
    pub family: String,
    /// The family's declared type (`counter`, `gauge`, `histogram`...; `unknown` when no `TYPE`
    /// line declared it).
    pub kind: String,
    /// The sample's name (`http_requests_total`, `..._bucket`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition, with its text for failure messages.
#[derive(Clone, Debug)]
pub struct Exposition {
    /// The text as served.
    pub text: String,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// `text` through the reference parser.
    ///
    /// # Errors
    ///
    /// The parser's message, when it refuses the text.
    ///
    /// # Panics
    ///
    /// When `python3` or `prometheus_client` cannot run.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut child = Command::new("python3")
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child.stdin.take().expect("its stdin").write_all(text.as_bytes()).expect("write the exposition");
        let out = child.wait_with_output().expect("the parser ends");
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match out.status.code() {
            Some(0) => {}
            Some(3) => return Err(stderr),
            _ => panic!("the Prometheus parser could not run (scripts/test installs prometheus-client): {stderr}"),
        }
        let raw: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
        let samples = raw
            .into_iter()
            .map(|s| {
                let text = |key: &str| s[key].as_str().expect("a string").to_owned();
                let labels = s["labels"].as_object().expect("labels").iter();
                Sample {
                    family: text("family"),
                    kind: text("type"),
                    name: text("name"),
                    labels: labels.map(|(k, v)| (k.clone(), v.as_str().expect("a label value").to_owned())).collect(),
                    value: text("value").parse().expect("a float"),
                }
            })
            .collect();
        Ok(Exposition { text: text.to_owned(), samples })
    }

    /// The value of the series `name` with exactly `labels` (in any order), if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|sv| sv == v))
            })
            .map(|s| s.value)
    }

    /// The sum over the series `name` whose labels include `labels` (0 when there is none, as a
    /// counter not yet created is 0).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|sv| sv == v)))
            .map(|s| s.value)
            .sum()
    }

    /// The series `name`, each as its labels and value.
    pub fn series(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples.iter().filter(|s| s.name == name).map(|s| (&s.labels, s.value)).collect()
    }

    /// Every sample name in it.
    pub fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

/// `GET <base>/metrics`: 200, the text format's content type, and a text the reference parser
/// reads.
///
/// # Panics
///
/// When any of that fails, with the text.
pub async fn scrape(client: &reqwest::Client, base: &str) -> Exposition {
    let url = format!("{base}/metrics");
    let answer = client.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(answer.status(), StatusCode::OK, "GET {url}");
    let content_type = answer.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "GET {url}: {content_type}");
    let text = answer.text().await.expect("the metrics text");
    Exposition::parse(&text).unwrap_or_else(|e| panic!("GET {url}: the Prometheus parser refuses it: {e}\n{text}"))
}
