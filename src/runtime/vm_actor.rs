//! [`VmActor`]: one per task. Owns the task's instance lifecycle (a state
//! enum), its FIFO command queue, its idle timer and TTL deadline, and the
//! retry of transient backend failures.
//!
//! One command runs at a time, in arrival order. The idle timer is armed
//! only when nothing runs or waits. Every backend call runs under a
//! deadline and with panics caught, so a misbehaving backend costs this task
//! one error and a fresh actor, never another task anything.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::clock::Instant;
use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::messages::{Exec, GetInfo, Reroute, StopCause, StopResult, StopVm, TaskId, VmRetired};
use super::{ExecOutcome, RestartReason, TaskInfo, TaskRegistry, TaskState};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{tags, ExecOutput, ExecSpec, Instance, Provider, StartSpec};

/// How often one request may be moved to a fresh instance because its
/// instance vanished under it before the command reached it.
const MAX_VANISH_RESTARTS: u32 = 2;

/// What every task actor shares, owned by the supervisor.
pub(crate) struct Shared {
    pub config: Arc<Config>,
    pub provider: Arc<dyn Provider>,
    pub runtime_id: Arc<str>,
    /// One permit per live instance (`max_instances`); FIFO.
    pub slots: Arc<Semaphore>,
    /// One permit per start in flight (`max_concurrent_starts`); FIFO.
    pub starts: Arc<Semaphore>,
    /// Where task actors report. Shared rather than one clone per actor:
    /// each actix address clone costs two allocations.
    pub registry: Addr<TaskRegistry>,
}

/// A ready instance and the slot it holds.
struct Live {
    instance: Rc<dyn Instance>,
    _slot: OwnedSemaphorePermit,
}

impl Live {
    fn id(&self) -> &str {
        self.instance.id()
    }
}

/// The instance lifecycle: no instance → starting → ready → stopping → gone.
enum VmState {
    NoInstance,
    Starting,
    Ready(Live),
    Stopping { instance_id: Option<String> },
    Gone { instance_id: Option<String> },
}

/// How the last start went, reported with the command that caused it.
#[derive(Clone, Copy)]
struct StartReport {
    slot_wait: Duration,
}

/// The actor that owns one task's instance and command queue.
pub struct VmActor {
    task_id: TaskId,
    generation: u64,
    shared: Arc<Shared>,
    state: VmState,
    queue: VecDeque<Exec>,
    /// A backend call (start or exec) is in flight.
    busy: bool,
    /// Since when nothing ran or waited.
    idle_since: Instant,
    /// The one timer, armed for `timer_at`: the earliest of the TTL and
    /// (when idle) the idle deadline. It may fire early; it then re-arms.
    timer: Option<(SpawnHandle, Instant)>,
    /// When the instance reaches its TTL.
    ttl_deadline: Option<Instant>,
    /// Retire as soon as the running command finishes.
    retire_when_idle: Option<RestartReason>,
    /// A graceful shutdown asked us to stop once the running command ends.
    shutdown_requested: bool,
    /// Why this actor retired (for requests that reach it late).
    retired: Option<RestartReason>,
    /// The start that the next command reports.
    start_report: Option<StartReport>,
    /// Who waits for the instance to stop, and how it went; boxed because
    /// an idle actor never needs it.
    stopping: Option<Box<StopState>>,
}

/// The stop of a task's instance, as its waiters see it.
#[derive(Default)]
struct StopState {
    /// `None` until the instance is stopped (or could not be).
    result: Option<Result<()>>,
    waiters: Vec<oneshot::Sender<StopResult>>,
}

impl VmActor {
    pub(crate) fn new(task_id: TaskId, generation: u64, shared: Arc<Shared>) -> Self {
        VmActor {
            task_id,
            generation,
            shared,
            state: VmState::NoInstance,
            queue: VecDeque::new(),
            busy: false,
            idle_since: Instant::now(),
            timer: None,
            ttl_deadline: None,
            retire_when_idle: None,
            shutdown_requested: false,
            retired: None,
            start_report: None,
            stopping: None,
        }
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    fn instance_id(&self) -> Option<String> {
        match &self.state {
            VmState::Ready(live) => Some(live.id().to_string()),
            VmState::Stopping { instance_id } | VmState::Gone { instance_id } => {
                instance_id.clone()
            }
            VmState::NoInstance | VmState::Starting => None,
        }
    }

    fn stop_result(&self) -> Result<()> {
        match self.stopping.as_ref().and_then(|s| s.result.as_ref()) {
            Some(Err(err)) => Err(err.clone()),
            _ => Ok(()),
        }
    }

    fn stop_state(&mut self) -> &mut StopState {
        self.stopping.get_or_insert_with(Box::default)
    }

    fn is_retiring(&self) -> bool {
        matches!(self.state, VmState::Stopping { .. } | VmState::Gone { .. })
    }

    /// Moves the queue forward: starts the instance or the next command, or
    /// arms the idle timer when there is nothing to do.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.is_retiring() {
            return;
        }
        if self.shutdown_requested {
            self.retire(None, ctx);
            return;
        }
        if let Some(reason) = self.retire_when_idle.take() {
            self.retire(Some(reason), ctx);
            return;
        }
        // Requests whose caller has gone away are dropped unrun.
        while self
            .queue
            .front()
            .is_some_and(|exec| exec.reply.is_closed())
        {
            self.queue.pop_front();
        }
        if self.queue.is_empty() {
            self.idle_since = Instant::now();
            self.ensure_timer(ctx);
            return;
        }
        match self.state {
            VmState::NoInstance => self.begin_start(ctx),
            VmState::Ready(_) => self.begin_exec(ctx),
            _ => {}
        }
    }

    /// Makes sure the timer fires no later than the next deadline that
    /// applies: the TTL, and the idle deadline when nothing runs or waits.
    /// A timer already set earlier is kept (it re-arms when it fires), so a
    /// busy task does not churn timers.
    fn ensure_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(ttl) = self.ttl_deadline else {
            return;
        };
        let idle = !self.busy && self.queue.is_empty();
        let due = if idle {
            ttl.min(self.idle_since + self.config().idle_lifetime)
        } else {
            ttl
        };
        if let Some((handle, at)) = self.timer {
            if at <= due {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(due.saturating_duration_since(Instant::now()), |act, ctx| {
            act.timer = None;
            act.on_timer(ctx);
        });
        self.timer = Some((handle, due));
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.ttl_deadline.is_some_and(|ttl| now >= ttl) {
            self.on_ttl(ctx);
            return;
        }
        let lifetime = self.config().idle_lifetime;
        if !self.busy && self.queue.is_empty() && now >= self.idle_since + lifetime {
            log::info!(
                "task={} vm={} idle for {lifetime:?}: stopping",
                self.task_id,
                self.instance_id().unwrap_or_default()
            );
            self.retire(Some(RestartReason::Idle), ctx);
            return;
        }
        self.ensure_timer(ctx);
    }

    fn begin_start(&mut self, ctx: &mut Context<Self>) {
        self.state = VmState::Starting;
        self.busy = true;
        let shared = self.shared.clone();
        let task_id = self.task_id.clone();
        let fut = async move { start_instance(&shared, &task_id).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok((live, report)) => {
                    log::info!("task={} vm={} ready", act.task_id, live.id());
                    act.state = VmState::Ready(live);
                    act.start_report = Some(report);
                    act.ttl_deadline = Some(Instant::now() + act.config().vm_ttl);
                    act.ensure_timer(ctx);
                    act.pump(ctx);
                }
                Err(err) => {
                    log::warn!("task={} start failed: {err}", act.task_id);
                    act.state = VmState::NoInstance;
                    for exec in act.queue.drain(..) {
                        let _ = exec.reply.send(Err(err.clone()));
                    }
                    act.retire(None, ctx);
                }
            }
        }));
    }

    fn begin_exec(&mut self, ctx: &mut Context<Self>) {
        let VmState::Ready(live) = &self.state else {
            return;
        };
        let Some(exec) = self.queue.pop_front() else {
            return;
        };
        self.busy = true;
        let instance = live.instance.clone();
        let instance_id = live.id().to_string();
        let config = self.shared.config.clone();
        let spec = ExecSpec {
            command: exec.request.command.clone(),
            background: exec.request.background,
            timeout: exec.request.timeout.unwrap_or(config.command_timeout),
            capture_bytes: config.capture_bytes,
        };
        let started = Instant::now();
        let queued = started.saturating_duration_since(exec.received);
        let start_report = self.start_report.take();
        log::debug!(
            "task={} vm={instance_id} exec (queued {queued:?}, background {})",
            self.task_id,
            spec.background
        );
        let fut = async move { run_command(&config, instance, spec).await };
        ctx.spawn(fut.into_actor(self).map(move |run, act, ctx| {
            act.busy = false;
            let duration = started.elapsed();
            match run.result {
                Ok(output) => {
                    let outcome = outcome(
                        &act.task_id,
                        instance_id,
                        output,
                        &exec,
                        queued,
                        start_report,
                        duration,
                        run.attempts,
                    );
                    let _ = exec.reply.send(Ok(outcome));
                }
                Err(err)
                    if err.kind() == ErrorKind::InstanceGone
                        && !act.is_retiring()
                        && run.attempts_after_gone == 0
                        && exec.vanish_restarts() < MAX_VANISH_RESTARTS =>
                {
                    // The backend says the instance is gone and the command
                    // never reached it: run it on a fresh instance.
                    log::warn!(
                        "task={} vm={instance_id} vanished; starting a fresh instance",
                        act.task_id
                    );
                    act.drop_instance(ctx);
                    let mut exec = exec;
                    exec.restart = Some(RestartReason::Vanished);
                    exec.bump_vanish_restarts();
                    act.queue.push_front(exec);
                }
                Err(err) => {
                    let err = if act.is_retiring() && err.kind() == ErrorKind::InstanceGone {
                        Error::new(
                            ErrorKind::InstanceGone,
                            format!(
                                "the instance was stopped while the command ran ({err}); \
                                 the command may have partly run"
                            ),
                        )
                    } else {
                        err
                    };
                    let _ = exec.reply.send(Err(err));
                    if run.panicked {
                        act.retire(Some(RestartReason::Failed), ctx);
                    }
                }
            }
            act.finish_if_gone(ctx);
            act.pump(ctx);
        }));
    }

    /// Forgets an instance that the backend says is gone (no stop needed).
    fn drop_instance(&mut self, ctx: &mut Context<Self>) {
        if let Some((handle, _)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        self.ttl_deadline = None;
        self.state = VmState::NoInstance;
    }

    fn on_ttl(&mut self, ctx: &mut Context<Self>) {
        self.ttl_deadline = None;
        log::info!(
            "task={} vm={} reached its TTL",
            self.task_id,
            self.instance_id().unwrap_or_default()
        );
        if self.busy {
            // Let the running command finish (it is bounded by its own
            // timeout); commands behind it move to a fresh instance.
            self.retire_when_idle = Some(RestartReason::Ttl);
        } else {
            self.retire(Some(RestartReason::Ttl), ctx);
        }
    }

    /// Takes no more work: tells the registry, hands queued requests back to
    /// it, stops the instance, and stops the actor once nothing is in flight.
    fn retire(&mut self, reason: Option<RestartReason>, ctx: &mut Context<Self>) {
        if self.is_retiring() {
            return;
        }
        if let Some((handle, _)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        self.ttl_deadline = None;
        let live = match std::mem::replace(&mut self.state, VmState::Stopping { instance_id: None })
        {
            VmState::Ready(live) => Some(live),
            _ => None,
        };
        let reason = if live.is_some() { reason } else { None };
        self.retired = Some(reason.unwrap_or(RestartReason::Failed));
        self.state = VmState::Stopping {
            instance_id: live.as_ref().map(|l| l.id().to_string()),
        };
        self.shared.registry.do_send(VmRetired {
            task_id: self.task_id.clone(),
            generation: self.generation,
            reason,
        });
        let mut late: Vec<Exec> = self.queue.drain(..).collect();
        if !late.is_empty() {
            for exec in &mut late {
                if exec.restart.is_none() {
                    exec.restart = reason;
                }
            }
            self.shared.registry.do_send(Reroute { execs: late });
        }
        let Some(live) = live else {
            self.stop_state().result = Some(Ok(()));
            self.mark_gone(ctx);
            return;
        };
        log::info!("task={} vm={} stopping", self.task_id, live.id());
        let deadline = self.config().stop_timeout;
        let retry = self.config().retry.clone();
        let task_id = self.task_id.clone();
        ctx.spawn(
            async move {
                // Stopping is idempotent (an instance already gone stops
                // fine), so a transient failure is retried like any other;
                // giving up at once would leak the instance.
                let mut attempt = 0;
                let result = loop {
                    attempt += 1;
                    let result = match guarded(deadline, live.instance.stop()).await {
                        Guarded::Done(result) => result,
                        Guarded::Panicked(msg) => Err(Error::internal(format!(
                            "the backend panicked while stopping the instance: {msg}"
                        ))),
                        Guarded::TimedOut => Err(Error::new(
                            ErrorKind::Timeout,
                            format!("stopping the instance did not finish within {deadline:?}"),
                        )),
                    };
                    match result {
                        Err(err) if err.is_transient() && attempt <= retry.max_retries => {
                            let delay = retry.delay(attempt, fastrand::f64(), err.retry_after());
                            log::warn!(
                                "task={task_id} vm={} stop failed ({err}); retry {attempt} in \
                                 {delay:?}",
                                live.id()
                            );
                            actix::clock::sleep(delay).await;
                        }
                        other => break other,
                    }
                };
                // The slot is freed only once the instance is really stopped.
                drop(live);
                result
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                if let Err(err) = &result {
                    log::error!(
                        "task={} vm={} could not be stopped: {err}",
                        act.task_id,
                        act.instance_id().unwrap_or_default()
                    );
                }
                act.stop_state().result = Some(result);
                act.mark_gone(ctx);
            }),
        );
    }

    fn mark_gone(&mut self, ctx: &mut Context<Self>) {
        let instance_id = self.instance_id();
        self.state = VmState::Gone {
            instance_id: instance_id.clone(),
        };
        let result = self.stop_result();
        let waiters = std::mem::take(&mut self.stop_state().waiters);
        for waiter in waiters {
            let _ = waiter.send(StopResult {
                instance_id: instance_id.clone(),
                result: result.clone(),
            });
        }
        self.finish_if_gone(ctx);
    }

    /// Stops the actor once its instance is gone and no call is in flight
    /// (stopping earlier would drop the running command's answer).
    fn finish_if_gone(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.state, VmState::Gone { .. }) && !self.busy {
            ctx.stop();
        }
    }
}

impl Actor for VmActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        // Best effort only: the registry learnt of the retirement through
        // VmRetired; this covers an actor stopped any other way.
        if !matches!(self.state, VmState::Gone { .. }) {
            self.shared.registry.do_send(VmRetired {
                task_id: self.task_id.clone(),
                generation: self.generation,
                reason: Some(RestartReason::Failed),
            });
        }
    }
}

impl Handler<Exec> for VmActor {
    type Result = ();

    fn handle(&mut self, exec: Exec, ctx: &mut Self::Context) {
        if self.is_retiring() {
            let mut exec = exec;
            if exec.restart.is_none() {
                exec.restart = self.retired;
            }
            self.shared.registry.do_send(Reroute { execs: vec![exec] });
            return;
        }
        self.queue.push_back(exec);
        self.pump(ctx);
    }
}

impl Handler<StopVm> for VmActor {
    type Result = ResponseFuture<StopResult>;

    fn handle(&mut self, msg: StopVm, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let VmState::Gone { instance_id } = &self.state {
            let _ = tx.send(StopResult {
                instance_id: instance_id.clone(),
                result: self.stop_result(),
            });
        } else {
            self.stop_state().waiters.push(tx);
        }
        match msg.cause {
            StopCause::Evicted => self.retire(Some(RestartReason::Evicted), ctx),
            StopCause::Shutdown { grace } => {
                for exec in self.queue.drain(..) {
                    let _ = exec.reply.send(Err(Error::new(
                        ErrorKind::ShuttingDown,
                        "the runtime is shutting down; the command was not run",
                    )));
                }
                if self.busy {
                    self.shutdown_requested = true;
                    // Past the grace, stop the instance under the command.
                    ctx.run_later(grace, |act, ctx| act.retire(None, ctx));
                } else {
                    self.retire(None, ctx);
                }
            }
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| StopResult {
                instance_id: None,
                result: Err(Error::new(
                    ErrorKind::ActorDied,
                    "the task's actor stopped before its instance was stopped",
                )),
            })
        })
    }
}

impl Handler<GetInfo> for VmActor {
    type Result = MessageResult<GetInfo>;

    fn handle(&mut self, _: GetInfo, _: &mut Self::Context) -> Self::Result {
        let state = match self.state {
            VmState::NoInstance => TaskState::NoInstance,
            VmState::Starting => TaskState::Starting,
            VmState::Ready(_) => TaskState::Ready,
            VmState::Stopping { .. } => TaskState::Stopping,
            VmState::Gone { .. } => TaskState::Gone,
        };
        let idle = !self.busy && self.queue.is_empty();
        MessageResult(TaskInfo {
            task_id: self.task_id.to_string(),
            state,
            instance_id: self.instance_id(),
            idle_for: idle.then(|| self.idle_since.elapsed()),
            running: self.busy && matches!(self.state, VmState::Ready(_)),
            queued: self.queue.len(),
        })
    }
}

/// Builds the outcome of a command that ran.
#[allow(clippy::too_many_arguments)]
fn outcome(
    task_id: &str,
    instance_id: String,
    output: ExecOutput,
    exec: &Exec,
    queued: Duration,
    start: Option<StartReport>,
    duration: Duration,
    attempts: u32,
) -> ExecOutcome {
    ExecOutcome {
        task_id: task_id.to_string(),
        instance_id,
        exit_code: output.exit_code,
        stdout: output.stdout,
        stderr: output.stderr,
        timed_out: output.timed_out,
        job: output.job,
        instance_restarted: exec.restart,
        instance_started: start.is_some(),
        queued,
        slot_wait: start.map(|s| s.slot_wait).unwrap_or_default(),
        duration,
        attempts,
    }
}

/// A backend call's end: done, panicked, or past its deadline.
enum Guarded<T> {
    Done(T),
    Panicked(String),
    TimedOut,
}

/// Runs a backend future under a deadline, catching panics.
async fn guarded<T>(deadline: Duration, fut: impl std::future::Future<Output = T>) -> Guarded<T> {
    match actix::clock::timeout(deadline, AssertUnwindSafe(fut).catch_unwind()).await {
        Ok(Ok(value)) => Guarded::Done(value),
        Ok(Err(payload)) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Guarded::Panicked(msg)
        }
        Err(_) => Guarded::TimedOut,
    }
}

/// Takes a slot, then starts an instance, retrying transient failures.
async fn start_instance(shared: &Shared, task_id: &TaskId) -> Result<(Live, StartReport)> {
    let config = &shared.config;
    let waiting = Instant::now();
    let slot = shared
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::new(ErrorKind::ShuttingDown, "the runtime is shutting down"))?;
    let slot_wait = waiting.elapsed();
    if slot_wait > Duration::from_millis(1) {
        log::info!("task={task_id} waited {slot_wait:?} for an instance slot");
    }
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert(tags::TASK_ID.to_string(), task_id.to_string());
    metadata.insert(tags::RUNTIME_ID.to_string(), shared.runtime_id.to_string());
    metadata.insert(
        tags::CREATED_BY.to_string(),
        tags::CREATED_BY_VALUE.to_string(),
    );
    let spec = StartSpec {
        task_id: task_id.to_string(),
        // A backstop the backend enforces even if this process dies: the
        // TTL plus room for a command that began just before it.
        ttl: Some(config.vm_ttl + config.command_timeout + Duration::from_secs(60)),
        metadata,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let permit = shared
            .starts
            .acquire()
            .await
            .map_err(|_| Error::new(ErrorKind::ShuttingDown, "the runtime is shutting down"))?;
        let result = match guarded(config.start_timeout, shared.provider.start(spec.clone())).await
        {
            Guarded::Done(result) => result,
            Guarded::Panicked(msg) => Err(Error::internal(format!(
                "the backend panicked while starting an instance: {msg}"
            ))),
            Guarded::TimedOut => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "starting an instance did not finish within {:?}",
                    config.start_timeout
                ),
            )),
        };
        drop(permit);
        match result {
            Ok(instance) => {
                return Ok((
                    Live {
                        instance: Rc::from(instance),
                        _slot: slot,
                    },
                    StartReport { slot_wait },
                ));
            }
            Err(err) if err.is_transient() && attempt <= config.retry.max_retries => {
                let delay = config
                    .retry
                    .delay(attempt, fastrand::f64(), err.retry_after());
                log::warn!("task={task_id} start failed ({err}); retry {attempt} in {delay:?}");
                actix::clock::sleep(delay).await;
            }
            Err(err) => return Err(err.context("could not start an instance")),
        }
    }
}

/// How running one command went.
struct CommandRun {
    result: Result<ExecOutput>,
    attempts: u32,
    /// Attempts made after a failure other than "instance gone" (so a
    /// later "gone" may mean the command reached the instance).
    attempts_after_gone: u32,
    panicked: bool,
}

/// Runs one command, retrying failures that are safe to retry.
async fn run_command(config: &Config, instance: Rc<dyn Instance>, spec: ExecSpec) -> CommandRun {
    let deadline = if spec.background {
        config.start_timeout.min(Duration::from_secs(120))
    } else {
        spec.timeout + config.exec_grace
    };
    let mut attempts = 0;
    let mut unsafe_failures = 0;
    loop {
        attempts += 1;
        let err = match guarded(deadline, instance.exec(spec.clone())).await {
            Guarded::Done(Ok(output)) => {
                return CommandRun {
                    result: Ok(output),
                    attempts,
                    attempts_after_gone: unsafe_failures,
                    panicked: false,
                }
            }
            Guarded::Done(Err(err)) => err,
            Guarded::Panicked(msg) => {
                return CommandRun {
                    result: Err(Error::internal(format!(
                        "the backend panicked while running the command: {msg}"
                    ))),
                    attempts,
                    attempts_after_gone: unsafe_failures,
                    panicked: true,
                }
            }
            Guarded::TimedOut => Error::new(
                ErrorKind::Timeout,
                format!(
                    "the backend did not answer within {deadline:?}; \
                     the command may still be running"
                ),
            ),
        };
        let retry = err.is_transient()
            || (config.retry_indeterminate && err.kind() == ErrorKind::Indeterminate);
        if !retry || attempts > config.retry.max_retries {
            return CommandRun {
                result: Err(err),
                attempts,
                attempts_after_gone: unsafe_failures,
                panicked: false,
            };
        }
        if err.kind() == ErrorKind::Indeterminate {
            unsafe_failures += 1;
        }
        let delay = config
            .retry
            .delay(attempts, fastrand::f64(), err.retry_after());
        log::warn!(
            "vm={} exec failed ({err}); retry {attempts} in {delay:?}",
            instance.id()
        );
        actix::clock::sleep(delay).await;
    }
}
