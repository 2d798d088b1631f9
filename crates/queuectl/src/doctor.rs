//! `queuectl doctor`: the post-mortem's checklist, automated.

use std::process::ExitCode;

use queue_core::Connections;

use crate::cli::{DoctorArgs, Global};
use crate::output::Printer;

pub(crate) async fn run(_c: &Connections, _g: &Global, _p: &Printer, _args: DoctorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("doctor is being written")
}
