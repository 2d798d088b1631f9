//! A callback given at upload: api-svc keeps it, worker-svc delivers the result, signed per
//! Standard Webhooks, retried after a 500, and api-svc reports every attempt.

use std::time::Duration;

use e2e::receiver::{Answer, Receiver, verify};
use e2e::{Stack, StackOptions, WEBHOOK_SECRET, eventually};
use reqwest::StatusCode;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_given_at_upload_is_delivered_signed_once_after_a_refusal() {
    let receiver = Receiver::start(vec![Answer::status(500)]);
    let allowed = vec![("CALLBACK_ALLOWED_HOSTS", receiver.addr.to_string())];
    let stack =
        Stack::start(StackOptions { api_vars: allowed.clone(), worker_vars: allowed, ..StackOptions::default() }).await;

    let url = receiver.url("/hooks/files?source=e2e");
    let answer = stack.upload("note.txt", "text/plain", b"call me back\n".to_vec(), Some(&url)).await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let id = answer.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let file = eventually(LIMIT, "the callback to be delivered", async || {
        let file = stack.file(id.parse().unwrap()).await;
        (file["callback"]["state"] == "delivered").then_some(file)
    })
    .await;
    assert_eq!(file["status"], "done");
    assert_eq!(file["callback"]["url"], url.as_str());
    let deliveries = file["callback"]["deliveries"].as_array().unwrap();
    let codes: Vec<i64> = deliveries.iter().map(|d| d["status_code"].as_i64().unwrap()).collect();
    assert_eq!(codes, [500, 200], "{file}");
    let webhook_id = format!("msg_{id}_done");
    assert!(deliveries.iter().all(|d| d["webhook_id"] == webhook_id.as_str()), "{file}");

    let received = receiver.received();
    assert_eq!(received.len(), 2, "one refused POST, one accepted");
    let accepted = &received[1];
    assert_eq!(accepted.headers["webhook-id"], webhook_id);
    verify(WEBHOOK_SECRET, accepted).expect("the reference library accepts the signature");
    let body: Value = serde_json::from_slice(&accepted.body).unwrap();
    assert_eq!((body["type"].as_str(), body["data"]["id"].as_str()), (Some("file.done"), Some(id.as_str())));
    assert_eq!(body["data"]["sha256"], file["sha256"]);
    receiver.stop().await;
}
