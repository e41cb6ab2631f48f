//! Helpers shared by the integration tests: a scripted backend whose
//! behaviour each command chooses, and runtime set-up on a paused clock.
#![allow(dead_code)]

#[cfg(feature = "sim")]
pub mod backends;
pub mod instances;
pub mod procs;
#[cfg(feature = "sim")]
pub mod server;

pub use procs::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hecate::provider::{BoxFuture, Captured, ExecOutput, ExecSpec, Instance, Provider, StartSpec};
use hecate::{Config, Error, ErrorKind, Placement, Runtime};

/// What the scripted backend saw, for assertions.
#[derive(Default)]
pub struct Journal {
    pub starts: AtomicU64,
    pub stops: AtomicU64,
    pub live: AtomicU64,
    /// (task id, command) in the order commands began.
    pub ran: Mutex<Vec<(String, String)>>,
    /// Start failures still to inject, front first.
    pub start_failures: Mutex<Vec<Error>>,
    /// Per-key failure counters for `fail:` commands.
    pub fail_counts: Mutex<HashMap<String, u32>>,
    /// How long a start's create request takes; the start holds its start
    /// slot meanwhile.
    pub create_delay: Mutex<Duration>,
    /// How long an instance takes to become ready once created (the start
    /// slot is released by then).
    pub start_delay: Mutex<Duration>,
    pub start_hangs: Mutex<bool>,
    /// Starts in their readiness wait, and the most there were at once.
    pub booting: AtomicU64,
    pub max_booting: AtomicU64,
    /// `Instance::stop` never answers.
    pub stop_hangs: Mutex<bool>,
    /// `Instance::stop` always fails transiently.
    pub stop_fails_transient: Mutex<bool>,
    /// `Provider::sweep_orphans` never answers / panics.
    pub sweep_hangs: Mutex<bool>,
    pub sweep_panics: Mutex<bool>,
    pub sweeps: AtomicU64,
    pub start_panics: Mutex<bool>,
    pub metadata: Mutex<Vec<std::collections::BTreeMap<String, String>>>,
}

impl Journal {
    pub fn ran(&self) -> Vec<(String, String)> {
        self.ran.lock().unwrap().clone()
    }
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }
    pub fn stops(&self) -> u64 {
        self.stops.load(Ordering::SeqCst)
    }
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::SeqCst)
    }
    pub fn runs_of(&self, command: &str) -> usize {
        self.ran().iter().filter(|(_, c)| c == command).count()
    }
}

/// A backend driven by the command text:
/// `sleep:MS` sleeps (tokio clock) then prints `slept`; `echo:TEXT` prints
/// TEXT; `exit:N` exits N; `panic` panics; `hang` never answers;
/// `fail:KIND:N:KEY` fails N times with KIND (transient, indeterminate,
/// rejected, gone) then succeeds; anything else prints itself.
pub struct Scripted {
    pub journal: Arc<Journal>,
    next: AtomicU64,
}

impl Scripted {
    pub fn new() -> (Arc<Scripted>, Arc<Journal>) {
        let journal = Arc::new(Journal::default());
        (
            Arc::new(Scripted {
                journal: journal.clone(),
                next: AtomicU64::new(0),
            }),
            journal,
        )
    }
}

impl Provider for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<hecate::Result<Box<dyn Instance>>> {
        let journal = self.journal.clone();
        let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            journal.metadata.lock().unwrap().push(spec.metadata.clone());
            let create = *journal.create_delay.lock().unwrap();
            if !create.is_zero() {
                tokio::time::sleep(create).await;
            }
            spec.create_slot.release();
            let delay = *journal.start_delay.lock().unwrap();
            if !delay.is_zero() {
                let now = journal.booting.fetch_add(1, Ordering::SeqCst) + 1;
                journal.max_booting.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                journal.booting.fetch_sub(1, Ordering::SeqCst);
            }
            if *journal.start_hangs.lock().unwrap() {
                std::future::pending::<()>().await;
            }
            if *journal.start_panics.lock().unwrap() {
                panic!("scripted start panic");
            }
            let failure = {
                let mut f = journal.start_failures.lock().unwrap();
                if f.is_empty() {
                    None
                } else {
                    Some(f.remove(0))
                }
            };
            if let Some(err) = failure {
                return Err(err);
            }
            journal.starts.fetch_add(1, Ordering::SeqCst);
            journal.live.fetch_add(1, Ordering::SeqCst);
            let instance: Box<dyn Instance> = Box::new(ScriptedInstance {
                id: format!("scripted-{n}"),
                task_id: spec.task_id,
                journal,
                stopped: Arc::new(Mutex::new(false)),
                stop_signal: Arc::new(tokio::sync::Notify::new()),
            });
            Ok(instance)
        })
    }

    fn sweep_orphans(&self, _runtime_id: &str) -> BoxFuture<hecate::Result<Vec<String>>> {
        let journal = self.journal.clone();
        Box::pin(async move {
            journal.sweeps.fetch_add(1, Ordering::SeqCst);
            if *journal.sweep_hangs.lock().unwrap() {
                std::future::pending::<()>().await;
            }
            if *journal.sweep_panics.lock().unwrap() {
                panic!("scripted sweep panic");
            }
            Ok(Vec::new())
        })
    }
}

struct ScriptedInstance {
    id: String,
    task_id: String,
    journal: Arc<Journal>,
    stopped: Arc<Mutex<bool>>,
    stop_signal: Arc<tokio::sync::Notify>,
}

fn kind_of(name: &str) -> ErrorKind {
    match name {
        "transient" => ErrorKind::Transient,
        "indeterminate" => ErrorKind::Indeterminate,
        "rejected" => ErrorKind::Rejected,
        "gone" => ErrorKind::InstanceGone,
        _ => ErrorKind::Internal,
    }
}

impl Instance for ScriptedInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn exec(&self, spec: ExecSpec) -> BoxFuture<hecate::Result<ExecOutput>> {
        let journal = self.journal.clone();
        let task_id = self.task_id.clone();
        let stopped = self.stopped.clone();
        let stop_signal = self.stop_signal.clone();
        Box::pin(async move {
            let cmd = spec.command.clone();
            if *stopped.lock().unwrap() {
                return Err(Error::new(
                    ErrorKind::InstanceGone,
                    "instance not found (404)",
                ));
            }
            if let Some(rest) = cmd.strip_prefix("fail:") {
                let mut parts = rest.splitn(3, ':');
                let kind = parts.next().unwrap_or("");
                let times: u32 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
                let key = parts.next().unwrap_or("").to_string();
                let mut counts = journal.fail_counts.lock().unwrap();
                let seen = counts.entry(key).or_insert(0);
                if *seen < times {
                    *seen += 1;
                    // Indeterminate failures count as a run: the command may
                    // have reached the instance.
                    if kind == "indeterminate" {
                        journal
                            .ran
                            .lock()
                            .unwrap()
                            .push((task_id.clone(), cmd.clone()));
                    }
                    return Err(Error::new(kind_of(kind), format!("scripted {kind}")));
                }
            }
            journal.ran.lock().unwrap().push((task_id, cmd.clone()));
            let mut out = ExecOutput::default();
            if let Some(ms) = cmd.strip_prefix("sleep:") {
                let ms: u64 = ms.parse().unwrap_or(0);
                let wanted = Duration::from_millis(ms);
                if !spec.background && wanted > spec.timeout {
                    tokio::time::sleep(spec.timeout).await;
                    out.exit_code = 124;
                    out.timed_out = true;
                    return Ok(out);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wanted) => {}
                    _ = stop_signal.notified() => {
                        // Killed with the instance.
                        out.exit_code = 137;
                        return Ok(out);
                    }
                }
                out.stdout = Captured::from_text("slept", spec.capture_bytes);
            } else if let Some(text) = cmd.strip_prefix("echo:") {
                out.stdout = Captured::from_text(text, spec.capture_bytes);
            } else if let Some(n) = cmd.strip_prefix("exit:") {
                out.exit_code = n.parse().unwrap_or(1);
            } else if cmd == "panic" {
                panic!("scripted exec panic");
            } else if cmd == "hang" {
                std::future::pending::<()>().await;
            } else {
                out.stdout = Captured::from_text(&cmd, spec.capture_bytes);
            }
            Ok(out)
        })
    }

    fn stop(&self) -> BoxFuture<hecate::Result<()>> {
        let journal = self.journal.clone();
        let stopped = self.stopped.clone();
        self.stop_signal.notify_waiters();
        let hangs = *self.journal.stop_hangs.lock().unwrap();
        let fails = *self.journal.stop_fails_transient.lock().unwrap();
        Box::pin(async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            if fails {
                return Err(Error::transient("scripted stop: 503"));
            }
            let mut s = stopped.lock().unwrap();
            if !*s {
                *s = true;
                journal.stops.fetch_add(1, Ordering::SeqCst);
                journal.live.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(())
        })
    }
}

/// A config for scripted tests: small, explicit numbers; the local
/// backend's launcher is the `hecate` binary built with the tests (the test
/// binary itself cannot be one).
pub fn test_config() -> Config {
    Config {
        idle_lifetime: Duration::from_secs(300),
        vm_ttl: Duration::from_secs(1200),
        command_timeout: Duration::from_secs(120),
        backend: hecate::BackendKind::Local,
        launcher: launcher_config(),
        ..Config::default()
    }
}

/// The launcher settings every test that starts local instances uses: the
/// real `hecate` binary, cgroups where the machine allows.
pub fn launcher_config() -> hecate::launcher::LauncherConfig {
    hecate::launcher::LauncherConfig {
        program: Some(env!("CARGO_BIN_EXE_hecate").into()),
        ..hecate::launcher::LauncherConfig::default()
    }
}

/// A default config on the plain local backend (by name) with root
/// `root` and the test launcher.
pub fn local_config(root: impl Into<std::path::PathBuf>) -> Config {
    Config {
        backend: hecate::BackendKind::Local,
        launcher: launcher_config(),
        ..Config::default()
    }
    .with_local_root(root)
}

/// A default config on the sandbox backend (by name) with root `root`
/// and the test launcher.
pub fn sandbox_config(root: impl Into<std::path::PathBuf>) -> Config {
    Config {
        backend: hecate::BackendKind::Sandbox,
        launcher: launcher_config(),
        ..Config::default()
    }
    .with_local_root(root)
}

/// A runtime over the scripted backend on the current thread, so a paused
/// tokio clock drives every timer.
pub fn scripted_runtime(config: Config) -> (Runtime, Arc<Journal>) {
    let (provider, journal) = Scripted::new();
    let rt = Runtime::start_with(config, provider, Placement::CurrentThread).expect("start");
    (rt, journal)
}

/// Moves the paused clock by `d`, then lets every actor of `rt` catch up
/// with what fell due (see [`settle`]).
pub async fn advance(rt: &Runtime, d: Duration) {
    tokio::time::advance(d).await;
    settle(rt).await;
}

/// A round trip through every actor of `rt` (`Runtime::tasks`): the
/// registry asks each live task actor for its info and answers when all
/// have. Mailboxes are FIFO, and an actor handles its mailbox and its timers
/// that are due in the same turn, so by the time this returns every message
/// sent before it and every timer already due has been handled, together
/// with what that did at once (a retirement, a scripted stop). Does not
/// move the clock.
pub async fn settle(rt: &Runtime) {
    rt.tasks().await.expect("the runtime answers while it runs");
}

/// Polls `cond` on the real clock until it holds or `limit` passes; returns
/// whether it held. (Polling an outside condition such as /proc, not
/// synchronising with the code under test.)
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs one `#[ignore]`d test of this binary in a child process with extra
/// environment variables, and returns its combined output after checking
/// that it passed and printed `marker`. The test's path is given relative
/// to `tests.rs` (`reliability::load_probe`).
pub fn run_probe(test: &str, env: &[(&str, &str)], marker: &str) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run probe");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "probe {test} failed:\n{text}");
    assert!(text.contains(marker), "probe {test} did not run:\n{text}");
    text
}
