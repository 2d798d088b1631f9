//! `queuectl work QUEUE --exec CMD`: a Bull worker whose processor is a shell command.
//!
//! Per job, `sh -c CMD` runs in a process group of its own, with the job's data JSON on stdin and
//! `JOB_ID`, `JOB_NAME`, `JOB_ATTEMPT` (1 on the first try) and `JOB_QUEUE` in its environment.
//! Exit 0 completes the job with stdout (JSON when it parses, else the text); anything else fails
//! the attempt with the tail of stderr. A timeout (`--timeout-ms`, or the job's own `timeout`
//! option) kills the whole process group, so grandchildren die too.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use queue_core::{ActiveJob, Connections, Outcome, Queue, QueueSpec, Worker, WorkerSettings, handler};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::cli::{Global, WorkArgs};
use crate::output::Printer;

/// How much of stderr becomes the failure reason.
const REASON_TAIL_BYTES: usize = 2000;
/// How long Ctrl-C lets jobs in hand finish.
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the job that reaches `--max-jobs` holds its outcome back while the worker stops.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Kills a process group when dropped (the job was aborted, timed out or finished).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // The group id equals the leader's pid (process_group(0)). Ignore "no such process".
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let start = text.len().saturating_sub(REASON_TAIL_BYTES);
    let start = (start..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    text[start..].to_owned()
}

/// stdout as the job's return value: JSON when it parses, else the text without its final newline.
pub(crate) fn return_value(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| Value::String(text.trim_end_matches(['\n', '\r']).to_owned()))
}

async fn run_command(
    job: ActiveJob,
    command: Arc<String>,
    workdir: Option<std::path::PathBuf>,
    timeout: Option<Duration>,
) -> Outcome {
    let stdin = match (&job.job().opts.prevent_parsing_data, job.data()) {
        (Some(true), Value::String(raw)) => raw.clone(),
        (_, data) => data.to_string(),
    };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command.as_str())
        .env("JOB_ID", job.id())
        .env("JOB_NAME", job.name())
        .env("JOB_ATTEMPT", job.attempt().to_string())
        .env("JOB_QUEUE", job.queue().name())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &workdir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::Retry(format!("could not start sh: {e}")),
    };
    let _group = GroupGuard(child.id());
    if let Some(mut pipe) = child.stdin.take() {
        // Written concurrently with reading the output, so a command that writes a lot before
        // reading all its input cannot deadlock on full pipes. A command that does not read
        // stdin closes it early: that is not an error.
        tokio::spawn(async move {
            let _ = pipe.write_all(stdin.as_bytes()).await;
        });
    }
    let output = child.wait_with_output();
    let output = match timeout {
        Some(limit) => match tokio::time::timeout(limit, output).await {
            Ok(output) => output,
            Err(_) => return Outcome::Retry(format!("command timed out after {} ms", limit.as_millis())),
        },
        None => output.await,
    };
    match output {
        Ok(out) if out.status.success() => Outcome::Completed(return_value(&out.stdout)),
        Ok(out) => {
            let reason = tail(&out.stderr);
            let status =
                out.status.code().map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit status {c}"));
            Outcome::Retry(if reason.is_empty() { format!("command failed: {status}") } else { reason })
        }
        Err(e) => Outcome::Retry(format!("waiting for the command failed: {e}")),
    }
}

pub(crate) async fn run(c: &Connections, g: &Global, p: &Printer, args: WorkArgs) -> anyhow::Result<ExitCode> {
    let queue = Queue::with_prefix(c, &g.prefix, &args.queue)?;
    let command = Arc::new(args.exec);
    let finished = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    // Becomes true once the worker takes no more jobs.
    let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
    let (workdir, timeout, max_jobs) = (args.workdir, args.timeout_ms.map(Duration::from_millis), args.max_jobs);
    let h = {
        let (finished, done, stopped) = (finished.clone(), done.clone(), stopped.clone());
        handler(move |job| {
            let (command, workdir) = (command.clone(), workdir.clone());
            let (finished, done, stopped) = (finished.clone(), done.clone(), stopped.clone());
            async move {
                let outcome = run_command(job, command, workdir, timeout).await;
                let n = finished.fetch_add(1, Ordering::SeqCst) + 1;
                if max_jobs.is_some_and(|max| n >= max) {
                    // Recording a completion also fetches the next job, unless the worker has
                    // stopped taking jobs by then: hold the outcome back until it has.
                    done.notify_one();
                    let mut stopped = stopped;
                    let _ = tokio::time::timeout(STOP_WAIT, stopped.wait_for(|stopped| *stopped)).await;
                }
                outcome
            }
        })
    };
    let worker =
        Worker::start(c, WorkerSettings::default(), vec![QueueSpec::new(queue, usize::from(args.concurrency), h)])
            .await?;
    eprintln!("working on {} with concurrency {}", args.queue, args.concurrency);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("stopping: letting jobs in hand finish"),
        // A service manager's stop is a Ctrl-C too: commands run in process groups of their own
        // and would otherwise outlive this process.
        _ = terminate.recv() => eprintln!("stopping: letting jobs in hand finish"),
        _ = done.notified() => {}
    }
    // Stop taking jobs (pause_local's first poll does that), then release the job that reached
    // --max-jobs, and wait until every outcome is recorded so the stats are final.
    let deadline = tokio::time::Instant::now() + CLOSE_DEADLINE;
    let pause = tokio::time::timeout_at(deadline, worker.pause_local());
    let _ = tokio::join!(biased; pause, async { stopped_tx.send_replace(true) });
    let stats = worker.stats();
    worker.close(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    p.either(&json!({"queue": args.queue, "stats": stats}), &format!("stopped: {stats:?}"));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_becomes_json_or_text() {
        assert_eq!(return_value(b"{\"a\":1}\n"), json!({"a": 1}));
        assert_eq!(return_value(b"42"), json!(42));
        assert_eq!(return_value(b"hello world\n"), json!("hello world"));
        assert_eq!(return_value(b""), json!(""));
    }

    #[test]
    fn the_reason_is_the_tail_of_stderr() {
        let long = "x".repeat(5000) + "the end\n";
        let reason = tail(long.as_bytes());
        assert!(reason.ends_with("the end") && reason.len() == REASON_TAIL_BYTES);
        assert_eq!(tail("é".repeat(1500).as_bytes()).chars().count(), 1000);
    }
}
