//! `queuectl work QUEUE --exec CMD`: a Bull worker whose processor is a shell command.
//!
//! Per job, `sh -c CMD` runs in a process group of its own, with the job's data JSON on stdin and
//! `JOB_ID`, `JOB_NAME`, `JOB_ATTEMPT` (1 on the first try) and `JOB_QUEUE` in its environment.
//! Exit 0 completes the job with stdout (JSON when it parses, else the text); anything else fails
//! the attempt with the tail of stderr. A timeout (`--timeout-ms`, or the job's own `timeout`
//! option) kills the whole process group, so grandchildren die too.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use queue_core::{ActiveJob, Connections, Outcome, Queue, QueueSpec, StopWhen, Worker, WorkerSettings, handler};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::cli::{Global, WorkArgs};
use crate::output::Printer;

/// How much of stderr becomes the failure reason.
const REASON_TAIL_BYTES: usize = 2000;
/// How long jobs in hand may finish once the worker stops (Ctrl-C, SIGTERM or `--max-jobs`).
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);

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
    let (workdir, timeout) = (args.workdir, args.timeout_ms.map(Duration::from_millis));
    let h = handler(move |job| run_command(job, command.clone(), workdir.clone(), timeout));
    // --max-jobs counts attempts taken; the worker takes exactly that many, then stops.
    let stop_when = match (args.max_jobs, args.until_drained) {
        (Some(n), _) => StopWhen::MaxJobs(n),
        (None, true) => StopWhen::Drained,
        (None, false) => StopWhen::Never,
    };
    let settings = WorkerSettings::default().stop_when(stop_when);
    let worker = Worker::start(c, settings, vec![QueueSpec::new(queue, usize::from(args.concurrency), h)]).await?;
    eprintln!("working on {} with concurrency {}", args.queue, args.concurrency);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            // A service manager's stop is a Ctrl-C too: commands run in process groups of their
            // own and would otherwise outlive this process.
            _ = terminate.recv() => {}
        }
        eprintln!("stopping: letting jobs in hand finish");
    };
    let stats = worker.run_until(shutdown, CLOSE_DEADLINE).await;
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
