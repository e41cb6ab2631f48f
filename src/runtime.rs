//! The runtime: the public [`Runtime`] handle and the actors behind it.
//!
//! # Architecture
//!
//! ```text
//!  Runtime::exec ──Exec──▶ TaskRegistry ──SpawnVm (first use)──▶ TaskSupervisor
//!       ▲                  HashMap<task, Addr>                    caps, worker arbiters
//!       │                        │ Exec                                 │ starts
//!       │                        ▼                                      ▼
//!       │                  VmActor (one per task) ◀──────────────────────┘
//!       │                    VmState · queue · idle timer · TTL
//!       │                        │ run::start_instance / run_command (Backoff)
//!       │                        ▼
//!       │                  Provider / Instance (local dir, MorphCloud VM)
//!       └──── oneshot reply, straight from the VmActor ─────┘
//! ```
//!
//! One exec, top to bottom:
//!
//! 1. [`Runtime::exec`] checks the task id and the request, wraps them in an
//!    [`Exec`] message with a oneshot `reply` sender, and sends it to the
//!    [`TaskRegistry`]. It then waits on the receiver: a dropped sender is
//!    [`ErrorKind::ActorDied`](crate::ErrorKind::ActorDied), a closed registry
//!    [`ErrorKind::ShuttingDown`](crate::ErrorKind::ShuttingDown).
//! 2. The registry (`registry.rs`) routes by task id. A task without an actor
//!    gets one from the [`TaskSupervisor`] (`SpawnVm`, `supervisor.rs`),
//!    which places it on a worker arbiter and hands it what all actors share
//!    (provider, slot and start semaphores, the registry's address). The
//!    registry waits for that answer before routing anything else, so a
//!    task's requests stay in order; a task whose instance ended earlier
//!    (idle, TTL, eviction) has the reason stamped on the request.
//! 3. The task's [`VmActor`] (`vm_actor.rs`) queues the request and `pump`s:
//!    with no instance it calls `begin_start`, which spawns
//!    `run::start_instance` (take a slot, then `Provider::start` under the
//!    start deadline, retried by `Backoff` (`backoff.rs`) on transient errors);
//!    `on_started` moves its `VmState` to `Ready` and pumps again.
//! 4. With a ready instance, `begin_exec` pops the request and spawns
//!    `run::run_command` (`Instance::exec` under the command's deadline,
//!    panics caught, transient failures retried).
//! 5. `on_command_done` answers the caller through `reply` — the registry is
//!    not on the way back — or, if the instance vanished before the command
//!    reached it, puts the request back at the head of the queue for a fresh
//!    instance. Then it pumps: the next command, or the idle timer.
//!
//! Retirement runs the other way: when an actor retires (idle, TTL,
//! eviction, a failed start, a backend panic) it sends `VmRetired` so the
//! registry forgets it, hands requests that reached it late back in a
//! `Reroute`, stops its instance, and stops itself once no call is in
//! flight. A graceful shutdown ([`Runtime::shutdown`]) sends every actor an
//! awaited `StopVm`, then asks the supervisor to sweep the backend for
//! leftovers, all within the grace; then the supervisor stops and joins the
//! worker arbiters, the registry publishes the [`ShutdownReport`] to every
//! caller waiting for it, and stops. Task actors and the supervisor hold the
//! registry's address only weakly, so nothing is left running.
//!
//! Modules: `messages.rs` (the messages), `registry.rs`, `supervisor.rs`,
//! `vm_actor.rs` with `vm_actor/state.rs` (the state enum) and
//! `vm_actor/run.rs` (the backend calls), `backoff.rs` (the one retry loop).

mod backoff;
mod files;
mod guard;
mod jobs;
mod messages;
mod registry;
mod streaming;
mod supervisor;
mod vm_actor;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

pub use files::TransferOutcome;
pub use jobs::{MAX_READ_BYTES, MAX_WAIT};
pub use messages::{EvictTask, Exec, ListTasks, RunCommand, ShutdownRuntime, TaskId};
pub use registry::TaskRegistry;
pub use streaming::ExecResult;
pub use supervisor::TaskSupervisor;
pub use vm_actor::VmActor;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::provider::{Captured, JobInfo, Provider};

pub use crate::provider::MAX_COMMAND_BYTES;

/// Longest task id accepted, in bytes.
pub const MAX_TASK_ID_BYTES: usize = 1024;

/// One command to run for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Shell command text (run with `bash -c`).
    pub command: String,
    /// Return as soon as the command has started; its output goes to a
    /// log file of its own.
    pub background: bool,
    /// Kill the command after this long; `None`: the configured default.
    pub timeout: Option<Duration>,
    /// Restore the working directory and exported variables the task's
    /// previous call left, and (in the foreground) save them for the next
    /// (see [`crate::shell`]); `None`: the runtime's setting
    /// ([`Config::shell`](crate::Config::shell), `HECATE_PERSISTENT_SHELL`).
    /// With `Some(false)` the call neither restores nor saves.
    pub persistent_shell: Option<bool>,
    /// The task's spec ([`crate::spec`]), given with its first command:
    /// the task's instances start from it. A later request may repeat the
    /// same spec or give none; a different one is refused.
    pub spec: Option<Arc<crate::spec::TaskSpec>>,
    /// For a background command: how long its job may run before it is
    /// killed; `None`: [`JobsConfig::max_lifetime`](crate::JobsConfig::max_lifetime),
    /// which is also the most allowed.
    pub job_lifetime: Option<Duration>,
    /// For a foreground command: if it still runs after this long, it
    /// becomes a job and the call returns its id and output so far (the
    /// job's lifetime then replaces the timeout); `None`:
    /// [`JobsConfig::yield_window`](crate::JobsConfig::yield_window). Set
    /// by the orchestrator, not the model. Such a call runs on the job path
    /// from the start, so its stderr is merged into its stdout.
    pub yield_after: Option<Duration>,
}

impl ExecRequest {
    /// A foreground command with the default timeout.
    pub fn new(command: impl Into<String>) -> Self {
        ExecRequest {
            command: command.into(),
            background: false,
            timeout: None,
            persistent_shell: None,
            spec: None,
            job_lifetime: None,
            yield_after: None,
        }
    }

    /// Turns the command into a job if it still runs after `window`
    /// (see [`yield_after`](Self::yield_after)).
    #[must_use]
    pub fn yield_after(mut self, window: Duration) -> Self {
        self.yield_after = Some(window);
        self
    }

    /// The yield window that applies to this request under `config`.
    pub fn yield_window(&self, config: &Config) -> Option<Duration> {
        if self.background {
            return None;
        }
        self.yield_after.or(config.jobs.yield_window)
    }

    /// Runs the command in the background as a job that may run `lifetime`
    /// (at most [`JobsConfig::max_lifetime`](crate::JobsConfig::max_lifetime)).
    #[must_use]
    pub fn job_lifetime(mut self, lifetime: Duration) -> Self {
        self.background = true;
        self.job_lifetime = Some(lifetime);
        self
    }

    /// Gives the task's spec with this request (see [`ExecRequest::spec`]).
    #[must_use]
    pub fn with_spec(mut self, spec: impl Into<Arc<crate::spec::TaskSpec>>) -> Self {
        self.spec = Some(spec.into());
        self
    }

    /// Turns the persistent shell on or off for this call, whatever the
    /// runtime's setting.
    #[must_use]
    pub fn persistent_shell(mut self, on: bool) -> Self {
        self.persistent_shell = Some(on);
        self
    }

    /// Whether this call restores (and saves) the shell state under
    /// `config`.
    pub fn uses_persistent_shell(&self, config: &Config) -> bool {
        self.persistent_shell.unwrap_or(config.shell.persistent)
    }

    /// Runs the command in the background.
    #[must_use]
    pub fn background(mut self) -> Self {
        self.background = true;
        self
    }

    /// Sets the command's timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Checks the request against the limits, naming what is wrong.
    pub fn validate(&self, config: &Config) -> Result<()> {
        crate::provider::check_command(&self.command)?;
        if let Some(spec) = &self.spec {
            spec.validate()?;
        }
        if self.uses_persistent_shell(config) {
            let limit = crate::shell::max_command_bytes(&config.shell);
            if self.command.len() > limit {
                return Err(Error::invalid_input(format!(
                    "command is {} bytes long; with the persistent shell the limit is {limit} \
                     bytes (write a long script to a file and run the file)",
                    self.command.len()
                )));
            }
        }
        if self.yield_after.is_some_and(|w| w.is_zero()) {
            return Err(Error::invalid_input("yield window must be greater than 0"));
        }
        if let Some(l) = self.job_lifetime {
            if l.is_zero() || l > config.jobs.max_lifetime {
                return Err(Error::invalid_input(format!(
                    "job lifetime must be between 1 s and {} s",
                    config.jobs.max_lifetime.as_secs()
                )));
            }
        }
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(Error::invalid_input("timeout must be greater than 0"));
            }
            if t > config.max_command_timeout {
                return Err(Error::invalid_input(format!(
                    "timeout of {} s exceeds the maximum of {} s",
                    t.as_secs(),
                    config.max_command_timeout.as_secs()
                )));
            }
        }
        Ok(())
    }
}

/// Checks a task id: not empty, at most [`MAX_TASK_ID_BYTES`], no control
/// characters. Any other text (`/`, `..`, non-ASCII) is fine: backends never
/// use it as a path.
pub fn validate_task_id(task_id: &str) -> Result<()> {
    if task_id.trim().is_empty() {
        return Err(Error::invalid_input("task_id is empty"));
    }
    if task_id.len() > MAX_TASK_ID_BYTES {
        return Err(Error::invalid_input(format!(
            "task_id is {} bytes long; the limit is {MAX_TASK_ID_BYTES}",
            task_id.len()
        )));
    }
    if task_id.chars().any(char::is_control) {
        return Err(Error::invalid_input(
            "task_id contains a control character (NUL, newline, ...)",
        ));
    }
    Ok(())
}

/// Why a task's command runs on a fresh instance rather than the one it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// The instance reached its TTL and was stopped.
    Ttl,
    /// The instance was idle too long and was stopped.
    Idle,
    /// The instance disappeared (stopped elsewhere, or by its backend TTL).
    Vanished,
    /// The task was evicted by the caller.
    Evicted,
    /// The task's actor failed (a backend panic or a failed start).
    Failed,
}

impl RestartReason {
    /// A sentence for the agent about what happened.
    pub fn notice(self) -> &'static str {
        match self {
            RestartReason::Ttl => "the previous instance reached its TTL and was stopped",
            RestartReason::Idle => "the previous instance was idle too long and was stopped",
            RestartReason::Vanished => "the previous instance disappeared",
            RestartReason::Evicted => "the previous instance was evicted",
            RestartReason::Failed => "the previous instance failed",
        }
    }
}

/// The result of a command that ran. A non-zero exit code is a normal
/// outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The task the command ran for.
    pub task_id: String,
    /// The instance it ran on.
    pub instance_id: String,
    /// The command's exit code (124 on timeout).
    pub exit_code: i32,
    /// Captured stdout (bounded).
    pub stdout: Captured,
    /// Captured stderr (bounded).
    pub stderr: Captured,
    /// The command was killed at its timeout.
    pub timed_out: bool,
    /// The command was killed by its instance's memory limit.
    pub oom_killed: bool,
    /// The background job started, for background commands.
    pub job: Option<JobInfo>,
    /// Set when the command ran on a fresh instance because the task's
    /// previous one ended: files and processes from before are gone.
    pub instance_restarted: Option<RestartReason>,
    /// This call started the instance it ran on.
    pub instance_started: bool,
    /// Time from arrival until the command began (queue, slot, start).
    pub queued: Duration,
    /// Part of `queued` spent waiting for an instance slot (`max_instances`).
    pub slot_wait: Duration,
    /// The command's own run time.
    pub duration: Duration,
    /// Backend attempts made for the command (1 without retries).
    pub attempts: u32,
    /// Set on the command that started its instance when the task has a
    /// spec: how applying it went (files, setup commands), and whether it
    /// was applied again on a replacement instance. Setup commands are
    /// reported here, never in this command's output.
    pub setup: Option<crate::spec::SetupReport>,
}

/// What [`Runtime::open_task`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOpened {
    /// The task's instance.
    pub instance_id: String,
    /// This call started the instance (false: the task was open already).
    pub instance_started: bool,
    /// How applying the spec went, when this call started the instance.
    pub setup: Option<crate::spec::SetupReport>,
    /// Set when the task's previous instance had ended.
    pub instance_restarted: Option<RestartReason>,
}

/// The state of a task's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// No instance yet (or the last one ended).
    NoInstance,
    /// An instance is starting.
    Starting,
    /// The instance is ready.
    Ready,
    /// The instance is being stopped.
    Stopping,
    /// The instance is stopped; the actor is going away.
    Gone,
}

/// A live task, as [`Runtime::tasks`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TaskInfo {
    /// The task id.
    pub task_id: String,
    /// Its actor's state.
    pub state: TaskState,
    /// Its instance, when it has one.
    pub instance_id: Option<String>,
    /// How long it has been idle (nothing running or queued), in
    /// milliseconds.
    #[serde(with = "duration_ms_opt")]
    #[cfg_attr(feature = "server", schema(value_type = Option<u64>))]
    pub idle_for: Option<Duration>,
    /// A command is running.
    pub running: bool,
    /// Commands waiting behind the running one.
    pub queued: usize,
}

mod duration_ms_opt {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Instances stopped.
    pub stopped: Vec<String>,
    /// What could not be stopped, and why.
    pub failed: Vec<StopFailure>,
    /// Instances found by the backend's tag sweep and stopped (half-started
    /// instances the runtime never learnt of).
    pub swept: Vec<String>,
}

impl ShutdownReport {
    /// Whether every instance was stopped.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Something a graceful shutdown could not stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopFailure {
    /// The task whose instance was not stopped; `None` when the sweep for
    /// leftover instances failed.
    pub task_id: Option<String>,
    /// The instance, when the task had one the runtime knew of.
    pub instance_id: Option<String>,
    /// Why.
    pub error: Error,
}

/// The public handle to a running Hecate runtime. Cheap to clone; every
/// clone talks to the same actors. Each request gets exactly one answer.
#[derive(Clone)]
pub struct Runtime {
    registry: Addr<TaskRegistry>,
    config: Arc<Config>,
    runtime_id: Arc<str>,
    /// The shutdown's report, once there is one.
    done: registry::ShutdownDone,
    /// Every task's background jobs.
    jobs: Arc<crate::jobs::JobTable>,
    /// The runtime's metrics ([`Runtime::metrics_text`]).
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("runtime_id", &self.runtime_id)
            .field("backend", &self.config.backend)
            .finish_non_exhaustive()
    }
}

/// Where the task actors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Spread over `config.workers` new arbiter threads (the default).
    Workers,
    /// Everything on the current arbiter: one thread, and timers that
    /// follow a paused tokio clock (for tests and single-threaded embedding).
    CurrentThread,
}

impl Runtime {
    /// Starts a runtime with the backend the configuration names. Must be
    /// called inside a running actix `System`. The default backend
    /// ([`BackendKind::Auto`](crate::BackendKind::Auto)) is resolved here
    /// ([`provider::resolve_backend`](crate::provider::resolve_backend)), so
    /// [`Runtime::config`] names the backend in use.
    pub fn start(mut config: Config) -> Result<Runtime> {
        let (kind, warning) = crate::provider::resolve_backend(&config);
        if let Some(warning) = warning {
            log::warn!("{warning}");
        }
        config.backend = kind;
        let provider = crate::provider::from_config(&config)?;
        Self::start_with(config, provider, Placement::Workers)
    }

    /// Starts a runtime over the given provider.
    pub fn start_with(
        config: Config,
        provider: Arc<dyn Provider>,
        placement: Placement,
    ) -> Result<Runtime> {
        config.validate()?;
        if actix::System::try_current().is_none() {
            return Err(Error::internal(
                "Runtime::start must be called inside a running actix System \
                 (for example from #[actix_rt::main] or actix_rt::System::new().block_on)",
            ));
        }
        let config = Arc::new(config);
        let runtime_id: Arc<str> = new_runtime_id().into();
        let metrics = Arc::new(Metrics::new());
        // The registry's address exists before the registry runs, so the
        // supervisor can hand it to every task actor once, shared.
        // The supervisor and the task actors hold it weakly: only the
        // `Runtime` handles keep the registry alive, and only the registry
        // the supervisor, so no address cycle outlives a shutdown.
        let registry_ctx = Context::<TaskRegistry>::new();
        let registry = registry_ctx.address();
        let jobs = Arc::new(crate::jobs::JobTable::default());
        let supervisor = TaskSupervisor::new(
            config.clone(),
            provider,
            runtime_id.clone(),
            placement,
            registry.downgrade(),
            jobs.clone(),
            metrics.clone(),
        )
        .start();
        let (done_tx, done) = tokio::sync::watch::channel(None);
        registry_ctx.run(TaskRegistry::new(
            config.clone(),
            supervisor,
            done_tx,
            metrics.clone(),
        ));
        log::info!(
            "runtime={runtime_id} started (backend {}, {placement:?})",
            config.backend.as_str()
        );
        Ok(Runtime {
            registry,
            config,
            runtime_id,
            done,
            jobs,
            metrics,
        })
    }

    /// Runs a command for a task, starting the task's instance if needed.
    /// Commands of one task run one at a time in arrival order.
    pub async fn exec(
        &self,
        task_id: impl Into<String>,
        request: ExecRequest,
    ) -> Result<ExecOutcome> {
        let received = actix::clock::Instant::now();
        let result = self.exec_inner(task_id.into(), request).await;
        self.metrics.exec_done(&result, received.elapsed());
        result
    }

    async fn exec_inner(&self, task_id: String, request: ExecRequest) -> Result<ExecOutcome> {
        validate_task_id(&task_id)?;
        request.validate(&self.config)?;
        let (tx, rx) = oneshot::channel();
        let msg = Exec::new(task_id, request, tx);
        if let Err(err) = self.registry.try_send(msg) {
            match err {
                SendError::Full(msg) => self.registry.do_send(msg),
                SendError::Closed(_) => return Err(Error::shutting_down()),
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::actor_died("the command")))
    }

    /// Opens a task with a spec ([`crate::spec`]): starts its instance,
    /// places the spec's files and runs its setup, and answers once that is
    /// done. Opening a task that is open with the same spec answers at once;
    /// with a different spec, or after it ran without one, is refused
    /// (`invalid_input`). A failed setup is a
    /// [`SetupFailed`](crate::ErrorKind::SetupFailed) error, and so is every
    /// later command of the task until it is evicted.
    pub async fn open_task(
        &self,
        task_id: impl Into<String>,
        spec: crate::spec::TaskSpec,
    ) -> Result<TaskOpened> {
        let task_id: String = task_id.into();
        validate_task_id(&task_id)?;
        spec.validate()?;
        // The command text is never run: an opening request only starts
        // the instance.
        let request = ExecRequest::new(String::new()).with_spec(spec);
        let (tx, rx) = oneshot::channel();
        let msg = Exec::opening(task_id, request, tx);
        if let Err(err) = self.registry.try_send(msg) {
            match err {
                SendError::Full(msg) => self.registry.do_send(msg),
                SendError::Closed(_) => return Err(Error::shutting_down()),
            }
        }
        let outcome = rx
            .await
            .unwrap_or_else(|_| Err(Error::actor_died("opening the task")))?;
        Ok(TaskOpened {
            instance_id: outcome.instance_id,
            instance_started: outcome.instance_started,
            setup: outcome.setup,
            instance_restarted: outcome.instance_restarted,
        })
    }

    /// Stops a task's instance and forgets the task (and its spec, and a
    /// failed setup's error). Returns whether the task was live.
    pub async fn evict(&self, task_id: impl Into<String>) -> Result<bool> {
        self.registry
            .send(EvictTask {
                task_id: task_id.into(),
            })
            .await
            .map_err(mailbox_error)?
    }

    /// The live tasks.
    pub async fn tasks(&self) -> Result<Vec<TaskInfo>> {
        self.registry.send(ListTasks).await.map_err(mailbox_error)
    }

    /// Stops taking work, stops every instance within `grace` (running
    /// commands get the first part of it; see [`ShutdownRuntime`]), sweeps
    /// the backend for leftovers, stops the runtime's actors and worker
    /// threads, and reports what could not be stopped in time.
    ///
    /// Calls while a shutdown is under way, or after it, wait for it and
    /// answer with the same report.
    pub async fn shutdown(&self, grace: Duration) -> Result<ShutdownReport> {
        match self.registry.send(ShutdownRuntime { grace }).await {
            Ok(report) => Ok(report),
            // The registry stopped: the shutdown is over (or the actix
            // System is going away, and there is no report).
            Err(err) => registry::wait_for_report(self.done.clone())
                .await
                .ok_or_else(|| mailbox_error(err)),
        }
    }

    /// The registry's address, for orchestrators that speak actix messages
    /// ([`RunCommand`], [`EvictTask`], [`ListTasks`], [`ShutdownRuntime`]).
    pub fn registry(&self) -> Addr<TaskRegistry> {
        self.registry.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This runtime's id, attached to every instance as `hecate_runtime_id`.
    pub fn runtime_id(&self) -> &str {
        &self.runtime_id
    }

    /// The runtime's metrics (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The runtime's metrics in the Prometheus text format (version 0.0.4;
    /// serve it with [`metrics::TEXT_CONTENT_TYPE`](crate::metrics::TEXT_CONTENT_TYPE)).
    /// No label carries a task id.
    pub fn metrics_text(&self) -> String {
        self.metrics.text()
    }
}

/// The registry is gone only after the runtime shut down.
fn mailbox_error(_: MailboxError) -> Error {
    Error::shutting_down()
}

/// A new id for this runtime: unique enough across processes and restarts.
fn new_runtime_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "hr-{secs:x}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// Mailbox capacity of the registry and task actors: they queue requests
/// themselves, so the mailbox is only a hand-off and should not push back.
/// (actix's own maximum is `usize::MAX >> 1`; this stays well below it.)
pub(crate) const MAILBOX_CAPACITY: usize = 1 << 24;
