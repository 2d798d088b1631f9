//! A private `redis-server` process per test, for tests that crash, restart or freeze Redis.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::netns::Netns;
#[cfg(test)]
use crate::resp::{resp_command, try_resp_command};
use crate::resp::{resp_command_at, try_resp_command_at};

/// The redis-server binary (looked up on `PATH`).
const REDIS_SERVER: &str = "redis-server";
/// The server's log file inside its directory.
const LOG_FILE: &str = "redis.log";
/// How many fresh ports [`RedisServer::start_with`] tries before giving up.
const PORT_ATTEMPTS: usize = 8;
/// How long a start (including AOF loading after a restart) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A private `redis-server` listening on `127.0.0.1:<free port>` (or, started in a [`Netns`],
/// on the namespace's address) with its data in a temporary directory.
///
/// It always runs with `--save "" --appendonly yes --appendfsync always --enable-debug-command
/// local`, so every acknowledged write survives [`kill`](Self::kill) + [`restart`](Self::restart),
/// and `DEBUG SLEEP` / `DEBUG RELOAD` are available. Dropping it kills the process (SIGKILL) and
/// deletes the directory.
///
/// ```no_run
/// let mut redis = test_support::RedisServer::start();
/// assert_eq!(redis.command(&["SET", "k", "v"]), "+OK\r\n");
/// redis.kill();
/// redis.restart();
/// assert_eq!(redis.command(&["GET", "k"]), "$1\r\nv\r\n");
/// ```
#[derive(Debug)]
pub struct RedisServer {
    /// The running process; `None` after [`RedisServer::kill`].
    child: Option<Child>,
    port: u16,
    /// The caller's extra arguments, reused by restarts.
    extra_args: Vec<String>,
    /// Where it runs and listens.
    place: Place,
    /// Declared last so it is removed after the process is gone.
    dir: tempfile::TempDir,
}

/// Where a server runs: this network namespace on loopback, or inside a [`Netns`] on its
/// address.
#[derive(Clone, Debug)]
struct Place {
    host: Ipv4Addr,
    netns: Option<String>,
}

impl Place {
    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.host, port))
    }
}

/// Why one start attempt failed in a way worth retrying on another port.
enum StartError {
    /// Someone else holds the port.
    PortTaken,
}

impl RedisServer {
    /// Starts a private server with the default arguments. Waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed, or the server does not come up.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra `redis-server` arguments appended after the
    /// defaults (so they can override them), e.g. `&["--maxmemory", "10mb"]`.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed, or the server does not come up.
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        RedisServer::start_at(Place { host: Ipv4Addr::LOCALHOST, netns: None }, extra_args)
    }

    /// Like [`start_with`](Self::start_with), inside `netns`, listening on its address (with
    /// protected mode off, as a server reached over a network is configured): every packet
    /// between it and its clients crosses the namespace's shaped link.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed, or the server does not come up.
    pub fn start_in(netns: &Netns, extra_args: &[&str]) -> RedisServer {
        let place = Place { host: netns.address(), netns: Some(netns.name().to_owned()) };
        let mut args = vec!["--protected-mode", "no"];
        args.extend_from_slice(extra_args);
        RedisServer::start_at(place, &args)
    }

    fn start_at(place: Place, extra_args: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("test-redis-")
            .tempdir()
            .unwrap_or_else(|err| panic!("cannot create a temporary directory for redis-server: {err}"));
        let extra_args: Vec<String> = extra_args.iter().map(|arg| (*arg).to_owned()).collect();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn_ready(dir.path(), port, &extra_args, &place) {
                Ok(child) => return RedisServer { child: Some(child), port, extra_args, place, dir },
                Err(StartError::PortTaken) => continue,
            }
        }
        panic!("redis-server: no free port found after {PORT_ATTEMPTS} attempts");
    }

    /// `redis://<address>:<port>`: `127.0.0.1`, or the namespace's address.
    pub fn url(&self) -> String {
        format!("redis://{}", self.place.addr(self.port))
    }

    /// The TCP port the server listens on (it stays the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server, or `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's data directory (AOF files and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends one command and returns the raw reply; see [`resp_command`].
    ///
    /// # Panics
    ///
    /// If the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> String {
        resp_command_at(self.place.addr(self.port), args)
    }

    /// Kills the server with SIGKILL (a crash, no shutdown save) and waits for it to exit.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a SIGSTOPped process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, in the same directory, with the same arguments,
    /// so it reloads its AOF. Kills the current process first if it is still running. Returns once
    /// the server answers `PING` (i.e. after loading has finished).
    ///
    /// # Panics
    ///
    /// If the port stays taken by another process for several seconds, or the server does not
    /// come up.
    pub fn restart(&mut self) {
        self.restart_until(&self.extra_args.clone(), Ready::Pong);
    }

    /// Kills the server and starts it again with `args`, on the same port, until `ready`.
    fn restart_until(&mut self, args: &[String], ready: Ready) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_until(self.dir.path(), self.port, args, &self.place, ready) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(StartError::PortTaken) if Instant::now() < deadline => sleep(Duration::from_millis(100)),
                Err(StartError::PortTaken) => {
                    panic!("redis-server restart: port {} is taken by another process", self.port)
                }
            }
        }
    }

    /// Like [`restart`](Self::restart), but loading the dataset takes `per_key` for each key
    /// (Redis's `key-load-delay`, for this start only), and it returns as soon as the server
    /// answers at all: meanwhile every command gets `-LOADING`.
    ///
    /// # Panics
    ///
    /// If the server does not come up.
    pub fn restart_loading_slowly(&mut self, per_key: Duration) {
        let mut args = self.extra_args.clone();
        args.extend(["--key-load-delay".to_owned(), per_key.as_micros().to_string()]);
        self.restart_until(&args, Ready::Answering);
    }

    /// Freezes the server with SIGSTOP: connections stay open but nothing is answered.
    ///
    /// # Panics
    ///
    /// If the server is not running or the signal cannot be sent.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a server frozen by [`pause`](Self::pause) with SIGCONT.
    ///
    /// # Panics
    ///
    /// If the server is not running or the signal cannot be sent.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.pid().unwrap_or_else(|| panic!("redis-server on port {} is not running", self.port));
        let (flag, pid_arg) = (format!("-{name}"), pid.to_string());
        // /usr/bin/kill comes from procps, which minimal images may lack; the shell builtin works too.
        let status = match Command::new("kill").args([&flag, &pid_arg]).status() {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Command::new("sh").args(["-c", "kill \"$0\" \"$1\"", &flag, &pid_arg]).status()
            }
            other => other,
        }
        .unwrap_or_else(|err| panic!("cannot run `kill -{name} {pid}`: {err}"));
        assert!(status.success(), "`kill -{name} {pid}` failed: {status}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago (the OS picks it for a listener that is dropped at once).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|err| panic!("cannot bind a TCP listener on 127.0.0.1:0: {err}"))
        .port()
}

/// When a start is over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// The server answers `PING` with `PONG`: its dataset is loaded.
    Pong,
    /// The server answers, if only with `-LOADING`.
    Answering,
}

/// Starts redis-server on `port` in `dir` and waits until this very process answers `PING`.
fn spawn_ready(dir: &Path, port: u16, extra_args: &[String], place: &Place) -> Result<Child, StartError> {
    spawn_until(dir, port, extra_args, place, Ready::Pong)
}

/// Starts redis-server on `port` in `dir` and waits until this very process is `ready`.
fn spawn_until(dir: &Path, port: u16, extra_args: &[String], place: &Place, ready: Ready) -> Result<Child, StartError> {
    let log_path = dir.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|err| panic!("cannot open {}: {err}", log_path.display()));
    let log_err = log.try_clone().unwrap_or_else(|err| panic!("cannot clone a file handle: {err}"));
    let log_start = log.metadata().map(|meta| meta.len()).unwrap_or(0);
    let port_arg = port.to_string();
    let dir_arg = dir.to_str().unwrap_or_else(|| panic!("non-UTF-8 temporary directory {}", dir.display()));
    let bind_arg = place.host.to_string();
    let mut command = match &place.netns {
        // `ip netns exec` execs the server: the child is the server itself.
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, REDIS_SERVER]);
            command
        }
        None => Command::new(REDIS_SERVER),
    };
    let mut child = command
        .args(["--port", &port_arg, "--bind", &bind_arg, "--daemonize", "no"])
        .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
        .args(["--enable-debug-command", "local", "--dir", dir_arg])
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .unwrap_or_else(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                panic!(
                    "`{REDIS_SERVER}` is not installed (not found on PATH); install it, e.g. \
                     `apt-get install -y redis-server`, or run the tests through scripts/test"
                )
            }
            panic!("cannot start {REDIS_SERVER}: {err}")
        });

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = read_log_since(&log_path, log_start);
            if log.contains("Address already in use") {
                return Err(StartError::PortTaken);
            }
            panic!("redis-server on port {port} exited during startup ({status}); its log:\n{log}");
        }
        if answers_ping(place.addr(port), ready) {
            // Make sure it is our process answering, not someone who grabbed the port.
            let info = try_resp_command_at(
                place.addr(port),
                &["INFO", "server"],
                Duration::from_secs(1),
                Duration::from_secs(5),
            )
            .unwrap_or_default();
            if info.contains(&format!("process_id:{}\r\n", child.id())) {
                return Ok(child);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(StartError::PortTaken);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = read_log_since(&log_path, log_start);
            panic!("redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}; its log:\n{log}");
        }
        sleep(Duration::from_millis(20));
    }
}

/// True once the server answers `+PONG` (or, for [`Ready::Answering`], `-LOADING` too), not a
/// refused connection.
fn answers_ping(addr: SocketAddr, ready: Ready) -> bool {
    try_resp_command_at(addr, &["PING"], Duration::from_millis(200), Duration::from_secs(2))
        .is_ok_and(|reply| reply.starts_with("+PONG") || (ready == Ready::Answering && reply.starts_with("-LOADING")))
}

/// The part of the log written since byte `start` (the current start attempt).
fn read_log_since(path: &Path, start: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.seek(SeekFrom::Start(start));
        let _ = file.read_to_string(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_ping_and_reports_its_url() {
        let redis = RedisServer::start();
        assert_eq!(resp_command(redis.port(), &["PING"]), "+PONG\r\n");
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
        let config = redis.command(&["CONFIG", "GET", "appendfsync"]);
        assert!(config.contains("always"), "{config}");
    }

    #[test]
    fn writes_survive_kill_and_restart() {
        let mut redis = RedisServer::start();
        assert_eq!(redis.command(&["SET", "survivor", "yes"]), "+OK\r\n");
        assert_eq!(redis.command(&["RPUSH", "list", "a", "b"]), ":2\r\n");
        let old_pid = redis.pid().unwrap();
        redis.kill();
        assert!(redis.pid().is_none());
        assert!(try_resp_command(redis.port(), &["PING"], Duration::from_millis(200), Duration::from_secs(1)).is_err());
        redis.restart();
        assert_ne!(redis.pid(), Some(old_pid));
        assert_eq!(redis.command(&["GET", "survivor"]), "$3\r\nyes\r\n");
        assert_eq!(redis.command(&["LRANGE", "list", "0", "-1"]), "*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    }

    #[test]
    fn extra_args_are_applied_and_survive_restart() {
        let mut redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction", "--databases", "4"]);
        assert!(redis.command(&["CONFIG", "GET", "databases"]).contains("\r\n4\r\n"));
        redis.restart();
        assert!(redis.command(&["CONFIG", "GET", "databases"]).contains("\r\n4\r\n"));
    }

    #[test]
    fn pause_freezes_and_resume_thaws() {
        let redis = RedisServer::start();
        redis.pause();
        let frozen = try_resp_command(redis.port(), &["PING"], Duration::from_secs(1), Duration::from_millis(300));
        assert!(frozen.is_err(), "a stopped server answered: {frozen:?}");
        redis.resume();
        assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    }

    #[test]
    fn debug_command_is_enabled() {
        let redis = RedisServer::start();
        assert_eq!(redis.command(&["DEBUG", "SLEEP", "0"]), "+OK\r\n");
    }

    #[test]
    fn drop_stops_the_server_and_removes_its_directory() {
        let redis = RedisServer::start();
        let port = redis.port();
        let dir = redis.dir().to_path_buf();
        assert!(dir.join(LOG_FILE).exists());
        drop(redis);
        assert!(try_resp_command(port, &["PING"], Duration::from_millis(200), Duration::from_secs(1)).is_err());
        assert!(!dir.exists());
    }

    #[test]
    fn a_taken_port_is_detected() {
        let redis = RedisServer::start();
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(spawn_ready(other.path(), redis.port(), &[], &redis.place), Err(StartError::PortTaken)));
        assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    }
}
