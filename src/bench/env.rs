//! Where a run's instances live ([`Env`]): the local backend under a
//! private root, an in-process simulator, an external MorphCloud-compatible
//! server, or the no-op backend; the configuration every scenario starts
//! from; and counting what is left live at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::args::Plan;
use super::{BenchArgs, NoopProvider};
use crate::config::{ApiKey, BackendKind, Config};
use crate::error::{Error, Result};
use crate::provider::morph::MorphProvider;
use crate::provider::{local::LocalProvider, Provider};
use crate::runtime::{Placement, Runtime};
use crate::sim::{ExecMode, FaultConfig, SimConfig, SimServer};

/// Where the instances of a run live.
pub(super) enum Env {
    Local {
        /// The private instance root, removed at the end.
        root: PathBuf,
        /// The `sandbox` backend rather than the plain `local`.
        sandbox: bool,
    },
    Sim(SimServer),
    External,
    Noop(NoopProvider),
}

impl Env {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Env::Local { sandbox: false, .. } => "local",
            Env::Local { sandbox: true, .. } => "sandbox",
            Env::Sim(_) => "morph-sim",
            Env::External => "morph-external",
            Env::Noop(_) => "noop",
        }
    }

    /// The local backend (`sandbox` or plain) under a fresh private root.
    pub(super) fn local(config: &mut Config, sandbox: bool) -> Env {
        let root = std::env::temp_dir().join(format!(
            "hecate-bench-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        config.backend = if sandbox {
            BackendKind::Sandbox
        } else {
            BackendKind::Local
        };
        config.local.root = root.clone();
        Env::Local { root, sandbox }
    }

    /// An in-process simulator, and the configuration pointing at it.
    pub(super) async fn sim(args: &BenchArgs, plan: &Plan, config: &mut Config) -> Result<Env> {
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

    pub(super) fn provider(&self, config: &Config) -> Result<Arc<dyn Provider>> {
        Ok(match self {
            Env::Local { sandbox: false, .. } => Arc::new(LocalProvider::new(config)?),
            Env::Local { sandbox: true, .. } => Arc::new(LocalProvider::new_sandbox(config)?),
            Env::Sim(_) | Env::External => Arc::new(MorphProvider::new(config)?),
            Env::Noop(p) => Arc::new(p.clone()),
        })
    }

    /// Counts the instances still live after the runtime's shutdown, and
    /// cleans up what the run created.
    pub(super) async fn live_at_end(self, config: &Config, runtime_id: &str) -> Result<u64> {
        match self {
            Env::Local { root, .. } => {
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
pub(super) fn base_config(args: &BenchArgs, plan: &Plan) -> Result<Config> {
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
    if args.launcher.is_some() {
        config.launcher.program = args.launcher.clone();
    }
    config.morph.poll_interval = match args.poll_ms {
        Some(ms) => Duration::from_millis(ms.max(1)),
        None if plan.boot.is_zero() => Duration::from_millis(50),
        None => config.morph.poll_interval,
    };
    Ok(config)
}

/// A runtime over `env`'s backend, spread over worker arbiters.
pub(super) fn start_runtime(env: &Env, config: &Config) -> Result<Runtime> {
    Runtime::start_with(config.clone(), env.provider(config)?, Placement::Workers)
}
