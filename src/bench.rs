//! The load generator behind `hecate bench`: it drives a [`Runtime`] with
//! N tasks × M commands at a chosen concurrency and reports what users of
//! evaluation runs care about (latency percentiles, commands and instance
//! starts per second, time until every task's instance was ready, peak
//! memory, and instances left live at the end, which must be none).
//!
//! This module owns the scenarios ([`Scenario`]), their arguments
//! ([`BenchArgs`]), the report ([`BenchReport`]) and the environments they
//! run in: the local backend under a private root, an in-process MorphCloud
//! simulator ([`crate::sim`]), an external MorphCloud-compatible server
//! (`MORPH_BASE_URL`), or a backend that does nothing
//! ([`NoopProvider`], for the runtime's own costs).
//!
//! # Layout
//!
//! - `bench/noop.rs`: the no-op backend, with eviction-lateness recording.
//! - `bench/measure.rs`: percentiles and memory from `/proc/self/status`.
//!
//! Every command text ends with a unique shell comment
//! `# hb:t<task>:c<index>;`, so the simulator can tell how often each one
//! ran (the `faults` scenario checks that none ran twice).

mod measure;
mod noop;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

pub use measure::{ms, peak_rss_bytes, proc_status_bytes, rss_bytes, Percentiles};
pub use noop::NoopProvider;

use crate::config::{ApiKey, BackendKind, Config};
use crate::error::{Error, Result};
use crate::provider::morph::MorphProvider;
use crate::provider::{local::LocalProvider, Provider};
use crate::runtime::{ExecRequest, Placement, Runtime};
use crate::sim::{ExecMode, FaultConfig, SimConfig, SimServer};

/// What `hecate bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// N tasks × M commands on the local backend, or on MorphCloud with
    /// `--backend morph` (default 64 × 50 at concurrency 64).
    Exec,
    /// N idle task actors on a no-op backend: memory per actor (RSS delta
    /// / N) and spawn time (default N = 100,000).
    IdleActors,
    /// N instances started at once on the simulator with a boot time: time
    /// until all are ready against one instance's boot (default 10,000,
    /// `--boot-ms 1000`).
    Boot,
    /// N × M commands on the simulator with faults of every kind: answers by
    /// class, nothing run twice, nothing left live (default 1,000 × 10 at
    /// `--fault-rate 0.1`).
    Faults,
    /// N tasks on a no-op backend with a short idle lifetime (`--idle-ms`):
    /// how late each idle eviction fires (default N = 1,000).
    Eviction,
}

impl Scenario {
    fn as_str(self) -> &'static str {
        match self {
            Scenario::Exec => "exec",
            Scenario::IdleActors => "idle-actors",
            Scenario::Boot => "boot",
            Scenario::Faults => "faults",
            Scenario::Eviction => "eviction",
        }
    }
}

/// Arguments of `hecate bench`. Settings left out take the scenario's
/// defaults (see [`Scenario`]).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Exec)]
    pub scenario: Scenario,
    /// The backend of the `exec` scenario (set from the global `--backend`;
    /// the other scenarios choose their own).
    #[arg(skip)]
    pub backend: BackendKind,
    /// Number of tasks (N).
    #[arg(long, short = 'n')]
    pub tasks: Option<usize>,
    /// Commands per task (M), run one after another.
    #[arg(long, short = 'm')]
    pub commands: Option<usize>,
    /// Tasks in flight at once.
    #[arg(long, short = 'c')]
    pub concurrency: Option<usize>,
    /// The command each call runs (a unique comment is appended).
    #[arg(long, default_value = "true")]
    pub command: String,
    /// Simulator: how long an instance boots, in milliseconds.
    #[arg(long)]
    pub boot_ms: Option<u64>,
    /// Simulator: overall fault rate, spread evenly over every fault kind.
    #[arg(long)]
    pub fault_rate: Option<f64>,
    /// Simulator: seed of the fault generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulator: the `Retry-After` seconds sent with 429 and 503 faults.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Faults: turn faults off before the shutdown, so that only the load
    /// meets them (the runtime does not retry a failed stop; see
    /// BENCHMARKS.md).
    #[arg(long)]
    pub calm_teardown: bool,
    /// Simulator: run commands with bash instead of echoing them.
    #[arg(long)]
    pub sim_bash: bool,
    /// Simulator: actix-web worker threads (default: the number of cores).
    #[arg(long)]
    pub sim_workers: Option<usize>,
    /// Morph: use the server at MORPH_BASE_URL (with MORPH_API_KEY)
    /// instead of an in-process simulator.
    #[arg(long)]
    pub external: bool,
    /// Morph: readiness poll interval in milliseconds (default 50 without
    /// a boot time, else the configuration's 1,000).
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// Eviction: the idle lifetime, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub idle_ms: u64,
    /// Worker arbiters of the runtime (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

impl BenchArgs {
    /// The arguments of a scenario with every setting at its default.
    pub fn new(scenario: Scenario) -> Self {
        BenchArgs {
            scenario,
            backend: BackendKind::Local,
            tasks: None,
            commands: None,
            concurrency: None,
            command: "true".to_string(),
            boot_ms: None,
            fault_rate: None,
            seed: 1,
            retry_after_secs: 1,
            calm_teardown: false,
            sim_bash: false,
            sim_workers: None,
            external: false,
            poll_ms: None,
            idle_ms: 100,
            workers: None,
            json: false,
            no_progress: true,
        }
    }
}

/// The settings a run uses, after defaults.
#[derive(Debug, Clone)]
struct Plan {
    tasks: usize,
    commands: usize,
    concurrency: usize,
    boot: Duration,
    fault_rate: f64,
}

impl Plan {
    fn resolve(args: &BenchArgs) -> Result<Plan> {
        let (tasks, commands, concurrency, boot_ms, fault_rate) = match args.scenario {
            Scenario::Exec => (64, 50, 64, 0, 0.0),
            Scenario::IdleActors => (100_000, 1, 1024, 0, 0.0),
            Scenario::Boot => (10_000, 1, usize::MAX, 1000, 0.0),
            Scenario::Faults => (1000, 10, 1000, 0, 0.1),
            Scenario::Eviction => (1000, 1, 1000, 0, 0.0),
        };
        let tasks = args.tasks.unwrap_or(tasks);
        let plan = Plan {
            tasks,
            commands: args.commands.unwrap_or(commands),
            concurrency: args.concurrency.unwrap_or(concurrency).min(tasks).max(1),
            boot: Duration::from_millis(args.boot_ms.unwrap_or(boot_ms)),
            fault_rate: args.fault_rate.unwrap_or(fault_rate),
        };
        if plan.tasks == 0 || plan.commands == 0 {
            return Err(Error::invalid_input(
                "--tasks and --commands must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&plan.fault_rate) {
            return Err(Error::invalid_input(
                "--fault-rate must be within 0.0..=1.0",
            ));
        }
        if args.command.trim().is_empty() {
            return Err(Error::invalid_input("--command must not be empty"));
        }
        if args.idle_ms == 0 {
            return Err(Error::invalid_input("--idle-ms must be at least 1"));
        }
        Ok(plan)
    }
}

/// Answers by class.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Answers {
    /// Commands sent.
    pub requests: u64,
    /// Commands that ran (any exit code).
    pub ok: u64,
    /// Of those, commands with a non-zero exit code.
    pub nonzero_exit: u64,
    /// Failures by error kind (`transient`, `indeterminate`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl Answers {
    /// Every answer, whatever its class.
    pub fn answered(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// Memory and time of the idle-actors scenario.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IdleReport {
    /// Resident memory before the actors were spawned, in bytes.
    pub rss_before_bytes: u64,
    /// Resident memory with all of them live, in bytes.
    pub rss_after_bytes: u64,
    /// (after − before) / N, in bytes.
    pub bytes_per_actor: f64,
    /// Time to spawn all of them (one command each), in seconds.
    pub spawn_secs: f64,
    /// Time the graceful shutdown of all of them took, in seconds.
    pub shutdown_secs: f64,
}

/// What the faults scenario found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultReport {
    /// Faults the simulator injected, by kind.
    pub injected: BTreeMap<String, u64>,
    /// Commands the simulator ran (including those whose answer was lost).
    pub sim_execs: u64,
    /// Distinct commands that ran more than once (must be 0).
    pub ran_twice: u64,
    /// Commands answered as run that the simulator never ran (must be 0).
    pub ok_but_not_run: u64,
    /// Commands answered with an error that the simulator did run (an
    /// answer lost on the way back; reported, never re-run).
    pub failed_but_ran: u64,
}

/// The result of one `hecate bench` run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// The scenario run.
    pub scenario: Scenario,
    /// The backend: `local`, `morph-sim`, `morph-external` or `noop`.
    pub backend: String,
    /// N.
    pub tasks: usize,
    /// M.
    pub commands_per_task: usize,
    /// Tasks in flight at once.
    pub concurrency: usize,
    /// The runtime's worker arbiters.
    pub workers: usize,
    /// The `max_instances` cap used.
    pub max_instances: usize,
    /// The `max_concurrent_starts` cap used.
    pub max_concurrent_starts: usize,
    /// Answers by class.
    pub answers: Answers,
    /// Latency of every command, from the call to its answer.
    pub latency: Option<Percentiles>,
    /// Latency of the commands that did not start an instance.
    pub latency_warm: Option<Percentiles>,
    /// From the first call to the last answer, in seconds.
    pub wall_secs: f64,
    /// Answers per second of wall time.
    pub commands_per_sec: f64,
    /// Instances started.
    pub instance_starts: u64,
    /// Instances started per second of wall time.
    pub instance_starts_per_sec: f64,
    /// Time until the first command of every task had run, in seconds.
    pub all_ready_secs: Option<f64>,
    /// Tasks whose instance became ready.
    pub tasks_ready: u64,
    /// Boot: one instance's start and first command, alone, in seconds.
    pub single_boot_secs: Option<f64>,
    /// Boot: `all_ready_secs / single_boot_secs`.
    pub ready_ratio: Option<f64>,
    /// Peak resident memory of this process (VmHWM), in bytes. With the
    /// in-process simulator it includes the simulator.
    pub peak_rss_bytes: u64,
    /// Idle-actors figures.
    pub idle: Option<IdleReport>,
    /// Eviction: how long after its idle deadline each eviction fired.
    pub eviction_lateness: Option<Percentiles>,
    /// Faults figures.
    pub faults: Option<FaultReport>,
    /// Whether each task actor stopped its own instance in the graceful
    /// shutdown (`ShutdownReport::is_clean`).
    pub shutdown_clean: bool,
    /// Instances whose stop failed in the shutdown (left to the sweep).
    pub stop_failures: u64,
    /// Instances the shutdown's tag sweep found and stopped.
    pub swept: u64,
    /// Instances still live after the shutdown (must be 0).
    pub live_at_end: u64,
}

impl BenchReport {
    /// The invariants this run broke: unanswered commands, instances left
    /// live, commands run twice, answers that do not match the simulator.
    /// A stop that failed in the shutdown is reported, not counted here, as
    /// long as the sweep caught the instance (`live_at_end` is what counts).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.answers.answered() != self.answers.requests {
            problems.push(format!(
                "{} of {} commands were answered",
                self.answers.answered(),
                self.answers.requests
            ));
        }
        if self.live_at_end != 0 {
            problems.push(format!("{} instance(s) left live", self.live_at_end));
        }
        if let Some(f) = &self.faults {
            if f.ran_twice != 0 {
                problems.push(format!("{} command(s) ran more than once", f.ran_twice));
            }
            if f.ok_but_not_run != 0 {
                problems.push(format!(
                    "{} command(s) answered as run never ran",
                    f.ok_but_not_run
                ));
            }
        }
        for p in [&self.latency, &self.eviction_lateness]
            .into_iter()
            .flatten()
        {
            if !p.is_ordered() {
                problems.push("percentiles out of order".to_string());
            }
        }
        problems
    }
}

/// Runs `hecate bench`: the run, then the report as a table or JSON.
/// `backend` is the global `--backend` flag. A run that broke an invariant
/// (see [`BenchReport::problems`]) is an error, after the report.
pub async fn run_cli(mut args: BenchArgs, backend: Option<&str>) -> Result<()> {
    if let Some(name) = backend {
        args.backend = name.parse()?;
    }
    let report = run(&args).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::internal(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "the run broke an invariant: {}",
            problems.join("; ")
        )))
    }
}

/// Runs one scenario and reports. Must be called inside an actix `System`.
pub async fn run(args: &BenchArgs) -> Result<BenchReport> {
    let plan = Plan::resolve(args)?;
    match args.scenario {
        Scenario::Exec => exec_scenario(args, &plan).await,
        Scenario::IdleActors => idle_actors(args, &plan).await,
        Scenario::Boot => boot(args, &plan).await,
        Scenario::Faults => faults(args, &plan).await,
        Scenario::Eviction => eviction(args, &plan).await,
    }
}

/// Where the instances of a run live.
enum Env {
    Local { root: PathBuf },
    Sim(SimServer),
    External,
    Noop(NoopProvider),
}

impl Env {
    fn name(&self) -> &'static str {
        match self {
            Env::Local { .. } => "local",
            Env::Sim(_) => "morph-sim",
            Env::External => "morph-external",
            Env::Noop(_) => "noop",
        }
    }

    /// The local backend under a fresh private root.
    fn local(config: &mut Config) -> Env {
        let root = std::env::temp_dir().join(format!(
            "hecate-bench-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        config.backend = BackendKind::Local;
        config.local.root = root.clone();
        Env::Local { root }
    }

    /// An in-process simulator, and the configuration pointing at it.
    async fn sim(args: &BenchArgs, plan: &Plan, config: &mut Config) -> Result<Env> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let sim = SimServer::start(SimConfig {
            boot_time: plan.boot,
            exec_mode: if args.sim_bash {
                ExecMode::Bash
            } else {
                ExecMode::Echo
            },
            faults: FaultConfig {
                seed: args.seed,
                retry_after_secs: args.retry_after_secs,
                ..FaultConfig::default()
            }
            .spread(plan.fault_rate),
            workers: args.sim_workers.unwrap_or(cores).max(1),
            ..SimConfig::default()
        })
        .await
        .map_err(|e| Error::internal(format!("cannot start the simulator: {e}")))?;
        *config = std::mem::take(config).with_morph(sim.base_url(), ApiKey::new(sim.api_key()));
        config.backend = BackendKind::Morph;
        Ok(Env::Sim(sim))
    }

    fn provider(&self, config: &Config) -> Result<Arc<dyn Provider>> {
        Ok(match self {
            Env::Local { .. } => Arc::new(LocalProvider::new(config)?),
            Env::Sim(_) | Env::External => Arc::new(MorphProvider::new(config)?),
            Env::Noop(p) => Arc::new(p.clone()),
        })
    }

    /// Counts the instances still live after the runtime's shutdown, and
    /// cleans up what the run created.
    async fn live_at_end(self, config: &Config, runtime_id: &str) -> Result<u64> {
        match self {
            Env::Local { root } => {
                let live = std::fs::read_dir(&root)
                    .map(|entries| {
                        entries
                            .filter_map(std::result::Result::ok)
                            .filter(|e| e.path().is_dir())
                            .count() as u64
                    })
                    .unwrap_or(0);
                let _ = std::fs::remove_dir_all(&root);
                Ok(live)
            }
            Env::Sim(sim) => {
                let live = sim.stats().live_instances as u64;
                sim.stop().await;
                Ok(live)
            }
            // A second sweep finds what the shutdown left (and stops it).
            Env::External => Ok(MorphProvider::new(config)?
                .sweep_orphans(runtime_id)
                .await?
                .len() as u64),
            Env::Noop(p) => Ok(p.live()),
        }
    }
}

/// The configuration every scenario starts from: caps high enough that
/// they never queue a task (`max_instances` = N + 1 for a probe task,
/// `max_concurrent_starts` = the concurrency), and short retry delays so a
/// fault costs milliseconds rather than seconds.
fn base_config(args: &BenchArgs, plan: &Plan) -> Result<Config> {
    let mut config = if args.external {
        let config = Config::from_env()?;
        if std::env::var_os("MORPH_BASE_URL").is_none() {
            return Err(Error::config(
                "--external: set MORPH_BASE_URL (and MORPH_API_KEY) to the server to use",
            ));
        }
        config
    } else {
        Config::default()
    };
    config.max_instances = plan.tasks + 1;
    config.max_concurrent_starts = plan.concurrency.max(1);
    config.retry.base_delay = Duration::from_millis(50);
    config.retry.max_delay = Duration::from_secs(2);
    if let Some(workers) = args.workers {
        config.workers = workers.max(1);
    }
    config.morph.poll_interval = match args.poll_ms {
        Some(ms) => Duration::from_millis(ms.max(1)),
        None if plan.boot.is_zero() => Duration::from_millis(50),
        None => config.morph.poll_interval,
    };
    Ok(config)
}

/// What a load run saw.
#[derive(Default)]
struct Observed {
    answers: Answers,
    latencies: Vec<Duration>,
    warm_latencies: Vec<Duration>,
    starts: u64,
    /// Per task that got one: when its first command was answered as run.
    ready_at: Vec<Duration>,
    /// Per command (task × M + index): answered as run.
    ran_ok: Vec<bool>,
    wall: Duration,
}

/// The unique part of a command's text, for counting its runs.
fn needle(task: usize, index: usize) -> String {
    format!("hb:t{task}:c{index};")
}

fn progress(args: &BenchArgs, total: u64) -> indicatif::ProgressBar {
    if args.json || args.no_progress || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} commands ({per_sec})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(total).with_style(style)
}

/// Runs N tasks × M commands, `concurrency` tasks at a time, each task's
/// commands one after another. `record` keeps per-command figures (off
/// where their memory would distort a memory measurement).
async fn drive(
    rt: &Runtime,
    args: &BenchArgs,
    plan: &Plan,
    prefix: &str,
    record: bool,
) -> Observed {
    let total = (plan.tasks * plan.commands) as u64;
    let bar = progress(args, total);
    let seen = RefCell::new(Observed {
        ran_ok: if record {
            vec![false; plan.tasks * plan.commands]
        } else {
            Vec::new()
        },
        ..Observed::default()
    });
    let t0 = Instant::now();
    futures_util::stream::iter(0..plan.tasks)
        .for_each_concurrent(plan.concurrency, |task| {
            let (seen, bar) = (&seen, &bar);
            async move {
                let task_id = format!("{prefix}-{task}");
                let mut ready = false;
                for index in 0..plan.commands {
                    let text = format!("{} # {}", args.command, needle(task, index));
                    let sent = Instant::now();
                    let result = rt.exec(task_id.clone(), ExecRequest::new(text)).await;
                    let took = sent.elapsed();
                    let mut seen = seen.borrow_mut();
                    seen.answers.requests += 1;
                    match result {
                        Ok(out) => {
                            seen.answers.ok += 1;
                            if out.exit_code != 0 {
                                seen.answers.nonzero_exit += 1;
                            }
                            if out.instance_started {
                                seen.starts += 1;
                            }
                            if record {
                                seen.latencies.push(took);
                                if !out.instance_started {
                                    seen.warm_latencies.push(took);
                                }
                                seen.ran_ok[task * plan.commands + index] = true;
                                if !ready {
                                    seen.ready_at.push(t0.elapsed());
                                }
                            }
                            ready = true;
                        }
                        Err(err) => {
                            if record {
                                seen.latencies.push(took);
                            }
                            *seen
                                .answers
                                .errors
                                .entry(err.kind().as_str().to_string())
                                .or_default() += 1;
                            log::debug!("bench: task={task_id} command {index} failed: {err}");
                        }
                    }
                    bar.inc(1);
                }
            }
        })
        .await;
    bar.finish_and_clear();
    let mut seen = seen.into_inner();
    seen.wall = t0.elapsed();
    seen
}

/// A runtime over `env`'s backend, spread over worker arbiters.
fn start_runtime(env: &Env, config: &Config) -> Result<Runtime> {
    Runtime::start_with(config.clone(), env.provider(config)?, Placement::Workers)
}

/// The report's common part, from a load run.
fn report(
    args: &BenchArgs,
    plan: &Plan,
    env_name: &str,
    config: &Config,
    seen: &Observed,
) -> BenchReport {
    let secs = seen.wall.as_secs_f64().max(1e-9);
    let all_ready = (seen.ready_at.len() == plan.tasks)
        .then(|| seen.ready_at.iter().max().map(Duration::as_secs_f64))
        .flatten();
    BenchReport {
        scenario: args.scenario,
        backend: env_name.to_string(),
        tasks: plan.tasks,
        commands_per_task: plan.commands,
        concurrency: plan.concurrency,
        workers: config.workers,
        max_instances: config.max_instances,
        max_concurrent_starts: config.max_concurrent_starts,
        answers: seen.answers.clone(),
        latency: Percentiles::of(&seen.latencies),
        latency_warm: Percentiles::of(&seen.warm_latencies),
        wall_secs: seen.wall.as_secs_f64(),
        commands_per_sec: seen.answers.answered() as f64 / secs,
        instance_starts: seen.starts,
        instance_starts_per_sec: seen.starts as f64 / secs,
        all_ready_secs: all_ready,
        tasks_ready: seen.ready_at.len() as u64,
        single_boot_secs: None,
        ready_ratio: None,
        peak_rss_bytes: peak_rss_bytes(),
        idle: None,
        eviction_lateness: None,
        faults: None,
        shutdown_clean: false,
        stop_failures: 0,
        swept: 0,
        live_at_end: 0,
    }
}

/// Shuts the runtime down and counts what is left; fills the report's end.
async fn finish(rt: &Runtime, env: Env, config: &Config, report: &mut BenchReport) -> Result<()> {
    let shutdown = rt.shutdown(Duration::from_secs(30)).await?;
    for failure in &shutdown.failed {
        log::warn!(
            "bench: task={} vm={} not stopped: {}",
            failure.task_id.as_deref().unwrap_or("-"),
            failure.instance_id.as_deref().unwrap_or("-"),
            failure.error
        );
    }
    report.shutdown_clean = shutdown.is_clean();
    report.stop_failures = shutdown.failed.len() as u64;
    report.swept = shutdown.swept.len() as u64;
    report.live_at_end = env.live_at_end(config, rt.runtime_id()).await?;
    report.peak_rss_bytes = peak_rss_bytes();
    Ok(())
}

async fn exec_scenario(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    let mut config = base_config(args, plan)?;
    let env = match (args.backend, args.external) {
        (BackendKind::Local, false) => Env::local(&mut config),
        (BackendKind::Morph, false) => Env::sim(args, plan, &mut config).await?,
        (_, true) => {
            config.backend = BackendKind::Morph;
            Env::External
        }
    };
    let rt = start_runtime(&env, &config)?;
    let seen = drive(&rt, args, plan, "bench", true).await;
    let mut report = report(args, plan, env.name(), &config, &seen);
    finish(&rt, env, &config, &mut report).await?;
    Ok(report)
}

async fn idle_actors(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    let config = base_config(args, plan)?;
    let provider = NoopProvider::new();
    let env = Env::Noop(provider.clone());
    let rt = start_runtime(&env, &config)?;
    // One task first, so the arbiters and their thread-local state exist
    // before the baseline is taken.
    rt.exec("warm-up", ExecRequest::new("true")).await?;
    let before = rss_bytes();
    let seen = drive(&rt, args, plan, "idle", false).await;
    let after = rss_bytes();
    let mut report = report(args, plan, env.name(), &config, &seen);
    report.instance_starts = provider.started().saturating_sub(1);
    report.instance_starts_per_sec = report.instance_starts as f64 / report.wall_secs.max(1e-9);
    let stopping = Instant::now();
    finish(&rt, env, &config, &mut report).await?;
    report.idle = Some(IdleReport {
        rss_before_bytes: before,
        rss_after_bytes: after,
        bytes_per_actor: after.saturating_sub(before) as f64 / plan.tasks as f64,
        spawn_secs: seen.wall.as_secs_f64(),
        shutdown_secs: stopping.elapsed().as_secs_f64(),
    });
    Ok(report)
}

async fn boot(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    let mut config = base_config(args, plan)?;
    let env = if args.external {
        config.backend = BackendKind::Morph;
        Env::External
    } else {
        Env::sim(args, plan, &mut config).await?
    };
    let rt = start_runtime(&env, &config)?;
    // One instance alone: its start and first command.
    let probe = Instant::now();
    rt.exec("boot-probe", ExecRequest::new(args.command.clone()))
        .await?;
    let single = probe.elapsed();
    rt.evict("boot-probe").await?;
    let seen = drive(&rt, args, plan, "boot", true).await;
    let mut report = report(args, plan, env.name(), &config, &seen);
    report.single_boot_secs = Some(single.as_secs_f64());
    report.ready_ratio = report
        .all_ready_secs
        .map(|all| all / single.as_secs_f64().max(1e-9));
    finish(&rt, env, &config, &mut report).await?;
    Ok(report)
}

async fn faults(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    if args.external {
        return Err(Error::invalid_input(
            "the faults scenario needs the in-process simulator (drop --external)",
        ));
    }
    let mut config = base_config(args, plan)?;
    let env = Env::sim(args, plan, &mut config).await?;
    let rt = start_runtime(&env, &config)?;
    let seen = drive(&rt, args, plan, "faults", true).await;
    let mut report = report(args, plan, env.name(), &config, &seen);
    let Env::Sim(sim) = &env else {
        return Err(Error::internal("the faults scenario runs on the simulator"));
    };
    let stats = sim.stats();
    let f = stats.faults;
    let mut found = FaultReport {
        injected: [
            ("error_500", f.error_500),
            ("error_502", f.error_502),
            ("error_503", f.error_503),
            ("error_429", f.error_429),
            ("drop_before", f.drop_before),
            ("drop_after", f.drop_after),
            ("slow", f.slow),
            ("boot_error", f.boot_error),
            ("vanish", f.vanish),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        sim_execs: stats.execs,
        ..FaultReport::default()
    };
    for task in 0..plan.tasks {
        for index in 0..plan.commands {
            let runs = sim.command_runs_containing(&needle(task, index));
            let ok = seen.ran_ok[task * plan.commands + index];
            found.ran_twice += u64::from(runs > 1);
            found.ok_but_not_run += u64::from(ok && runs == 0);
            found.failed_but_ran += u64::from(!ok && runs > 0);
        }
    }
    report.faults = Some(found);
    if args.calm_teardown {
        sim.set_faults(FaultConfig::none());
    }
    finish(&rt, env, &config, &mut report).await?;
    Ok(report)
}

async fn eviction(args: &BenchArgs, plan: &Plan) -> Result<BenchReport> {
    let mut config = base_config(args, plan)?;
    let idle = Duration::from_millis(args.idle_ms);
    config.idle_lifetime = idle;
    let provider = NoopProvider::recording_eviction(idle);
    let env = Env::Noop(provider.clone());
    let rt = start_runtime(&env, &config)?;
    let seen = drive(&rt, args, plan, "evict", true).await;
    let mut report = report(args, plan, env.name(), &config, &seen);
    let deadline = idle * 10 + Duration::from_secs(30);
    if actix::clock::timeout(deadline, provider.wait_stopped(plan.tasks as u64))
        .await
        .is_err()
    {
        return Err(Error::new(
            crate::ErrorKind::Timeout,
            format!(
                "only {} of {} idle instances were evicted within {deadline:?}",
                provider.stopped(),
                plan.tasks
            ),
        ));
    }
    report.eviction_lateness = Percentiles::of(&provider.lateness());
    finish(&rt, env, &config, &mut report).await?;
    Ok(report)
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.as_str().into()),
            ("backend".into(), self.backend.clone()),
            (
                "tasks × commands".into(),
                format!("{} × {}", self.tasks, self.commands_per_task),
            ),
            ("concurrency".into(), self.concurrency.to_string()),
            (
                "workers / max_instances / max_concurrent_starts".into(),
                format!(
                    "{} / {} / {}",
                    self.workers, self.max_instances, self.max_concurrent_starts
                ),
            ),
            (
                "answers".into(),
                format!(
                    "{} of {} (ok {}, non-zero exit {}, errors {:?})",
                    self.answers.answered(),
                    self.answers.requests,
                    self.answers.ok,
                    self.answers.nonzero_exit,
                    self.answers.errors
                ),
            ),
        ];
        let pct = |p: &Percentiles| {
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (n={})",
                p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
            )
        };
        if let Some(p) = &self.latency {
            rows.push(("latency ms".into(), pct(p)));
        }
        if let Some(p) = &self.latency_warm {
            rows.push(("latency ms (no start)".into(), pct(p)));
        }
        rows.push(("wall s".into(), format!("{:.3}", self.wall_secs)));
        rows.push(("commands/s".into(), format!("{:.0}", self.commands_per_sec)));
        rows.push((
            "instance starts (/s)".into(),
            format!(
                "{} ({:.0}/s)",
                self.instance_starts, self.instance_starts_per_sec
            ),
        ));
        if let Some(all) = self.all_ready_secs {
            rows.push((
                "all instances ready s".into(),
                format!("{all:.3} ({} tasks)", self.tasks_ready),
            ));
        }
        if let (Some(one), Some(ratio)) = (self.single_boot_secs, self.ready_ratio) {
            rows.push(("one instance boot s".into(), format!("{one:.3}")));
            rows.push(("all ready / one boot".into(), format!("{ratio:.3}")));
        }
        if let Some(idle) = &self.idle {
            rows.push((
                "RSS before → after".into(),
                format!(
                    "{:.1} MiB → {:.1} MiB",
                    idle.rss_before_bytes as f64 / 1048576.0,
                    idle.rss_after_bytes as f64 / 1048576.0
                ),
            ));
            rows.push((
                "bytes per idle actor".into(),
                format!("{:.0}", idle.bytes_per_actor),
            ));
            rows.push(("spawn s".into(), format!("{:.3}", idle.spawn_secs)));
            rows.push(("shutdown s".into(), format!("{:.3}", idle.shutdown_secs)));
        }
        if let Some(p) = &self.eviction_lateness {
            rows.push(("eviction lateness ms".into(), pct(p)));
        }
        if let Some(faults) = &self.faults {
            rows.push((
                "faults injected".into(),
                format!(
                    "{} {:?}",
                    faults.injected.values().sum::<u64>(),
                    faults.injected
                ),
            ));
            rows.push((
                "sim execs / ran twice / ok not run / failed but ran".into(),
                format!(
                    "{} / {} / {} / {}",
                    faults.sim_execs,
                    faults.ran_twice,
                    faults.ok_but_not_run,
                    faults.failed_but_ran
                ),
            ));
        }
        rows.push((
            "peak RSS".into(),
            format!("{:.1} MiB", self.peak_rss_bytes as f64 / 1048576.0),
        ));
        rows.push((
            "shutdown: clean / stop failures / swept".into(),
            format!(
                "{} / {} / {}",
                self.shutdown_clean, self.stop_failures, self.swept
            ),
        ));
        rows.push(("live at end".into(), self.live_at_end.to_string()));
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (key, value) in rows {
            writeln!(f, "{key:<width$}  {value}")?;
        }
        Ok(())
    }
}
