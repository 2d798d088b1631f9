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

/// What `garage bucket info` counts in the test bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketCounts {
    /// Complete objects.
    pub objects: u64,
    /// Multipart uploads begun and neither completed nor aborted.
    pub unfinished_multipart_uploads: u64,
}

/// A running Garage node on free ports, killed (and its data removed) on drop.
#[derive(Debug)]
pub struct Garage {
    child: Option<Child>,
    s3_port: u16,
    rpc_port: u16,
    config: PathBuf,
    /// `--single-node --default-bucket` (lays itself out), or a cluster member.
    single: bool,
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
        let mut garage = Garage::configure(1, true);
        garage.spawn();
        garage
    }

    /// Starts `nodes` nodes with replication factor `nodes`, connects them, gives each a role
    /// in its own zone, and creates the test key and bucket: a cluster that keeps every object
    /// on every node and goes on with one node down. Tests talk S3 to the first node.
    ///
    /// # Panics
    ///
    /// If a node does not come up or the cluster cannot be laid out.
    pub fn cluster(nodes: usize) -> Vec<Garage> {
        let mut members: Vec<Garage> = (0..nodes).map(|_| Garage::configure(nodes, false)).collect();
        for member in &mut members {
            member.spawn();
        }
        let first = &members[0];
        let mut ids = Vec::new();
        for member in &members {
            let id = member.cli(&["node", "id", "-q"]);
            let id = id.lines().find(|l| l.contains('@')).expect("a node id").trim().to_owned();
            if member.rpc_port != first.rpc_port {
                first.cli(&["node", "connect", &id]);
            }
            ids.push(id.split('@').next().expect("id@addr").to_owned());
        }
        for (i, id) in ids.iter().enumerate() {
            let zone = format!("z{i}");
            first.cli(&["layout", "assign", "-z", &zone, "-c", "1G", id]);
        }
        first.cli(&["layout", "apply", "--version", "1"]);
        // The layout reaches every node, then key and bucket (which need a quorum) can be made.
        let deadline = Instant::now() + READY_TIMEOUT;
        let import = ["key", "import", "--yes", "-n", "test", GARAGE_ACCESS_KEY, GARAGE_SECRET_KEY];
        while let Err(text) = first.try_cli(&import) {
            assert!(Instant::now() < deadline, "the cluster did not take the key: {text}");
            std::thread::sleep(Duration::from_millis(200));
        }
        first.cli(&["bucket", "create", GARAGE_BUCKET]);
        first.cli(&["bucket", "allow", "--read", "--write", "--owner", GARAGE_BUCKET, "--key", GARAGE_ACCESS_KEY]);
        members
    }

    /// A node's directory and configuration, not started.
    fn configure(replication_factor: usize, single: bool) -> Garage {
        assert!(garage_binary().is_some(), "garage is installed (scripts/test runs cargo install garage --locked)");
        let dir = tempfile::Builder::new().prefix("test-garage-").tempdir().expect("a temporary directory");
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let text = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = {replication_factor}
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"
# Below the services' S3 request limit (5 s): a request that meets a node that has just died
# moves on to another within 2 s instead of Garage's default 300 s.
rpc_timeout_msec = 2000

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
        Garage { child: None, s3_port, rpc_port, config, single, dir }
    }

    /// Runs the node on its configuration and waits for its S3 port.
    fn spawn(&mut self) {
        let binary = garage_binary().expect("garage is installed");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("garage.log");
        let mut command = Command::new(binary);
        command.arg("-c").arg(&self.config).arg("server");
        if self.single {
            command.args(["--single-node", "--default-bucket"]);
        }
        let child = command
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

    /// Runs `garage -c <config> <args>` against this node and returns what it printed.
    ///
    /// # Panics
    ///
    /// If the command fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|text| panic!("garage {args:?} failed: {text}"))
    }

    /// [`Garage::cli`], its output as the error when it fails.
    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let binary = garage_binary().expect("garage is installed");
        let out = Command::new(binary).arg("-c").arg(&self.config).args(args).output().expect("garage runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() { Ok(text) } else { Err(text) }
    }

    /// The bucket's objects and its unfinished multipart uploads, as `garage bucket info`
    /// counts them.
    pub fn bucket_counts(&self) -> BucketCounts {
        let text = self.cli(&["bucket", "info", GARAGE_BUCKET]);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        BucketCounts {
            objects: field("Objects:").unwrap_or_else(|| panic!("no object count in: {text}")),
            // Printed only when there are some.
            unfinished_multipart_uploads: field("Unfinished uploads:").unwrap_or(0),
        }
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
