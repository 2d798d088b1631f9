//! `queuectl events`: a queue's events as JSON lines, until Ctrl-C, `--count` or `--seconds`.

use std::process::ExitCode;
use std::time::Duration;

use queue_core::{Connections, QueueEvent, QueueEvents, QueueView};
use serde_json::{Value, json};

use crate::cli::{EventsArgs, Global};

/// One event as a JSON line: `{"queue", "event", "jobId"?, ...}`.
pub(crate) fn event_json(event: &QueueEvent) -> Value {
    match event {
        QueueEvent::Waiting { queue, job_id } => json!({"queue": queue, "event": "waiting", "jobId": job_id}),
        QueueEvent::Active { queue, job_id } => json!({"queue": queue, "event": "active", "jobId": job_id}),
        QueueEvent::Progress { queue, job_id, progress } => {
            json!({"queue": queue, "event": "progress", "jobId": job_id, "progress": progress})
        }
        QueueEvent::Completed { queue, job_id, return_value } => {
            json!({"queue": queue, "event": "completed", "jobId": job_id, "returnvalue": return_value})
        }
        QueueEvent::Failed { queue, job_id, reason } => {
            json!({"queue": queue, "event": "failed", "jobId": job_id, "failedReason": reason})
        }
        QueueEvent::Stalled { queue, job_id } => json!({"queue": queue, "event": "stalled", "jobId": job_id}),
        QueueEvent::Delayed { queue, due_ms } => json!({"queue": queue, "event": "delayed", "dueMs": due_ms}),
        QueueEvent::Paused { queue } => json!({"queue": queue, "event": "paused"}),
        QueueEvent::Resumed { queue } => json!({"queue": queue, "event": "resumed"}),
        QueueEvent::Drained { queue } => json!({"queue": queue, "event": "drained"}),
        QueueEvent::Reconnected => json!({"event": "reconnected"}),
        QueueEvent::Lagged { missed } => json!({"event": "lagged", "missed": missed}),
        other => json!({"event": format!("{other:?}")}),
    }
}

pub(crate) async fn run(c: &Connections, g: &Global, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let queues: Vec<QueueView> =
        args.queues.iter().map(|q| QueueView::with_prefix(c, &g.prefix, q)).collect::<Result<_, _>>()?;
    let refs: Vec<&QueueView> = queues.iter().collect();
    let mut events = QueueEvents::new(c, &refs).await?;
    // Subscribed: say so on stderr, so scripts (and tests) know nothing from now on is missed.
    eprintln!("listening");
    let deadline = args.seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut printed = 0u64;
    // One signal future for the whole stream: a Ctrl-C arriving while a line is being written is
    // not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let next = async {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, events.next()).await.ok().flatten(),
                None => events.next().await,
            }
        };
        let event = tokio::select! {
            event = next => event,
            _ = &mut interrupted => None,
        };
        let Some(event) = event else { break };
        println!("{}", event_json(&event));
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
