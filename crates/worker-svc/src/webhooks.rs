//! The `webhooks` handler: one attempt at delivering a file's callback.
//!
//! The URL is checked again against the callback policy at each attempt, and the connection
//! goes only to the addresses that check resolved (the client's only resolver, [`Pinned`],
//! knows them and nothing else), so a name that re-resolves to a private address between the
//! check and the connect (DNS rebinding) is not reached. Redirects are never followed, proxies from the environment are ignored, and each
//! POST has a timeout. The body is signed per Standard Webhooks (`signature.rs`), with the same
//! `webhook-id` on every retry.
//!
//! Every attempt is recorded in `deliveries` (status code, duration, error). A 2xx answer marks
//! the callback `delivered`; anything else (3xx included: a redirect is not followed) is
//! retried with exponential backoff, and the last attempt marks it `failed`. A URL the policy
//! refuses, or a missing `WEBHOOK_SECRET`, fails at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use platform::callback::CheckedUrl;
use platform::jobs::{WebhookJob, check_version};
use platform::records::Delivery;
use queue_core::{ActiveJob, Outcome};
use serde_json::json;
use tokio::time::Instant;
use tracing::Instrument;

use crate::context::Context;
use crate::signature::WebhookSecret;

/// The queue label of this handler's metrics.
const QUEUE: &str = "webhooks";
/// Longest wait for the receiver's TCP (and TLS) handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The handler, in a span naming the job (the handler runtime does not inherit the worker's).
pub(crate) async fn handle(ctx: Arc<Context>, job: ActiveJob, data: WebhookJob) -> Outcome {
    let span = tracing::info_span!("job", queue = QUEUE, id = %job.id(), attempt = job.attempt(), file = %data.file_id);
    async move {
        let _running = ctx.drain.enter();
        let _gauge = ctx.metrics.running(QUEUE);
        ctx.metrics.waited(QUEUE, job.job().timestamp, job.job().processed_on);
        let started = Instant::now();
        let (label, outcome) = attempt(&ctx, &job, &data).await;
        ctx.metrics.finished(QUEUE, label, started.elapsed());
        if let Outcome::Retry(reason) | Outcome::Unrecoverable(reason) = &outcome {
            tracing::info!(outcome = label, reason, "callback not delivered");
        }
        outcome
    }
    .instrument(span)
    .await
}

async fn attempt(ctx: &Context, job: &ActiveJob, data: &WebhookJob) -> (&'static str, Outcome) {
    if let Err(reason) = check_version(data.v) {
        return ("failed", Outcome::Unrecoverable(reason));
    }
    let last_attempt = job.attempt() >= job.job().opts.attempts.unwrap_or(1).max(1);
    match ctx.db.get_file(data.file_id).await {
        Ok(Some(row)) if row.delivery_state.as_deref() == Some("delivered") => {
            return ("skipped", Outcome::Completed(json!({"skipped": "already delivered"})));
        }
        Ok(Some(_)) => {}
        Ok(None) => return ("skipped", Outcome::Completed(json!({"skipped": "the file was deleted"}))),
        Err(e) => return ("retry", Outcome::Retry(format!("reading the file from Postgres failed: {e}"))),
    }
    let Some(secret) = &ctx.secret else {
        let reason = "WEBHOOK_SECRET is not set: callbacks cannot be signed, so none is sent".to_owned();
        give_up(ctx, job, data, &reason).await;
        return ("failed", Outcome::Unrecoverable(reason));
    };
    let checked = match ctx.callbacks.check(&data.url).await {
        Ok(checked) => checked,
        Err(refused) => {
            let reason = refused.to_string();
            give_up(ctx, job, data, &reason).await;
            return ("refused", Outcome::Unrecoverable(reason));
        }
    };
    let started = Instant::now();
    let answer = post(ctx, secret, &checked, data).await;
    let mut delivery = Delivery {
        file_id: data.file_id,
        webhook_id: data.webhook_id.clone(),
        attempt: job.attempt() as i32,
        status_code: None,
        duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
        error: None,
        at: Utc::now(),
    };
    let status_code = answer_status(&answer);
    let failure = match answer {
        Ok(status) if status.is_success() => None,
        Ok(status) if status.is_redirection() => {
            Some(format!("the receiver answered {status} (redirects are not followed)"))
        }
        Ok(status) => Some(format!("the receiver answered {status}")),
        Err(e) => Some(format!("POST failed: {:#}", anyhow::Error::from(e.without_url()))),
    };
    delivery.status_code = status_code;
    delivery.error = failure.clone();
    if let Err(e) = ctx.db.record_delivery(&delivery).await {
        tracing::warn!(error = %e, "could not record the delivery attempt");
    }
    match failure {
        None => {
            set_state(ctx, data, "delivered").await;
            ("delivered", Outcome::Completed(json!({"status": delivery.status_code, "attempt": delivery.attempt})))
        }
        Some(reason) => {
            if last_attempt {
                set_state(ctx, data, "failed").await;
            }
            ("retry", Outcome::Retry(reason))
        }
    }
}

fn answer_status(answer: &Result<reqwest::StatusCode, reqwest::Error>) -> Option<i32> {
    answer.as_ref().ok().map(|s| i32::from(s.as_u16()))
}

/// One signed POST to the checked addresses; the status code, or why there is none.
async fn post(
    ctx: &Context,
    secret: &WebhookSecret,
    checked: &CheckedUrl,
    data: &WebhookJob,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let body = serde_json::to_vec(&data.payload).expect("a JSON value serialises");
    let timestamp = Utc::now().timestamp();
    let signature = secret.sign(&data.webhook_id, timestamp, &body);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT.min(ctx.webhook_timeout))
        .timeout(ctx.webhook_timeout)
        .user_agent(concat!("worker-svc/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Pinned { host: checked.host.clone(), addrs: checked.addrs.clone() })
        .build()?;
    let response = client
        .post(&checked.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &data.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await?;
    Ok(response.status())
}

/// The client's only resolver: the checked host gives the checked addresses, any other name
/// nothing. (An IP literal is not resolved; the check saw the same one.) Should the client ever
/// read a URL's host otherwise than the check did, the POST fails instead of going to whatever
/// the system resolver says.
struct Pinned {
    host: String,
    addrs: Vec<SocketAddr>,
}

impl reqwest::dns::Resolve for Pinned {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let answer = if name.as_str().eq_ignore_ascii_case(&self.host) {
            Ok(Box::new(self.addrs.clone().into_iter()) as reqwest::dns::Addrs)
        } else {
            Err(format!("{} is not the host that was checked ({})", name.as_str(), self.host).into())
        };
        Box::pin(std::future::ready(answer))
    }
}

/// Records a delivery that cannot happen, and gives the callback up.
async fn give_up(ctx: &Context, job: &ActiveJob, data: &WebhookJob, reason: &str) {
    let delivery = Delivery {
        file_id: data.file_id,
        webhook_id: data.webhook_id.clone(),
        attempt: job.attempt() as i32,
        status_code: None,
        duration_ms: 0,
        error: Some(reason.to_owned()),
        at: Utc::now(),
    };
    if let Err(e) = ctx.db.record_delivery(&delivery).await {
        tracing::warn!(error = %e, "could not record the refused delivery");
    }
    set_state(ctx, data, "failed").await;
}

async fn set_state(ctx: &Context, data: &WebhookJob, state: &str) {
    if let Err(e) = ctx.db.set_delivery_state(data.file_id, state).await {
        tracing::warn!(error = %e, state, "could not record the callback's state");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A client with [`Pinned`] reaches the checked addresses under the checked name, and
    /// nothing under any other name, not even a name the system resolves.
    #[tokio::test]
    async fn the_client_resolves_the_checked_host_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pinned = Pinned { host: "hooks.example".to_owned(), addrs: vec![listener.local_addr().unwrap()] };
        let client =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).dns_resolver(pinned).build().unwrap();

        let other = client.post(format!("http://localhost:{port}/hook")).send().await;
        assert!(other.is_err_and(|e| e.is_connect()), "localhost is not the checked host");
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected for another name");

        let checked = tokio::spawn({
            let client = client.clone();
            async move { client.post(format!("http://HOOKS.example:{port}/hook")).send().await }
        });
        let (stream, _) = tokio::time::timeout(Duration::from_secs(2), listener.accept())
            .await
            .expect("the checked host connects to the checked address")
            .unwrap();
        drop(stream);
        let _ = checked.await;
    }
}
