//! `api-svc`: telemetry, configuration, the application, until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use api_svc::{Application, Config};
use platform::env::Env;
use platform::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::from_process();
    let started = async {
        let format = LogFormat::from_env(&env)?;
        telemetry::init(format, &env)?;
        let config = Config::from_env(&env)?;
        Application::build(config).await
    };
    let app = match started.await {
        Ok(app) => app,
        Err(e) => {
            // Telemetry may not be up yet: the reason goes to stderr as well.
            eprintln!("api-svc: {e:#}");
            tracing::error!(error = format!("{e:#}"), "api-svc cannot start");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until(platform::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "api-svc failed");
            ExitCode::FAILURE
        }
    }
}
