//! Running the built binary.

use std::process::{Command, Output, Stdio};

/// `queuectl` with `--redis-url url --prefix prefix` and `args`, stdin closed (not a terminal).
pub(crate) fn queuectl(url: &str, prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_queuectl"))
        .args(["--redis-url", url, "--prefix", prefix])
        .args(args)
        .env_remove("REDIS_MAX_CONNECTIONS")
        .stdin(Stdio::null())
        .output()
        .expect("queuectl runs")
}

/// stdout parsed as one JSON value; panics with stderr when the command failed.
pub(crate) fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "queuectl failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}
