//! Callbacks through the `webhooks` queue: signed per Standard Webhooks, retried until a 2xx,
//! every attempt recorded, and never sent where the policy refuses or a redirect points.

use std::time::Duration;

use queue_core::JobState;
use serde_json::Value;

use crate::support::{SECRET, TestApp, eventually};
use e2e::receiver::{Answer, Receiver, verify};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_is_signed_retried_and_accepted_once() {
    let receiver = Receiver::start(vec![Answer::status(500), Answer::status(500)]);
    let allowed = receiver.addr.to_string();
    let app = TestApp::spawn(&[("WEBHOOK_SECRET", SECRET), ("CALLBACK_ALLOWED_HOSTS", &allowed)]).await;
    let id = app.upload(b"call me back\n", "note.txt", Some(&receiver.url("/hooks/files?src=test"))).await;

    let row = eventually(LIMIT, "the callback to be delivered", async || {
        let row = app.db.get_file(id).await.unwrap().unwrap();
        (row.delivery_state.as_deref() == Some("delivered")).then_some(row)
    })
    .await;
    assert_eq!(row.status, "done");

    // Three attempts recorded, two refused and one accepted, all under one webhook id.
    let deliveries = app.db.deliveries(id).await.unwrap();
    let codes: Vec<Option<i32>> = deliveries.iter().map(|d| d.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)], "{deliveries:?}");
    assert_eq!(deliveries.iter().map(|d| d.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(deliveries[0].error.as_deref().unwrap().contains("500"), "{deliveries:?}");
    assert!(deliveries[2].error.is_none());
    let received = receiver.received();
    assert_eq!(received.len(), 3, "exactly three POSTs, one accepted");
    let webhook_id = format!("msg_{id}_done");
    assert!(received.iter().all(|r| r.headers["webhook-id"] == webhook_id), "the same id on every retry");
    assert!(deliveries.iter().all(|d| d.webhook_id == webhook_id));
    let accepted = received.last().unwrap().clone();
    assert_eq!(accepted.headers["content-type"], "application/json");

    // The body is the file's result.
    let body: Value = serde_json::from_slice(&accepted.body).unwrap();
    assert_eq!(body["type"], "file.done");
    assert_eq!(body["data"]["id"], id.to_string());
    assert_eq!(body["data"]["status"], "done");
    assert_eq!(body["data"]["detected_type"], "text/plain");
    assert_eq!(body["data"]["sha256"], row.sha256);

    // The reference library accepts the signature, and refuses another secret or a changed body.
    verify(SECRET, &accepted).expect("the signature verifies");
    let other_secret = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldCB5b3UgYXJlIGxvb2tpbmcgZm9y";
    assert!(verify(other_secret, &accepted).is_err(), "a wrong secret must not verify");
    let mut tampered = accepted.clone();
    tampered.body = String::from_utf8(accepted.body.clone()).unwrap().replace("\"done\"", "\"failed\"").into_bytes();
    assert_ne!(tampered.body, accepted.body);
    assert!(verify(SECRET, &tampered).is_err(), "a tampered body must not verify");

    let (_, metrics) = app.get("/metrics").await;
    assert!(metrics.contains(r#"worker_jobs_total{queue="webhooks",outcome="retry"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"worker_jobs_total{queue="webhooks",outcome="delivered"} 1"#), "{metrics}");
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_never_reach_unlisted_hosts_or_follow_redirects() {
    // `trap` stands for a private service: nothing may reach it.
    let trap = Receiver::start(vec![]);
    let redirecting = Receiver::start(vec![Answer::redirect(&trap.url("/internal"))]);
    let allowed = redirecting.addr.to_string();
    let app = TestApp::spawn(&[("WEBHOOK_SECRET", SECRET), ("CALLBACK_ALLOWED_HOSTS", &allowed)]).await;

    // Plain http to a host that is not listed, an IP literal that is not listed, a redirect.
    let unlisted_host = app.upload(b"a\n", "a.txt", Some("http://example.com/hook")).await;
    let unlisted_ip = app.upload(b"b\n", "b.txt", Some(&trap.url("/hook"))).await;
    let redirected = app.upload(b"c\n", "c.txt", Some(&redirecting.url("/hook"))).await;

    for id in [unlisted_host, unlisted_ip] {
        let row = eventually(LIMIT, "the callback to be given up", async || {
            let row = app.db.get_file(id).await.unwrap().unwrap();
            (row.delivery_state.as_deref() == Some("failed")).then_some(row)
        })
        .await;
        assert_eq!(row.status, "done", "the file itself is fine");
        let deliveries = app.db.deliveries(id).await.unwrap();
        assert_eq!(deliveries.len(), 1, "refused once, not retried: {deliveries:?}");
        assert_eq!(deliveries[0].status_code, None);
        assert!(deliveries[0].error.as_deref().unwrap().starts_with("callback_url refused"), "{deliveries:?}");
        let job = app.job_in_state(&app.webhooks, &format!("msg_{id}_done"), JobState::Failed, LIMIT).await;
        assert_eq!(job.attempts_made, 1);
    }

    // The redirect is recorded as the answer and not followed.
    let deliveries = eventually(LIMIT, "the redirected attempt to be recorded", async || {
        let deliveries = app.db.deliveries(redirected).await.unwrap();
        (!deliveries.is_empty()).then_some(deliveries)
    })
    .await;
    assert_eq!(deliveries[0].status_code, Some(302));
    assert!(deliveries[0].error.as_deref().unwrap().contains("not followed"), "{deliveries:?}");
    assert!(!redirecting.received().is_empty());
    // A followed redirect would have reached `trap` within the attempt just recorded.
    assert!(trap.received().is_empty(), "nothing reached the private service: {:?}", trap.received());
    let row = app.db.get_file(redirected).await.unwrap().unwrap();
    assert_eq!(row.delivery_state.as_deref(), Some("pending"), "a redirect is retried, with backoff");

    app.stop().await;
    redirecting.stop().await;
    trap.stop().await;
}

/// A listed name is called at the addresses the check resolved, however the URL writes it; an
/// unlisted loopback address written as a number or as IPv4-mapped IPv6 is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_name_is_called_however_written_and_other_notations_do_not_reach_further() {
    let trap = Receiver::start(vec![]);
    let receiver = Receiver::start(vec![]);
    let port = receiver.addr.port();
    let allowed = format!("localhost:{port}");
    let app = TestApp::spawn(&[("WEBHOOK_SECRET", SECRET), ("CALLBACK_ALLOWED_HOSTS", &allowed)]).await;

    let by_name = app.upload(b"a\n", "a.txt", Some(&format!("http://LOCALHOST:{port}/hook"))).await;
    let encoded = app.upload(b"b\n", "b.txt", Some(&format!("http://%6c%6f%63%61%6c%68%6f%73%74:{port}/hook"))).await;
    let trap_port = trap.addr.port();
    let decimal = app.upload(b"c\n", "c.txt", Some(&format!("http://2130706433:{trap_port}/hook"))).await;
    let mapped = app.upload(b"d\n", "d.txt", Some(&format!("http://[::ffff:127.0.0.1]:{trap_port}/hook"))).await;

    for (id, state) in [(by_name, "delivered"), (encoded, "delivered"), (decimal, "failed"), (mapped, "failed")] {
        let row = eventually(LIMIT, &format!("the callback to be {state}"), async || {
            let row = app.db.get_file(id).await.unwrap().unwrap();
            (row.delivery_state.as_deref() == Some(state)).then_some(row)
        })
        .await;
        let deliveries = app.db.deliveries(id).await.unwrap();
        if state == "failed" {
            assert!(deliveries[0].error.as_deref().unwrap().starts_with("callback_url refused"), "{deliveries:?}");
        } else {
            assert_eq!(deliveries.iter().map(|d| d.status_code).collect::<Vec<_>>(), [Some(200)], "{row:?}");
        }
    }
    let received = receiver.received();
    assert_eq!(received.len(), 2, "one POST for each URL naming the listed host");
    assert!(received.iter().all(|r| r.headers["host"] == allowed), "{received:?}");
    assert!(trap.received().is_empty(), "nothing reached the unlisted service: {:?}", trap.received());
    app.stop().await;
    receiver.stop().await;
    trap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webhook_secret_callbacks_fail_with_a_reason() {
    let receiver = Receiver::start(vec![]);
    let allowed = receiver.addr.to_string();
    let app = TestApp::spawn(&[("CALLBACK_ALLOWED_HOSTS", &allowed)]).await;
    let id = app.upload(b"x\n", "x.txt", Some(&receiver.url("/hook"))).await;
    let row = eventually(LIMIT, "the callback to be given up", async || {
        let row = app.db.get_file(id).await.unwrap().unwrap();
        (row.delivery_state.as_deref() == Some("failed")).then_some(row)
    })
    .await;
    assert_eq!(row.status, "done");
    let job = app.job_in_state(&app.webhooks, &format!("msg_{id}_done"), JobState::Failed, LIMIT).await;
    assert!(job.failed_reason.as_deref().unwrap().contains("WEBHOOK_SECRET is not set"), "{job:?}");
    assert!(receiver.received().is_empty(), "nothing unsigned is sent");
    app.stop().await;
    receiver.stop().await;
}
