//! Running ffmpeg and ffprobe so that they can neither starve the box nor outlive their job.
//!
//! Every run:
//! - goes through `nice -n WORKER_NICE`, so Redis, Postgres and the API are served first;
//! - gets `-threads WORKER_FFMPEG_THREADS` from the argument builders in `media.rs`;
//! - has stdin on `/dev/null` (and ffmpeg `-nostdin`), so it never waits for a terminal;
//! - starts in a process group of its own (`process_group(0)`). A [`GroupGuard`] kills the whole
//!   group with SIGKILL when the job is interrupted (shutdown, lost lock, timeout) and whenever
//!   the run's future is dropped (a panic, the handler runtime going away), so no ffmpeg
//!   outlives its job.

use std::ffi::OsString;
use std::io;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::config::MediaConfig;
use crate::interrupt::{Interrupt, Watch};
use crate::metrics::ToolSeconds;

/// Most of a tool's stdout kept (ffprobe's JSON); more is an error.
const MAX_STDOUT: usize = 16 * 1024 * 1024;
/// The tail of stderr kept for failure reasons.
const STDERR_TAIL: usize = 4096;

/// Which tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tool {
    /// ffmpeg: derivatives.
    Ffmpeg,
    /// ffprobe: metadata.
    Ffprobe,
}

/// How a run went wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// The job was interrupted; the process group is already dead.
    #[error("{0}")]
    Interrupted(Interrupt),
    /// The tool ran and exited unsuccessfully.
    #[error("{tool:?} failed ({status}): {stderr}")]
    Failed {
        /// Which tool.
        tool: Tool,
        /// How it ended.
        status: ExitStatus,
        /// The end of what it wrote on stderr.
        stderr: String,
    },
    /// It could not be started, read or waited for.
    #[error("running {tool:?}: {source}")]
    Io {
        /// Which tool.
        tool: Tool,
        /// The cause.
        source: io::Error,
    },
}

impl RunError {
    /// Whether the tool exited by itself with a failure status, which for a file already
    /// identified as media means the content is corrupt or unsupported (not worth a retry);
    /// a signal we did not send or a full disk are worth one.
    pub(crate) fn is_content_error(&self) -> bool {
        match self {
            RunError::Failed { status, stderr, .. } => {
                status.code().is_some()
                    && !stderr.contains("No space left on device")
                    && !stderr.contains("Cannot allocate memory")
            }
            _ => false,
        }
    }
}

/// Receives `out_time_us` values from ffmpeg's `-progress` output.
pub(crate) trait ProgressSink: Send + Sync {
    /// ffmpeg has written this many microseconds of output.
    fn out_time(&self, micros: u64) -> impl Future<Output = ()> + Send;
}

/// No progress wanted.
pub(crate) struct NoProgress;

impl ProgressSink for NoProgress {
    async fn out_time(&self, _micros: u64) {}
}

/// The media tools, as configured and found at start-up.
#[derive(Clone, Debug)]
pub(crate) struct Tools {
    config: MediaConfig,
    /// Whether this ffmpeg has the libx264 encoder (else previews use mpeg4).
    pub libx264: bool,
    /// Seconds each tool ran (`worker_ffmpeg_seconds_total`).
    pub seconds: ToolSeconds,
}

impl Tools {
    /// Checks that ffmpeg, ffprobe and `nice` run, and which encoders ffmpeg has.
    pub(crate) async fn find(config: &MediaConfig) -> anyhow::Result<Self> {
        let probe_version = Command::new("nice")
            .args(["-n", &config.nice.to_string()])
            .arg(&config.ffprobe)
            .arg("-version")
            .stdin(Stdio::null())
            .output()
            .await;
        match probe_version {
            Ok(out) if out.status.success() => {}
            Ok(out) => anyhow::bail!(
                "ffprobe ({}, WORKER_FFPROBE) does not run under nice: {}",
                config.ffprobe,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => anyhow::bail!("cannot run nice (coreutils) for ffprobe: {e}"),
        }
        let encoders = Command::new(&config.ffmpeg)
            .args(["-hide_banner", "-nostdin", "-encoders"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| anyhow::anyhow!("cannot run ffmpeg ({}, WORKER_FFMPEG): {e}", config.ffmpeg))?;
        anyhow::ensure!(
            encoders.status.success(),
            "ffmpeg ({}, WORKER_FFMPEG) failed to list its encoders: {}",
            config.ffmpeg,
            String::from_utf8_lossy(&encoders.stderr).trim()
        );
        let libx264 =
            String::from_utf8_lossy(&encoders.stdout).lines().any(|l| l.split_whitespace().nth(1) == Some("libx264"));
        Ok(Tools { config: config.clone(), libx264, seconds: ToolSeconds::default() })
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Runs `tool` with `args` until it exits or `watch` says stop. Returns stdout (empty when
    /// `progress` reads it). `progress` receives the `out_time_us` lines of `-progress pipe:1`.
    pub(crate) async fn run(
        &self,
        tool: Tool,
        args: Vec<OsString>,
        watch: &Watch,
        progress: Option<&impl ProgressSink>,
    ) -> Result<Vec<u8>, RunError> {
        let started = std::time::Instant::now();
        let result = self.run_timed(tool, args, watch, progress).await;
        let label = match tool {
            Tool::Ffmpeg => "ffmpeg",
            Tool::Ffprobe => "ffprobe",
        };
        self.seconds.get_or_create(&[("tool", label)]).inc_by(started.elapsed().as_secs_f64());
        result
    }

    async fn run_timed(
        &self,
        tool: Tool,
        args: Vec<OsString>,
        watch: &Watch,
        progress: Option<&impl ProgressSink>,
    ) -> Result<Vec<u8>, RunError> {
        if let Some(interrupt) = watch.check() {
            return Err(RunError::Interrupted(interrupt));
        }
        let io = |source| RunError::Io { tool, source };
        let program = match tool {
            Tool::Ffmpeg => &self.config.ffmpeg,
            Tool::Ffprobe => &self.config.ffprobe,
        };
        let mut child = Command::new("nice")
            .arg("-n")
            .arg(self.config.nice.to_string())
            .arg(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(io)?;
        let mut group = GroupGuard(child.id());
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = tokio::spawn(tail(child.stderr.take().expect("stderr is piped")));
        let mut reader = BufReader::new(stdout);
        let (mut out, mut line) = (Vec::new(), Vec::new());
        loop {
            line.clear();
            let read = tokio::select! {
                interrupt = watch.wait() => {
                    group.kill();
                    let _ = child.wait().await;
                    return Err(RunError::Interrupted(interrupt));
                }
                read = reader.read_until(b'\n', &mut line) => read.map_err(io)?,
            };
            if read == 0 {
                break;
            }
            match progress {
                Some(sink) => {
                    if let Some(micros) = out_time_us(&line) {
                        sink.out_time(micros).await;
                    }
                }
                None if out.len() + line.len() > MAX_STDOUT => {
                    group.kill();
                    let _ = child.wait().await;
                    return Err(io(io::Error::other(format!("more than {MAX_STDOUT} bytes of output"))));
                }
                None => out.extend_from_slice(&line),
            }
        }
        let status = tokio::select! {
            interrupt = watch.wait() => {
                group.kill();
                let _ = child.wait().await;
                return Err(RunError::Interrupted(interrupt));
            }
            status = child.wait() => status.map_err(io)?,
        };
        // The leader is reaped and ffmpeg starts no other process: nothing is left to kill, and
        // its pid may be reused from now on.
        group.disarm();
        let stderr = stderr.await.unwrap_or_default();
        if status.success() { Ok(out) } else { Err(RunError::Failed { tool, status, stderr }) }
    }
}

/// `out_time_us=<n>` from a `-progress` line (`N/A` before the first frame).
fn out_time_us(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?.trim();
    text.strip_prefix("out_time_us=")?.parse().ok()
}

/// Reads a stream to its end, keeping the last [`STDERR_TAIL`] bytes as text.
async fn tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    let start = kept.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&kept[start..]).trim().to_owned()
}

/// Kills a process group (SIGKILL) when dropped, unless disarmed.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            // The group id is the leader's pid (process_group(0)). "No such process" is fine.
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_and_failure_classes() {
        assert_eq!(out_time_us(b"out_time_us=3018594\n"), Some(3_018_594));
        assert_eq!(out_time_us(b"out_time_us=N/A\n"), None);
        assert_eq!(out_time_us(b"out_time_ms=3018594\n"), None);
        use std::os::unix::process::ExitStatusExt;
        let failed = |raw, stderr: &str| RunError::Failed {
            tool: Tool::Ffmpeg,
            status: ExitStatus::from_raw(raw),
            stderr: stderr.into(),
        };
        assert!(failed(1 << 8, "moov atom not found").is_content_error());
        assert!(!failed(9, "").is_content_error(), "killed by a signal we did not send");
        assert!(!failed(1 << 8, "Error writing trailer: No space left on device").is_content_error());
    }
}
