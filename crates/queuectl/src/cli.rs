//! The command line: every subcommand, its flags and its examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Inspect and repair Bull queues, run a queue with any command, and diagnose Redis.
#[derive(Debug, Parser)]
#[command(name = "queuectl", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  queuectl counts files
  queuectl add files --data '{\"path\":\"/data/a.mp4\"}' --attempts 3 --backoff exponential:1000
  queuectl jobs files --state failed --limit 5 --json
  queuectl retry files --all
  queuectl promote files --all
  queuectl work files --exec 'jq .path' --concurrency 4
  queuectl doctor";

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Redis to talk to (redis:// or rediss://, optional user:password@).
    #[arg(long, env = "REDIS_URL", global = true, default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,
    /// Bull key prefix.
    #[arg(long, env = "QUEUE_PREFIX", global = true, default_value = "bull")]
    pub prefix: String,
    /// Machine output: JSON on stdout (JSON lines for streams).
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not ask: needed for destructive commands when stdin is not a terminal.
    #[arg(long, short = 'f', global = true)]
    pub force: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a job; prints its id.
    #[command(
        after_help = "Examples:\n  queuectl add files --data '{\"i\":1}'\n  queuectl add files --data '{}' --delay 5000 --priority 1 --job-id order-17"
    )]
    Add(AddArgs),
    /// Job counts per state.
    #[command(after_help = "Example:\n  queuectl counts files --json")]
    Counts(QueueArg),
    /// One job, as Bull's Job#toJSON plus its state.
    #[command(after_help = "Example:\n  queuectl job files 42")]
    Job(JobArgs),
    /// Jobs in one state, in Bull's order (next to run / newest first).
    #[command(after_help = "Example:\n  queuectl jobs files --state failed --limit 10")]
    Jobs(JobsArgs),
    /// Move a failed job, or all of them, back to waiting.
    #[command(after_help = "Examples:\n  queuectl retry files 42\n  queuectl retry files --all")]
    Retry(RetryArgs),
    /// Remove a job and its logs (refused while a worker holds it). Destructive.
    #[command(after_help = "Example:\n  queuectl remove files 42 --force")]
    Remove(JobArgs),
    /// Remove jobs of one state older than a grace period. Destructive.
    #[command(after_help = "Example:\n  queuectl clean files --state completed --grace 3600000 --limit 1000 --force")]
    Clean(CleanArgs),
    /// Pause a queue for every worker (Bull's global pause).
    #[command(after_help = "Example:\n  queuectl pause files")]
    Pause(QueueArg),
    /// Resume a paused queue.
    #[command(after_help = "Example:\n  queuectl resume files")]
    Resume(QueueArg),
    /// Delete a queue and all its jobs. Destructive.
    #[command(after_help = "Example:\n  queuectl obliterate old-queue --force")]
    Obliterate(ObliterateArgs),
    /// Move a delayed job, or all of them, to waiting now.
    #[command(after_help = "Examples:\n  queuectl promote files 42\n  queuectl promote files --all")]
    Promote(PromoteArgs),
    /// Stream a queue's events as JSON lines until Ctrl-C.
    #[command(after_help = "Example:\n  queuectl events files webhooks")]
    Events(EventsArgs),
    /// Redis clients grouped by service and role, against the budgets services declare.
    #[command(after_help = "Example:\n  queuectl connections --json")]
    Connections,
    /// Run a queue with a shell command as the processor.
    #[command(after_help = "\
The command runs through `sh -c` once per job, with the job's data JSON on stdin and JOB_ID,
JOB_NAME, JOB_ATTEMPT (1 on the first try) and JOB_QUEUE in its environment. Exit 0 completes
the job with stdout as its return value (JSON when it parses, else a string); any other exit
fails the attempt with the tail of stderr as the reason, so retries and backoff apply.

Example:
  queuectl work files --exec 'ffprobe -v quiet -print_format json -show_format \"$(jq -r .path)\"' --concurrency 2")]
    Work(WorkArgs),
    /// Diagnose Redis for a job queue: latency, persistence, memory, clients, queues.
    #[command(
        after_help = "Exits 1 when a finding is critical.\n\nExample:\n  queuectl doctor --sample-seconds 3 --json"
    )]
    Doctor(DoctorArgs),
}

/// A queue name.
#[derive(Debug, Args)]
pub struct QueueArg {
    /// Queue name.
    pub queue: String,
}

/// `add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Queue name.
    pub queue: String,
    /// Job data, JSON.
    #[arg(long)]
    pub data: String,
    /// Job name.
    #[arg(long, default_value = "__default__")]
    pub name: String,
    /// Delay in ms.
    #[arg(long)]
    pub delay: Option<u64>,
    /// Priority, 1 = highest.
    #[arg(long)]
    pub priority: Option<u64>,
    /// Total tries.
    #[arg(long)]
    pub attempts: Option<u64>,
    /// fixed:MS or exponential:MS.
    #[arg(long)]
    pub backoff: Option<String>,
    /// Custom job id.
    #[arg(long)]
    pub job_id: Option<String>,
    /// Run next instead of last.
    #[arg(long)]
    pub lifo: bool,
    /// Delete the job once completed.
    #[arg(long)]
    pub remove_on_complete: bool,
}

/// A queue and a job id.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Queue name.
    pub queue: String,
    /// Job id.
    pub id: String,
}

/// `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Queue name.
    pub queue: String,
    /// waiting, paused, active, delayed, completed or failed.
    #[arg(long)]
    pub state: String,
    /// How many jobs (0 = all).
    #[arg(long, default_value_t = 20)]
    pub limit: u64,
}

/// `retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Queue name.
    pub queue: String,
    /// The failed job to retry.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Retry every failed job.
    #[arg(long)]
    pub all: bool,
    /// With --all: jobs per script call (default: queue-core's DEFAULT_RETRY_SLICE).
    #[arg(long, conflicts_with = "id")]
    pub slice: Option<usize>,
}

/// `promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Queue name.
    pub queue: String,
    /// The delayed job to promote.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Promote every delayed job, due or not.
    #[arg(long)]
    pub all: bool,
    /// With --all: jobs per script call (default: queue-core's DEFAULT_PROMOTE_SLICE).
    #[arg(long, conflicts_with = "id")]
    pub slice: Option<usize>,
}

/// `clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Queue name.
    pub queue: String,
    /// State to clean.
    #[arg(long, default_value = "completed")]
    pub state: String,
    /// Keep jobs younger than this (ms).
    #[arg(long, default_value_t = 0)]
    pub grace: u64,
    /// At most this many (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Jobs looked at per script call (default: queue-core's DEFAULT_CLEAN_SLICE).
    #[arg(long)]
    pub slice: Option<usize>,
}

/// `obliterate`.
#[derive(Debug, Args)]
pub struct ObliterateArgs {
    /// Queue name.
    pub queue: String,
    /// Also delete jobs that are being processed now.
    #[arg(long)]
    pub include_active: bool,
    /// Jobs deleted per script call (default: queue-core's DEFAULT_OBLITERATE_SLICE).
    #[arg(long)]
    pub slice: Option<usize>,
}

/// `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Queue names.
    #[arg(required = true)]
    pub queues: Vec<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// `work`.
#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Queue name.
    pub queue: String,
    /// Command run through `sh -c` per job.
    #[arg(long)]
    pub exec: String,
    /// Jobs at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Kill the command's process group after this long (ms); the attempt fails.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Working directory of the command.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Stop after this many jobs finished (completed or failed attempts); for scripts and tests.
    #[arg(long, conflicts_with = "until_drained")]
    pub max_jobs: Option<u64>,
    /// Stop once the queue has no waiting job left (delayed jobs and retries due later are not
    /// waited for); the jobs in hand finish first.
    #[arg(long)]
    pub until_drained: bool,
}

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// How long to sample latency.
    #[arg(long, default_value_t = 3)]
    pub sample_seconds: u64,
}
