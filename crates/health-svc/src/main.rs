//! `health-svc`: telemetry, configuration, the application, until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use health_svc::{App, Config};
use platform::env::Env;
use platform::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = platform::healthcheck::from_args("LISTEN_ADDR", "127.0.0.1:8081", "/livez") {
        return code;
    }
    let env = Env::from_process();
    let mut logging = false;
    let started = async {
        let format = LogFormat::from_env(&env)?;
        telemetry::init(format, &env)?;
        logging = true;
        let config = Config::from_env(&env)?;
        App::build(config).await
    };
    let app = match started.await {
        Ok(app) => app,
        Err(e) if logging => {
            tracing::error!(error = format!("{e:#}"), "health-svc cannot start");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("health-svc cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until(platform::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "health-svc failed");
            ExitCode::FAILURE
        }
    }
}
