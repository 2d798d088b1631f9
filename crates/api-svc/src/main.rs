//! `api-svc`: telemetry, configuration, the application, until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use api_svc::{Application, Config};
use platform::env::Env;
use platform::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = platform::healthcheck::from_args("LISTEN_ADDR", "127.0.0.1:8080", "/readyz") {
        return code;
    }
    let env = Env::from_process();
    let mut logging = false;
    let started = async {
        let format = LogFormat::from_env(&env)?;
        telemetry::init(format, &env)?;
        logging = true;
        let config = Config::from_env(&env)?;
        Application::build(config).await
    };
    let app = match started.await {
        Ok(app) => app,
        Err(e) if logging => {
            tracing::error!(error = format!("{e:#}"), "api-svc cannot start");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("api-svc cannot start: {e:#}");
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
