//! A private single-node Garage (S3-compatible object storage) per test, for the services' S3
//! mode: `garage server --single-node --default-bucket`, which lays out the node and creates an
//! access key and a bucket from its environment.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::free_port;

/// How long Garage may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The access key and secret of every test Garage (test-only values).
pub const GARAGE_ACCESS_KEY: &str = "GK0123456789abcdef01234567";
/// See [`GARAGE_ACCESS_KEY`].
pub const GARAGE_SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The bucket every test Garage creates.
pub const GARAGE_BUCKET: &str = "files";

/// A running Garage node on free ports, killed (and its data removed) on drop.
#[derive(Debug)]
pub struct Garage {
    child: Option<Child>,
    s3_port: u16,
    config: PathBuf,
    dir: tempfile::TempDir,
}

/// The `garage` binary: `GARAGE_BIN`, else `garage` on `PATH`, else `~/.cargo/bin/garage`.
pub fn garage_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("GARAGE_BIN") {
        return Some(PathBuf::from(path));
    }
    let on_path = Command::new("sh").args(["-c", "command -v garage"]).output().ok()?;
    if on_path.status.success() {
        return Some(PathBuf::from(String::from_utf8_lossy(&on_path.stdout).trim()));
    }
    let home = std::env::var("HOME").ok()?;
    let cargo = PathBuf::from(home).join(".cargo/bin/garage");
    cargo.exists().then_some(cargo)
}

impl Garage {
    /// Starts a node and waits until its S3 port accepts connections and the bucket answers.
    ///
    /// # Panics
    ///
    /// If `garage` is not installed (scripts/test installs it) or does not come up.
    pub fn start() -> Garage {
        assert!(garage_binary().is_some(), "garage is installed (scripts/test runs cargo install garage --locked)");
        let dir = tempfile::Builder::new().prefix("test-garage-").tempdir().expect("a temporary directory");
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let text = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
"#,
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
            secret = "ab".repeat(32),
        );
        std::fs::write(&config, text).expect("write garage.toml");
        let mut garage = Garage { child: None, s3_port, config, dir };
        garage.spawn();
        garage
    }

    /// Runs the node on its configuration and waits for its S3 port.
    fn spawn(&mut self) {
        let binary = garage_binary().expect("garage is installed");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("garage.log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", GARAGE_ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", GARAGE_SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", GARAGE_BUCKET)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("garage starts");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(Instant::now() < deadline, "garage did not come up; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the node (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again on the same ports and data.
    ///
    /// # Panics
    ///
    /// If it does not come up.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `http://127.0.0.1:<s3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The variables a service needs to use this node: `STORAGE_URL=s3://files/<prefix>` and
    /// the `AWS_*` ones.
    pub fn env(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE_URL", format!("s3://{GARAGE_BUCKET}/{prefix}")),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", GARAGE_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", GARAGE_SECRET_KEY.to_owned()),
            ("AWS_REGION", "garage".to_owned()),
        ]
    }

    /// What the node printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// The node's configuration file (for `garage -c <it> ...` commands).
    pub fn config(&self) -> &std::path::Path {
        &self.config
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
