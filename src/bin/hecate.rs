//! The `hecate` command line: a thin layer of argument parsing over the
//! library. Each subcommand builds a [`Config`] from the environment (and
//! flags), runs, and maps the outcome to an exit code.

/// Prints a line on stdout; a reader that went away (`hecate exec … | head`)
/// ends the output quietly instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hecate::batch::BatchArgs;
use hecate::gc::GcArgs;
use hecate::sim::SimArgs;
use hecate::tool::{self, SchemaFormat, SchemaOptions, ToolArgs};
use hecate::{BackendKind, Config, Error, ErrorKind, Runtime};

/// Runs shell commands for AI agents, each task in its own sandbox
/// (a local directory, or a MorphCloud VM).
///
/// Configuration comes from the environment: HECATE_BACKEND,
/// HECATE_VM_TTL_SECONDS, HECATE_VM_LIFETIME_SECONDS,
/// HECATE_COMMAND_TIMEOUT_SECONDS, HECATE_MAX_INSTANCES, MORPH_API_KEY,
/// MORPH_BASE_URL, HECATE_DEFAULT_SNAPSHOT_ID, ... (see the README).
/// Logging: RUST_LOG (default `warn`).
///
/// The first SIGINT or SIGTERM stops gracefully (running commands get a
/// grace period, then every instance is stopped); a second one exits at
/// once with code 130, after saying what was not stopped.
#[derive(Debug, Parser)]
#[command(name = "hecate", version)]
struct Cli {
    /// The backend (overrides HECATE_BACKEND; default: sandbox where the
    /// kernel allows it, else local with a warning).
    #[arg(long, global = true, value_parser = ["sandbox", "local", "morph", "auto"])]
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
    /// Print the tool's JSON schema for function calling (its default
    /// timeout is the configured HECATE_COMMAND_TIMEOUT_SECONDS).
    ToolSchema {
        /// `openai` or `anthropic`.
        #[arg(long, default_value = "openai")]
        format: SchemaFormat,
        /// Leave out `task_id`: for a tool the orchestrator binds to one
        /// task (recommended whenever several agents share a runtime; with
        /// `task_id` a model can run commands in any task's environment).
        #[arg(long)]
        pinned: bool,
        /// Which tool: `terminal`, `job_output`, `job_kill`, `job_list`,
        /// or `all` (a JSON array of the four).
        #[arg(long, default_value = "terminal")]
        tool: String,
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
    /// Serve the HTTP API (exec, tasks, OpenAPI) on 127.0.0.1 with a bearer
    /// token (HECATE_API_TOKEN, else a generated one printed on stderr).
    Serve(hecate::server::ServeArgs),
    /// Copy a file or directory between this machine and a task of a
    /// running `hecate serve`, like `docker cp`: `hecate cp TASK:PATH
    /// LOCAL` or `hecate cp LOCAL TASK:PATH` (a directory travels as a tar
    /// stream; token from HECATE_API_TOKEN).
    Cp(hecate::server::CpArgs),
    /// Serve the `terminal` tool and the job tools over the Model Context
    /// Protocol on stdin and stdout (logs go to stderr). The connection is one task
    /// environment, stopped when stdin closes.
    #[cfg(feature = "mcp")]
    Mcp(McpArgs),
}

#[cfg(feature = "mcp")]
#[derive(Debug, clap::Args)]
struct McpArgs {
    /// The task the connection's commands run in (default: a fresh id per
    /// connection, `mcp-` and 16 hex digits).
    #[arg(long, conflicts_with = "allow_task_ids")]
    task_id: Option<String>,
    /// Let the client choose each call's task (`task_id` in the tool's
    /// schema): only for a client trusted with every task's environment.
    #[arg(long)]
    allow_task_ids: bool,
    /// How often a running call reports progress, in milliseconds (to a
    /// client that sent a progressToken).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    progress_ms: u64,
    /// Seconds running commands get to finish once stdin closes or a
    /// signal arrives, before every instance is stopped.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// The task whose instance runs the command.
    #[arg(long, default_value = tool::DEFAULT_TASK_ID)]
    task_id: String,
    /// Timeout in seconds (a positive, finite number; fractions allowed).
    #[arg(long)]
    timeout: Option<f64>,
    /// Start the command in the background and return at once.
    #[arg(long)]
    background: bool,
    /// Print the command's output as it arrives (stdout and stderr to
    /// their own streams), then the JSON result.
    #[arg(long)]
    stream: bool,
    /// The command (joined with spaces and run by bash).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    // First, before any thread or logger: `hecate __launcher ...` is the
    // local backend's process launcher, not the CLI.
    hecate::launcher::run_if_requested();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    raise_nofile_limit();
    let cli = Cli::parse();
    let system = actix_rt::System::new();
    system.block_on(run(cli))
}

/// Raises the soft limit of open files to the hard limit: each task's
/// instance, connection and child process holds descriptors, and the usual
/// soft limit of 1024 caps a batch far below what the machine allows. The
/// binary's choice; the library leaves an embedder's limits alone.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        log::debug!("getrlimit(RLIMIT_NOFILE) failed; keeping the limit");
        return;
    }
    if lim.rlim_cur >= lim.rlim_max {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads only the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        log::debug!("setrlimit(RLIMIT_NOFILE) failed; keeping the limit");
    }
}

async fn run(cli: Cli) -> ExitCode {
    // Listen before anything starts, so that no signal finds the default
    // action (dying without stopping instances).
    let signals = Signals::install();
    match cli.command {
        Command::ToolSchema {
            format,
            pinned,
            tool: name,
        } => match config(cli.backend.as_deref()) {
            Ok(config) => {
                let opts = SchemaOptions::for_config(&config).pinned(pinned);
                let schema = match name.as_str() {
                    tool::TOOL_NAME => Ok(tool::schema_with(format, &opts)),
                    "all" => Ok(tool::all_schemas(format, &opts)),
                    other => tool::job_schema(other, format, &opts),
                };
                match schema {
                    Ok(schema) => {
                        outln!("{schema:#}");
                        ExitCode::SUCCESS
                    }
                    Err(err) => fail(&err),
                }
            }
            Err(err) => fail(&err),
        },
        Command::Sim(args) => report(hecate::sim::run_cli(args, signals.interrupted()).await),
        Command::Gc(args) => match config(cli.backend.as_deref()) {
            Ok(config) => until_interrupted(&signals, hecate::gc::run_cli(args, &config)).await,
            Err(err) => fail(&err),
        },
        Command::Bench(args) => {
            until_interrupted(
                &signals,
                hecate::bench::run_cli(args, cli.backend.as_deref()),
            )
            .await
        }
        Command::Batch(args) => match config(cli.backend.as_deref()) {
            Ok(config) => batch(args, config, signals).await,
            Err(err) => fail(&err),
        },
        Command::Serve(args) => match config(cli.backend.as_deref()) {
            Ok(config) => {
                signals.on_second(|| {
                    "instances may still be running; `hecate gc` finds them".to_string()
                });
                match hecate::server::run_cli(args, config, signals.interrupted()).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(err) => fail(&err),
                }
            }
            Err(err) => fail(&err),
        },
        Command::Cp(args) => until_interrupted(&signals, hecate::server::run_cp(args)).await,
        #[cfg(feature = "mcp")]
        Command::Mcp(args) => match config(cli.backend.as_deref()) {
            Ok(config) => mcp(args, config, signals).await,
            Err(err) => fail(&err),
        },
        Command::Exec(args) => match config(cli.backend.as_deref()) {
            Ok(config) => exec(args, config, signals).await,
            Err(err) => {
                // The seed's contract: a missing key is a result, not a crash.
                outln!("{}", tool::error_result(&err).to_json());
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
    // The default is resolved here, so that its one fallback warning goes
    // to stderr whatever RUST_LOG says (and the library, handed a named
    // backend, does not log it again).
    let (kind, warning) = hecate::provider::resolve_backend(&config);
    if let Some(warning) = warning {
        eprintln!("hecate: warning: {warning}");
    }
    config.backend = kind;
    Ok(config)
}

async fn exec(args: ExecArgs, config: Config, signals: Signals) -> ExitCode {
    let args_stream = args.stream;
    let mut value = serde_json::json!({
        "command": args.command.join(" "),
        "background": args.background,
        "task_id": args.task_id,
    });
    let mut parsed = Ok(());
    if let Some(t) = args.timeout {
        // Checked here, not after JSON: `json!(f64::NAN)` is null, which
        // the tool would read as "no timeout" and run with the default.
        match tool::check_timeout_secs(t, config.max_command_timeout) {
            Ok(_) => value["timeout"] = serde_json::json!(t),
            Err(err) => {
                parsed = Err(Error::invalid_input(format!(
                    "--timeout: {}",
                    err.message()
                )))
            }
        }
    }
    let parsed =
        parsed.and_then(|()| ToolArgs::from_value_with_max(&value, config.max_command_timeout));
    let args = match parsed {
        Ok(args) => args,
        Err(err) => {
            outln!("{}", tool::error_result(&err).to_json());
            return ExitCode::FAILURE;
        }
    };
    let rt = match Runtime::start(config) {
        Ok(rt) => rt,
        Err(err) => return fail(&err),
    };
    let task = args
        .task_id
        .clone()
        .unwrap_or_else(|| tool::DEFAULT_TASK_ID.to_string());
    // A second signal exits at once; the caller still gets its one result.
    {
        let rt = rt.clone();
        let task = task.clone();
        let first = signals.clone_first();
        signals.on_second(move || {
            outln!("{}", interrupted_result(&first).to_json());
            format!(
                "the instance of task {task:?} (runtime {}) may still be running; \
                 `hecate gc` finds it",
                rt.runtime_id()
            )
        });
    }
    let stream = args_stream;
    let mut printer = tool::ChunkPrinter::new(std::io::stdout(), std::io::stderr());
    let run = async {
        if stream {
            let options = hecate::StreamOptions::default();
            tool::terminal_stream(&rt, args, options, |chunk| printer.print(chunk)).await
        } else {
            tool::terminal(&rt, args).await
        }
    };
    let result = tokio::select! {
        result = run => Some(result),
        () = signals.interrupted() => None,
    };
    // A background job lives in the instance; a one-shot `exec` keeps the
    // instance only for the call, so the job ends with it. Once interrupted
    // the command's result is lost anyway: stop the instance without
    // waiting for the command.
    if result.is_none() {
        eprintln!("hecate: interrupted; stopping the instance (a second signal exits at once)");
        // Evicting stops the instance under the running command at once; the
        // shutdown below then has only the sweep left to do.
        if let Err(err) = rt.evict(task.as_str()).await {
            eprintln!("hecate: could not stop the instance: {err}");
        }
    }
    let clean = shutdown(&rt, Duration::from_secs(10)).await;
    printer.finish_line();
    match result {
        Some(result) => {
            outln!("{}", result.to_json());
            if result.is_error() || !clean {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        None => {
            outln!("{}", interrupted_result(&signals.clone_first()).to_json());
            ExitCode::from(130)
        }
    }
}

/// The result of an `exec` whose command a signal interrupted.
fn interrupted_result(
    first: &tokio::sync::watch::Receiver<Option<&'static str>>,
) -> tool::ToolResult {
    let name = first.borrow().unwrap_or("a signal");
    tool::error_result(&Error::new(
        ErrorKind::ShuttingDown,
        format!("interrupted by {name} before the command's result arrived"),
    ))
}

async fn batch(args: BatchArgs, config: Config, signals: Signals) -> ExitCode {
    let rt = match Runtime::start(config) {
        Ok(rt) => rt,
        Err(err) => return fail(&err),
    };
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    {
        let rt = rt.clone();
        signals.on_second(move || {
            format!(
                "instances of runtime {} may still be running; `hecate gc` finds them",
                rt.runtime_id()
            )
        });
    }
    let watcher = {
        let rt = rt.clone();
        let signals = signals.clone();
        actix_rt::spawn(async move {
            signals.interrupted().await;
            eprintln!(
                "hecate: interrupted; stopping (running commands get {grace:?}; a second \
                 signal exits at once)"
            );
            // Queued commands are answered at once; running ones finish
            // within the grace; then every instance is stopped.
            let _ = rt.shutdown(grace).await;
        })
    };
    let summary = hecate::batch::run_until(&args, &rt, signals.interrupted()).await;
    watcher.abort();
    let clean = shutdown(&rt, grace).await;
    match summary {
        Ok(summary) if signals.is_interrupted() => {
            eprintln!("hecate: interrupted after {} task(s)", summary.tasks);
            ExitCode::from(130)
        }
        Ok(summary) if summary.is_clean() && clean => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => fail(&err),
    }
}

/// `hecate mcp`: serves one connection on stdio, then stops every instance.
#[cfg(feature = "mcp")]
async fn mcp(args: McpArgs, config: Config, signals: Signals) -> ExitCode {
    use hecate::mcp::{McpServer, TaskBinding};
    let rt = match Runtime::start(config) {
        Ok(rt) => rt,
        Err(err) => return fail(&err),
    };
    let binding = match args.task_id {
        _ if args.allow_task_ids => TaskBinding::ClientChooses,
        Some(task_id) => TaskBinding::Pinned(task_id),
        None => TaskBinding::fresh(),
    };
    let server = match McpServer::new(rt.clone(), binding) {
        Ok(server) => server.progress_every(Duration::from_millis(args.progress_ms)),
        Err(err) => {
            let _ = rt.shutdown(Duration::from_secs(1)).await;
            return fail(&err);
        }
    };
    if let Some(task_id) = server.pinned_task() {
        log::info!("mcp: serving task {task_id:?} on stdio");
    }
    {
        let rt = rt.clone();
        signals.on_second(move || {
            format!(
                "instances of runtime {} may still be running; `hecate gc` finds them",
                rt.runtime_id()
            )
        });
    }
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let served = tokio::select! {
        served = server.serve_stdio() => served,
        () = signals.interrupted() => {
            eprintln!("hecate: interrupted; stopping (running commands get {grace:?})");
            Ok(())
        }
    };
    let clean = shutdown(&rt, grace).await;
    if signals.is_interrupted() {
        // A read of stdin in progress cannot be cancelled, and would keep
        // the process waiting for input: exit now that all is stopped.
        std::process::exit(130);
    }
    match served {
        Ok(()) if clean => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
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

/// What a second signal runs before exiting: it prints what it must and
/// says what was not stopped.
type SecondSignalHook = Box<dyn Fn() -> String>;

/// SIGINT and SIGTERM: the first starts a graceful shutdown (whoever
/// awaits [`Signals::interrupted`] sees it); the second runs the hook set
/// with [`Signals::on_second`], prints what it says was not stopped and
/// exits with 130 at once.
#[derive(Clone)]
struct Signals {
    first: tokio::sync::watch::Receiver<Option<&'static str>>,
    on_second: Rc<RefCell<Option<SecondSignalHook>>>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let (tx, first) = tokio::sync::watch::channel(None);
        let on_second: Rc<RefCell<Option<SecondSignalHook>>> = Rc::default();
        let (int, term) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => (int, term),
            (Err(e), _) | (_, Err(e)) => {
                // Without handlers the default action (exit) applies.
                eprintln!("hecate: cannot listen for signals: {e}");
                return Signals { first, on_second };
            }
        };
        let hook = on_second.clone();
        actix_rt::spawn(async move {
            let (mut int, mut term) = (int, term);
            async fn next(
                int: &mut tokio::signal::unix::Signal,
                term: &mut tokio::signal::unix::Signal,
            ) -> &'static str {
                tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            }
            let name = next(&mut int, &mut term).await;
            let _ = tx.send(Some(name));
            let second = next(&mut int, &mut term).await;
            let not_stopped = hook
                .borrow()
                .as_ref()
                .map_or_else(|| "its cleanup did not finish".to_string(), |f| f());
            eprintln!("hecate: second signal ({second}): exiting at once; {not_stopped}");
            std::process::exit(130);
        });
        Signals { first, on_second }
    }

    /// Resolves once the first signal arrived.
    async fn interrupted(&self) {
        let mut first = self.first.clone();
        if first.wait_for(Option::is_some).await.is_err() {
            // The watcher is gone (no handlers): never interrupted.
            std::future::pending::<()>().await;
        }
    }

    fn is_interrupted(&self) -> bool {
        self.first.borrow().is_some()
    }

    /// The first signal's name, once there was one.
    fn clone_first(&self) -> tokio::sync::watch::Receiver<Option<&'static str>> {
        self.first.clone()
    }

    /// What a second signal does before exiting: print what it must and
    /// return a sentence saying what was not stopped.
    fn on_second(&self, f: impl Fn() -> String + 'static) {
        *self.on_second.borrow_mut() = Some(Box::new(f));
    }
}

/// Runs a subcommand with no signal handling of its own; the first signal
/// abandons it (what it started is dropped, which stops its runtime) and
/// exits with 130.
async fn until_interrupted<T>(
    signals: &Signals,
    work: impl std::future::Future<Output = hecate::Result<T>>,
) -> ExitCode {
    tokio::select! {
        result = work => report(result.map(|_| ())),
        () = signals.interrupted() => {
            eprintln!("hecate: interrupted");
            ExitCode::from(130)
        }
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
