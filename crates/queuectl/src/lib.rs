//! `queuectl`, the operator CLI for Bull queues: inspect and repair queues, run a queue with any
//! command, stream events, and diagnose the Redis a queue lives on.
//!
//! Machine output is JSON on stdout with `--json`; errors go to stderr with exit code 1 (2 for
//! usage errors). Destructive commands ask on a terminal and need `--force` otherwise.
#![warn(missing_docs)]

mod cli;
mod clients;
mod commands;
mod doctor;
mod events;
mod output;
mod work;

use std::process::ExitCode;

use clap::Parser;
use queue_core::{Connections, RedisConfig, RedisUrl};

pub use cli::Cli;

/// Parses the command line, runs the command on a runtime, and maps errors to exit codes.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use cli::Command;
    let printer = output::Printer::new(cli.global.json);
    let g = &cli.global;
    match cli.command {
        Command::Add(args) => commands::add(&connect(g, Plan::Command)?, g, &printer, args).await,
        Command::Counts(args) => commands::counts(&connect(g, Plan::Command)?, g, &printer, &args.queue).await,
        Command::Job(args) => commands::job(&connect(g, Plan::Command)?, g, &printer, args).await,
        Command::Jobs(args) => commands::jobs(&connect(g, Plan::Command)?, g, &printer, args).await,
        Command::Retry(args) => commands::retry(&connect(g, Plan::Command)?, g, &printer, args).await,
        Command::Remove(args) => commands::remove(&connect(g, Plan::Command)?, g, &printer, args).await,
        Command::Clean(args) => commands::clean(&connect(g, Plan::Command)?, g, &printer, args).await,
        Command::Pause(args) => commands::pause(&connect(g, Plan::Command)?, g, &printer, &args.queue, true).await,
        Command::Resume(args) => commands::pause(&connect(g, Plan::Command)?, g, &printer, &args.queue, false).await,
        Command::Obliterate(args) => commands::obliterate(&connect(g, Plan::Command)?, g, &printer, args).await,
        Command::Promote(args) => commands::promote(&connect(g, Plan::Command)?, g, &printer, args).await,
        Command::Events(args) => events::run(&connect(g, Plan::Subscriber)?, g, args).await,
        Command::Connections => clients::run(&connect(g, Plan::Command)?, &printer).await,
        Command::Work(args) => work::run(&connect(g, Plan::Worker)?, g, &printer, args).await,
        Command::Doctor(args) => doctor::run(&connect(g, Plan::Command)?, g, &printer, args).await,
    }
}

/// The connections a subcommand needs.
#[derive(Clone, Copy)]
enum Plan {
    Command,
    Subscriber,
    Worker,
}

/// Builds the connections for `plan` from the flags and the usual variables. The budget is
/// `REDIS_MAX_CONNECTIONS` when set (and then must fit the plan), else exactly the plan
/// (queue-core's default).
fn connect(g: &cli::Global, plan: Plan) -> anyhow::Result<Connections> {
    let mut config = RedisConfig::from_lookup(|name| match name {
        "REDIS_URL" => Some(g.redis_url.clone()),
        "QUEUE_PREFIX" => Some(g.prefix.clone()),
        other => std::env::var(other).ok(),
    })?;
    config.url = RedisUrl::parse(&g.redis_url)?;
    let builder = Connections::builder(config, "queuectl");
    let builder = match plan {
        // A one-shot command is gone before a heartbeat would tell anyone anything.
        Plan::Command => builder.heartbeat(None),
        Plan::Subscriber => builder.subscriber(true),
        Plan::Worker => builder.subscriber(true).blocking(1),
    };
    Ok(builder.build()?)
}
