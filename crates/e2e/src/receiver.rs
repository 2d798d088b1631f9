//! A callback receiver for tests: an HTTP server on 127.0.0.1 that records every request and
//! answers with scripted responses.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Its headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// Its body.
    pub body: Vec<u8>,
}

/// A scripted answer: a status, and a `Location` for redirects.
#[derive(Clone, Debug)]
pub struct Answer {
    status: u16,
    location: Option<String>,
}

impl Answer {
    /// Answer with `status` and no body.
    pub fn status(status: u16) -> Answer {
        Answer { status, location: None }
    }

    /// Answer 302 to `to`.
    pub fn redirect(to: &str) -> Answer {
        Answer { status: 302, location: Some(to.to_owned()) }
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Answer>>,
}

/// The receiver. Requests beyond the script get 200.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    server: ServerHandle,
}

async fn receive(state: web::Data<State>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    state.received.lock().unwrap().push(Received { headers, body: body.to_vec() });
    let answer = state.script.lock().unwrap().pop_front().unwrap_or(Answer::status(200));
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap());
    if let Some(location) = answer.location {
        response.insert_header(("location", location));
    }
    response.finish()
}

impl Receiver {
    /// Starts a receiver on a free port that answers `script` in order, then 200. Call it
    /// within a Tokio runtime.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub fn start(script: Vec<Answer>) -> Receiver {
        let state = Arc::new(State { received: Mutex::default(), script: Mutex::new(script.into()) });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver { addr, state, server: handle }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}

/// Verifies a received request with the Standard Webhooks reference library (Python package
/// `standardwebhooks`, installed by scripts/test): `Ok` or the library's complaint.
///
/// # Errors
///
/// What the library says is wrong with the signature.
///
/// # Panics
///
/// If `python3` or the library cannot run.
pub fn verify(secret: &str, received: &Received) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &received.body).unwrap();
    let headers = serde_json::to_string(&received.headers).unwrap();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, body, headers = sys.argv[1], open(sys.argv[2], "rb").read(), json.loads(sys.argv[3])
try:
    Webhook(secret).verify(body, headers)
except Exception as e:
    print(type(e).__name__, e)
    sys.exit(3)
"#;
    let out =
        Command::new("python3").args(["-c", script, secret]).arg(&body).arg(headers).output().expect("python3 runs");
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) => Err(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        _ => panic!(
            "the verifier could not run (scripts/test installs standardwebhooks): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
