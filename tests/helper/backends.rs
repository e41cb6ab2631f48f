//! One runtime per backend for the scenarios that run on every backend:
//! the plain local backend, the sandbox (where this machine can make one)
//! and the MorphCloud simulator running real bash. Each test file adds
//! what its scenarios need through a trait of its own on [`Backend`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use hecate::provider::morph::MorphProvider;
use hecate::sim::{SimConfig, SimServer};
use hecate::{ApiKey, BackendKind, Config, ExecOutcome, ExecRequest, Placement, Runtime};

use super::server::start_sim;

/// Which backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The plain local backend, by name.
    Local,
    /// The namespace sandbox, by name.
    Sandbox,
    /// MorphCloud against the project's simulator.
    Sim,
}

/// A runtime on one backend, and what to stop after it.
pub struct Backend {
    /// `local`, `sandbox`, `sim` (or the name the caller gave).
    pub name: &'static str,
    /// Which backend.
    pub kind: Kind,
    /// The runtime.
    pub rt: Runtime,
    /// The simulator, on `Sim`.
    pub sim: Option<SimServer>,
    _dir: tempfile::TempDir,
}

impl Backend {
    /// The backend `kind` with the tests' settings (two workers, a 300 ms
    /// kill grace, a 5 ms poll and boot on the simulator), then `f`; `None`
    /// (with a note) where no sandbox can be made here.
    pub async fn start(kind: Kind, f: &dyn Fn(&mut Config)) -> Option<Backend> {
        Backend::start_with(kind, |_| {}, f).await
    }

    /// [`Backend::start`], with the simulator's settings changed by `sim`.
    pub async fn start_with(
        kind: Kind,
        sim: impl FnOnce(&mut SimConfig),
        f: &dyn Fn(&mut Config),
    ) -> Option<Backend> {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let (name, mut config, server) = match kind {
            Kind::Local => ("local", super::local_config(root), None),
            Kind::Sandbox => {
                if let Err(why) = hecate::launcher::sandbox::probe() {
                    eprintln!("skipping the sandbox: {why}");
                    return None;
                }
                ("sandbox", super::sandbox_config(root), None)
            }
            Kind::Sim => {
                let mut sim_config = SimConfig {
                    boot_time: Duration::from_millis(5),
                    root: dir.path().join("sim"),
                    ..SimConfig::default()
                };
                sim(&mut sim_config);
                let server = start_sim(sim_config).await;
                let mut c = Config::default()
                    .with_backend(BackendKind::Morph)
                    .with_morph(server.base_url(), ApiKey::new(server.api_key()));
                c.morph.poll_interval = Duration::from_millis(5);
                c.morph.kill_grace = Duration::from_millis(300);
                ("sim", c, Some(server))
            }
        };
        config = config.with_workers(2);
        config.local.kill_grace = Duration::from_millis(300);
        f(&mut config);
        let rt = match kind {
            Kind::Sim => {
                let provider = Arc::new(MorphProvider::new(&config).expect("valid morph config"));
                Runtime::start_with(config, provider, Placement::Workers)
            }
            Kind::Local | Kind::Sandbox => Runtime::start(config),
        }
        .expect("runtime starts");
        Some(Backend {
            name,
            kind,
            rt,
            sim: server,
            _dir: dir,
        })
    }

    /// The plain local backend.
    pub async fn local(f: &dyn Fn(&mut Config)) -> Backend {
        Backend::start(Kind::Local, f)
            .await
            .expect("the local backend always starts")
    }

    /// The sandbox, or `None` where none can be made here.
    pub async fn sandbox(f: &dyn Fn(&mut Config)) -> Option<Backend> {
        Backend::start(Kind::Sandbox, f).await
    }

    /// The simulator.
    pub async fn sim(f: &dyn Fn(&mut Config)) -> Backend {
        Backend::start(Kind::Sim, f)
            .await
            .expect("the simulator always starts")
    }

    /// A scratch path on this machine, removed with the backend.
    pub fn scratch_path(&self, name: &str) -> std::path::PathBuf {
        self._dir.path().join(name)
    }

    /// Renames it (for a second simulator flavour).
    pub fn named(mut self, name: &'static str) -> Backend {
        self.name = name;
        self
    }

    /// Shuts the runtime down (checking nothing was left) and the
    /// simulator after it.
    pub async fn stop(self) {
        let report = self
            .rt
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        assert!(report.is_clean(), "{}: {report:?}", self.name);
        if let Some(sim) = self.sim {
            sim.stop().await;
        }
    }

    /// Runs `req` on `task`; the call must be answered with an outcome.
    pub async fn run(&self, task: &str, req: ExecRequest) -> ExecOutcome {
        match self.rt.exec(task, req).await {
            Ok(out) => out,
            Err(err) => panic!("{}: the call failed: {err}", self.name),
        }
    }

    /// Runs `command` and returns its stdout, checking it exited 0.
    pub async fn out(&self, task: &str, command: &str) -> String {
        let out = self.run(task, ExecRequest::new(command)).await;
        assert_eq!(out.exit_code, 0, "{}: {command:?}: {out:?}", self.name);
        out.stdout.to_text()
    }

    /// Waits (bounded) until `task` has no live actor.
    pub async fn wait_gone(&self, task: &str) {
        let start = Instant::now();
        while self
            .rt
            .tasks()
            .await
            .expect("tasks")
            .iter()
            .any(|t| t.task_id == task)
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}: task {task} still live",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The backends to run on: local, the sandbox where it can be made, the
/// simulator; each configured by `f`.
pub async fn backends(f: &dyn Fn(&mut Config)) -> Vec<Backend> {
    let mut all = vec![Backend::local(f).await];
    all.extend(Backend::sandbox(f).await);
    all.push(Backend::sim(f).await);
    all
}

/// Runs `scenario` on every backend of [`backends`], one after the other,
/// each stopped (and checked clean) after it.
pub async fn each_backend<F>(f: impl Fn(&mut Config), scenario: F)
where
    F: AsyncFn(&Backend),
{
    for backend in backends(&f).await {
        scenario(&backend).await;
        backend.stop().await;
    }
}
