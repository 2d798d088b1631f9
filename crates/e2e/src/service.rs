//! One service binary as a child process: started with only the environment it is given, its
//! output in a log file, stopped with SIGTERM (then SIGKILL) when dropped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a dropped service may take to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// How many lines of each log a failing test prints.
const LOG_TAIL: usize = 80;

/// A free TCP address on the loopback interface, for a service to listen on.
///
/// # Panics
///
/// If no port can be bound.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("its address")
}

/// A running service binary.
#[derive(Debug)]
pub struct Service {
    name: &'static str,
    /// `None` once it has exited and been reaped.
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts binary `name` (e.g. `api-svc`) with exactly `env` (plus `PATH`), its stdout and
    /// stderr appended to `<log_dir>/<name>.log`.
    ///
    /// # Panics
    ///
    /// If the binary is missing or older than its sources (see [`binary`]), or cannot start.
    pub fn start(name: &'static str, env: &[(String, String)], log_dir: &Path) -> Service {
        let log = log_dir.join(format!("{name}.log"));
        let file = File::options().create(true).append(true).open(&log).expect("create the log file");
        let child = Command::new(binary(name))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Service { name, child: Some(child), log }
    }

    /// The binary's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the service printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the process.
    ///
    /// # Panics
    ///
    /// If it is not running.
    pub fn signal(&self, signal: Signal) {
        let pid = self.pid().unwrap_or_else(|| panic!("{} is not running", self.name));
        kill(Pid::from_raw(pid as i32), signal).unwrap_or_else(|e| panic!("signal {}: {e}", self.name));
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn running(&mut self) -> bool {
        self.try_exit().is_none() && self.child.is_some()
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("wait for the service")?;
        self.child = None;
        Some(status)
    }

    /// Waits up to `limit` for the process to exit, and returns how it ended; `None` if it is
    /// still running.
    pub async fn exited(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn print_log_tail(&self) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL);
        eprintln!("---- last {} lines of {} ({}) ----", lines.len() - from, self.name, self.log.display());
        for line in &lines[from..] {
            eprintln!("{line}");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tail();
        }
        let Some(child) = self.child.as_mut() else { return };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The path of binary `name` in the target directory this test binary was built into
/// (`target/<profile>/deps/it-…` → `target/<profile>/<name>`).
///
/// # Panics
///
/// If it is missing, or older than a source file it is built from: testing a stale binary
/// would prove nothing about the code. A workspace build (`scripts/test`, `cargo nextest run
/// --workspace`) builds both services' binaries.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("the test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    let built = modified(&path).unwrap_or_else(|| {
        panic!("{} is missing: build it first (scripts/test, or cargo build -p {name})", path.display())
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for source in ["src", "migrations"]
        .iter()
        .flat_map(|sub| [name, "platform", "queue-core"].map(|krate| root.join("crates").join(krate).join(sub)))
    {
        if let Some((newest, at)) = newest_file(&source)
            && at > built
        {
            panic!(
                "{} is older than {}: rebuild it first (scripts/test, or cargo build -p {name})",
                path.display(),
                newest.display()
            );
        }
    }
    path
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The most recently modified file under `dir`, if any.
fn newest_file(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() { newest_file(&path) } else { modified(&path).map(|at| (path, at)) };
        if let Some((path, at)) = found
            && newest.as_ref().is_none_or(|(_, best)| at > *best)
        {
            newest = Some((path, at));
        }
    }
    newest
}
