//! `worker-svc`: see the crate docs and README's configuration table.

use std::process::ExitCode;

use platform::env::Env;
use platform::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = platform::healthcheck::from_args("METRICS_ADDR", worker_svc::DEFAULT_METRICS_ADDR, "/livez") {
        return code;
    }
    let env = Env::from_process();
    let started = LogFormat::from_env(&env).and_then(|format| telemetry::init(format, &env));
    if let Err(e) = started {
        eprintln!("worker-svc: {e}");
        return ExitCode::FAILURE;
    }
    let config = match worker_svc::Config::from_env(&env) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match worker_svc::run(config, platform::shutdown::signal()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "worker-svc could not start");
            ExitCode::FAILURE
        }
    }
}
