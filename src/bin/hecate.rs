//! The `hecate` command line: a thin layer of argument parsing over the
//! library. Each subcommand builds a [`Config`] from the environment (and
//! flags), runs, and maps the outcome to an exit code.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hecate::batch::BatchArgs;
use hecate::gc::GcArgs;
use hecate::sim::SimArgs;
use hecate::tool::{self, SchemaFormat, ToolArgs};
use hecate::{BackendKind, Config, Runtime};

/// Runs shell commands for AI agents, each task in its own sandbox
/// (a local directory, or a MorphCloud VM).
///
/// Configuration comes from the environment: HECATE_BACKEND,
/// HECATE_VM_TTL_SECONDS, HECATE_VM_LIFETIME_SECONDS,
/// HECATE_COMMAND_TIMEOUT_SECONDS, HECATE_MAX_INSTANCES, MORPH_API_KEY,
/// MORPH_BASE_URL, HECATE_DEFAULT_SNAPSHOT_ID, ... (see the README).
/// Logging: RUST_LOG (default `warn`).
#[derive(Debug, Parser)]
#[command(name = "hecate", version)]
struct Cli {
    /// The backend (overrides HECATE_BACKEND).
    #[arg(long, global = true, value_parser = ["local", "morph"])]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a JSON-lines file of tasks, each a list of commands in its own
    /// instance, many tasks at once (the main job for evaluation runs).
    Batch(BatchArgs),
    /// Run one command and print the tool's JSON result.
    Exec(ExecArgs),
    /// Print the tool's JSON schema for function calling.
    ToolSchema {
        /// `openai` or `anthropic`.
        #[arg(long, default_value = "openai")]
        format: SchemaFormat,
    },
    /// Run a MorphCloud simulator on 127.0.0.1 (for tests and dry runs).
    Sim(SimArgs),
    /// Find instances a crashed runtime left behind and stop them (a dry run
    /// unless --yes): MorphCloud VMs tagged by Hecate with the morph backend,
    /// instance directories of dead runtimes with the local one.
    Gc(GcArgs),
    /// Measure the runtime: N tasks × M commands on the local backend or a
    /// MorphCloud simulator, idle actors, boot storms, faults, eviction.
    Bench(hecate::bench::BenchArgs),
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// The task whose instance runs the command.
    #[arg(long, default_value = tool::DEFAULT_TASK_ID)]
    task_id: String,
    /// Timeout in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Start the command in the background and return at once.
    #[arg(long)]
    background: bool,
    /// The command (joined with spaces and run by bash).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    // First, before any thread or logger: `hecate __launcher ...` is the
    // local backend's process launcher, not the CLI.
    hecate::launcher::run_if_requested();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let system = actix_rt::System::new();
    system.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::ToolSchema { format } => {
            println!("{:#}", tool::schema(format));
            ExitCode::SUCCESS
        }
        Command::Sim(args) => report(hecate::sim::run_cli(args).await),
        Command::Gc(args) => match config(cli.backend.as_deref()) {
            Ok(config) => report(hecate::gc::run_cli(args, &config).await.map(|_| ())),
            Err(err) => fail(&err),
        },
        Command::Bench(args) => report(hecate::bench::run_cli(args, cli.backend.as_deref()).await),
        Command::Batch(args) => match config(cli.backend.as_deref()) {
            Ok(config) => batch(args, config).await,
            Err(err) => fail(&err),
        },
        Command::Exec(args) => match config(cli.backend.as_deref()) {
            Ok(config) => exec(args, config).await,
            Err(err) => {
                // The seed's contract: a missing key is a result, not a crash.
                println!("{}", tool::error_result(&err).to_json());
                ExitCode::FAILURE
            }
        },
    }
}

/// The configuration from the environment, with `--backend` on top.
fn config(backend: Option<&str>) -> hecate::Result<Config> {
    let mut config = Config::from_env()?;
    if let Some(name) = backend {
        config.backend = name.parse::<BackendKind>()?;
    }
    config.validate()?;
    Ok(config)
}

async fn exec(args: ExecArgs, config: Config) -> ExitCode {
    let mut value = serde_json::json!({
        "command": args.command.join(" "),
        "background": args.background,
        "task_id": args.task_id,
    });
    if let Some(t) = args.timeout {
        value["timeout"] = serde_json::json!(t);
    }
    let parsed = ToolArgs::from_value_with_max(&value, config.max_command_timeout);
    let rt = match Runtime::start(config) {
        Ok(rt) => rt,
        Err(err) => return fail(&err),
    };
    let result = match parsed {
        Ok(args) => {
            tokio::select! {
                result = tool::terminal(&rt, args) => Some(result),
                () = termination() => None,
            }
        }
        Err(err) => Some(tool::error_result(&err)),
    };
    // A background job lives in the instance; a one-shot `exec` keeps the
    // instance only for the call, so the job ends with it.
    let clean = shutdown(&rt, Duration::from_secs(10)).await;
    match result {
        Some(result) => {
            println!("{}", result.to_json());
            if result.is_error() || !clean {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        None => ExitCode::from(130),
    }
}

async fn batch(args: BatchArgs, config: Config) -> ExitCode {
    let rt = match Runtime::start(config) {
        Ok(rt) => rt,
        Err(err) => return fail(&err),
    };
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let interrupted = std::rc::Rc::new(std::cell::Cell::new(false));
    let watcher = {
        let rt = rt.clone();
        let interrupted = interrupted.clone();
        actix_rt::spawn(async move {
            termination().await;
            eprintln!("hecate: interrupted; stopping (running commands get {grace:?})");
            interrupted.set(true);
            // Queued commands are answered at once; running ones finish
            // within the grace; then every instance is stopped.
            let _ = rt.shutdown(grace).await;
        })
    };
    let summary = hecate::batch::run(&args, &rt).await;
    watcher.abort();
    let clean = shutdown(&rt, grace).await;
    match summary {
        Ok(summary) if interrupted.get() => {
            eprintln!("hecate: interrupted after {} task(s)", summary.tasks);
            ExitCode::from(130)
        }
        Ok(summary) if summary.is_clean() && clean => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => fail(&err),
    }
}

/// Stops every instance; reports any that could not be stopped.
async fn shutdown(rt: &Runtime, grace: Duration) -> bool {
    match rt.shutdown(grace).await {
        Ok(report) => {
            for failure in &report.failed {
                eprintln!(
                    "hecate: task {:?}: instance {} was not stopped: {}",
                    failure.task_id.as_deref().unwrap_or(""),
                    failure.instance_id.as_deref().unwrap_or("-"),
                    failure.error
                );
            }
            if !report.swept.is_empty() {
                eprintln!(
                    "hecate: stopped {} half-started instance(s): {}",
                    report.swept.len(),
                    report.swept.join(", ")
                );
            }
            report.is_clean()
        }
        Err(err) => {
            eprintln!("hecate: shutdown: {err}");
            false
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn report(result: hecate::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &hecate::Error) -> ExitCode {
    eprintln!("hecate: {err}");
    ExitCode::FAILURE
}
