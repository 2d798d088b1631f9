//! A private PostgreSQL server per test, for tests that restart or stop it (the shared one runs
//! as the machine's service and must stay up): `initdb` into a temporary directory, then
//! `postgres` on a free port, run as the `postgres` user when the test runs as root (Postgres
//! refuses root).

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::redis_server::free_port;

/// How long start-up (or a restart's recovery) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory of `initdb`, `pg_ctl` and `postgres`: the newest `/usr/lib/postgresql/*/bin`
/// (Debian's layout), else `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Whether a private server can be run here (Postgres's binaries are installed).
pub fn postgres_available() -> bool {
    bin_dir().is_some()
}

/// How a restart stops the server (`pg_ctl stop -m <mode>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Clients are disconnected, then a clean shutdown.
    Fast,
    /// Like a crash: no shutdown checkpoint, recovery at the next start.
    Immediate,
}

/// A running private server, stopped (and its data removed) on drop.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Where it listens: `127.0.0.1`, or a namespace's address.
    host: Ipv4Addr,
    /// The namespace it runs in, if any.
    netns: Option<String>,
}

impl PostgresServer {
    /// Creates a cluster (superuser `app`, trust authentication) and starts it.
    ///
    /// # Panics
    ///
    /// If Postgres is not installed or does not come up.
    pub fn start() -> PostgresServer {
        PostgresServer::start_at(Ipv4Addr::LOCALHOST, None)
    }

    /// Like [`start`](Self::start), inside `netns`, listening on its address: every packet
    /// between the server and its clients crosses the namespace's shaped link.
    ///
    /// # Panics
    ///
    /// If Postgres is not installed or does not come up.
    pub fn start_in(netns: &Netns) -> PostgresServer {
        PostgresServer::start_at(netns.address(), Some(netns.name().to_owned()))
    }

    fn start_at(host: Ipv4Addr, netns: Option<String>) -> PostgresServer {
        let bin = bin_dir().expect("PostgreSQL's binaries (scripts/test installs postgresql)");
        let dir = tempfile::Builder::new().prefix("test-postgres-").tempdir().expect("a temporary directory");
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
            assert!(status.is_ok_and(|s| s.success()), "chown the data directory to postgres");
        }
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "app", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        if host != Ipv4Addr::LOCALHOST {
            // initdb trusts loopback only; the clients are across the namespace's link.
            use std::io::Write;
            let mut hba = std::fs::File::options().append(true).open(data.join("pg_hba.conf")).expect("pg_hba.conf");
            writeln!(hba, "host all all 0.0.0.0/0 trust").expect("write pg_hba.conf");
        }
        let mut server = PostgresServer { bin, port: free_port(), dir, child: None, host, netns };
        server.spawn();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("postgres.log");
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]);
                let inner = as_postgres(&self.bin.join("postgres"));
                command.arg(inner.get_program()).args(inner.get_args());
                command
            }
            None => as_postgres(&self.bin.join("postgres")),
        };
        let child = command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-c", &format!("listen_addresses={}", self.host)])
            .arg("-k")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = as_postgres(&self.bin.join("pg_isready"))
                .args(["-h", &self.host.to_string(), "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready && TcpStream::connect((self.host, self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not come up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `postgres://app@<address>:<port>/postgres`: `127.0.0.1`, or the namespace's address.
    pub fn url(&self) -> String {
        format!("postgres://app@{}:{}/postgres", self.host, self.port)
    }

    /// Stops the server (`pg_ctl stop -m <mode>`), leaves it down for `down`, and starts it again
    /// on the same port and data.
    ///
    /// # Panics
    ///
    /// If it does not come back.
    pub fn restart(&mut self, mode: StopMode, down: Duration) {
        self.stop(mode);
        std::thread::sleep(down);
        self.spawn();
    }

    fn stop(&mut self, mode: StopMode) {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The data directory's parent (logs, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop(StopMode::Immediate);
    }
}

pub(crate) fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program` run as the `postgres` user when we are root, else as ourselves.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}
