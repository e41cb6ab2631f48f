//! What a run is asked to do: the scenario ([`Scenario`]), the arguments
//! of `hecate bench` ([`BenchArgs`]), and the settings they resolve to after
//! each scenario's defaults.

use std::time::Duration;

use crate::config::BackendKind;
use crate::error::{Error, Result};

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
    pub(super) fn as_str(self) -> &'static str {
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
    /// a boot time, else the configuration's 100).
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// Eviction: the idle lifetime, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub idle_ms: u64,
    /// Worker arbiters of the runtime (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// The local backend's launcher binary (default: as
    /// `LauncherConfig::resolve_program` finds it; the `hecate` binary is
    /// its own).
    #[arg(long, value_name = "PATH")]
    pub launcher: Option<std::path::PathBuf>,
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
            launcher: None,
            json: false,
            no_progress: true,
        }
    }
}

/// The settings a run uses, after defaults.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) tasks: usize,
    pub(super) commands: usize,
    pub(super) concurrency: usize,
    pub(super) boot: Duration,
    pub(super) fault_rate: f64,
}

impl Plan {
    pub(super) fn resolve(args: &BenchArgs) -> Result<Plan> {
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
