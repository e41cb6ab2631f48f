//! [`VmActor`]: one per task. Owns the task's instance lifecycle (one state
//! enum, in [`state`]), its FIFO command queue, its idle timer and TTL
//! deadline; the backend calls it makes, with their deadlines and retries,
//! are in [`run`].
//!
//! One command runs at a time, in arrival order. The idle timer is armed
//! only when nothing runs or waits. Every backend call runs under a
//! deadline and with panics caught, so a misbehaving backend costs this task
//! one error and a fresh actor, never another task anything.

mod jobs;
mod run;
mod state;
mod stop;
mod transfer;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use actix::clock::Instant;
use actix::prelude::*;
use tokio::sync::{oneshot, Semaphore};

use self::run::{CommandRun, RunningCommand};
use self::state::{Live, Ready, RetireAfter, Retired, StartReport, Timer, VmState};
use super::guard::ShutdownEnd;
use super::messages::{Exec, GetInfo, Reroute, StopResult, TaskId, VmRetired};
use super::{RestartReason, TaskInfo, TaskRegistry};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{EndReason, Metrics};
use crate::provider::{ExecSpec, Provider};
use crate::spec::{TaskEnv, TaskSpec};

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
    /// One permit per create request in flight (`max_concurrent_starts`),
    /// handed to the provider as the start's `StartSlot`; FIFO.
    pub starts: Arc<Semaphore>,
    /// Where task actors report. Weak, so task actors do not keep the
    /// registry alive after a shutdown; shared rather than one clone per
    /// actor: each actix address clone costs two allocations.
    pub registry: actix::WeakAddr<TaskRegistry>,
    /// Every task's background jobs.
    pub jobs: Arc<crate::jobs::JobTable>,
    /// The runtime's metrics.
    pub metrics: Arc<Metrics>,
}

/// The actor that owns one task's instance and command queue.
pub struct VmActor {
    task_id: TaskId,
    /// Tells this actor's reports apart from those of an earlier actor of
    /// the same task.
    generation: u64,
    shared: Arc<Shared>,
    /// The instance lifecycle, with what exists only in each state.
    state: VmState,
    /// Commands waiting, in arrival order. It outlives states: it fills
    /// while an instance starts, and a retirement hands it to the registry.
    queue: VecDeque<Exec>,
    /// Since when nothing ran or waited (the idle timer, [`TaskInfo`]).
    idle_since: Instant,
    /// Who waits for the instance to stop. A graceful shutdown registers
    /// while a call is still in flight, before the actor retires, so this
    /// outlives states too. Boxed because an idle actor never needs it and
    /// a million idle actors should not pay for an empty `Vec` each.
    stop_waiters: Option<Box<StopWaiters>>,
    /// The task's spec and setup state, when it has a spec.
    env: Option<Arc<TaskEnv>>,
    /// The jobs this actor started and watches; boxed, like
    /// `stop_waiters`, since most actors never start one.
    jobs: Option<Box<jobs::ActorJobs>>,
}

/// The callers waiting for a task's instance to stop.
#[derive(Default)]
struct StopWaiters {
    senders: Vec<oneshot::Sender<StopResult>>,
    /// Set by a graceful shutdown: nothing the actor does for the stop goes
    /// past its end.
    shutdown: Option<ShutdownEnd>,
}

impl VmActor {
    pub(crate) fn new(
        task_id: TaskId,
        generation: u64,
        shared: Arc<Shared>,
        env: Option<Arc<TaskEnv>>,
    ) -> Self {
        shared.metrics.add_tasks(1);
        VmActor {
            task_id,
            generation,
            shared,
            state: VmState::NoInstance,
            queue: VecDeque::new(),
            idle_since: Instant::now(),
            stop_waiters: None,
            env,
            jobs: None,
        }
    }

    /// The task's spec, if it has one.
    fn spec(&self) -> Option<&TaskSpec> {
        self.env.as_deref().map(|env| &*env.spec)
    }

    /// The instance's TTL: the spec's, else the runtime's.
    fn vm_ttl(&self) -> std::time::Duration {
        self.spec()
            .and_then(|s| s.ttl)
            .unwrap_or(self.shared.config.vm_ttl)
    }

    /// The idle lifetime: the spec's, else the runtime's.
    fn idle_lifetime(&self) -> std::time::Duration {
        self.spec()
            .and_then(|s| s.idle_lifetime)
            .unwrap_or(self.shared.config.idle_lifetime)
    }

    /// Puts a request at the back of the queue.
    fn enqueue(&mut self, exec: Exec) {
        self.shared.metrics.add_queued(1);
        self.queue.push_back(exec);
    }

    /// Puts a request back at the head of the queue.
    fn requeue_front(&mut self, exec: Exec) {
        self.shared.metrics.add_queued(1);
        self.queue.push_front(exec);
    }

    /// Takes the request at the head of the queue.
    fn dequeue(&mut self) -> Option<Exec> {
        let exec = self.queue.pop_front()?;
        self.shared.metrics.add_queued(-1);
        Some(exec)
    }

    /// Takes every queued request.
    fn take_queue(&mut self) -> VecDeque<Exec> {
        self.shared.metrics.add_queued(-(self.queue.len() as i64));
        std::mem::take(&mut self.queue)
    }

    /// Nothing runs or waits.
    fn is_idle(&self) -> bool {
        !self.state.call_in_flight() && self.queue.is_empty() && !self.has_running_jobs()
    }

    /// Moves the queue forward: starts the instance or the next command, or
    /// arms the idle timer when there is nothing to do.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        match &mut self.state {
            VmState::NoInstance => {}
            VmState::Ready(ready) if !ready.running => {
                if let Some(after) = ready.retire_after.take() {
                    let reason = match after {
                        RetireAfter::Shutdown => None,
                        RetireAfter::Ttl => Some(RestartReason::Ttl),
                    };
                    self.retire(reason, ctx);
                    return;
                }
            }
            // A call is in flight, or the actor retired.
            _ => return,
        }
        // Requests whose caller has gone away are dropped unrun.
        while self
            .queue
            .front()
            .is_some_and(|exec| exec.reply.is_closed())
        {
            self.dequeue();
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

    /// Makes sure the timer of a ready instance fires no later than the next
    /// deadline that applies: the TTL, and the idle deadline when nothing
    /// runs or waits. A timer already set earlier is kept (it re-arms when it
    /// fires), so a busy task does not churn timers.
    fn ensure_timer(&mut self, ctx: &mut Context<Self>) {
        let idle = self.is_idle();
        let idle_lifetime = self.idle_lifetime();
        let VmState::Ready(ready) = &mut self.state else {
            return;
        };
        let Some(ttl) = ready.ttl else {
            return;
        };
        let due = if idle {
            ttl.min(self.idle_since + idle_lifetime)
        } else {
            ttl
        };
        if let Some(timer) = ready.timer {
            if timer.at <= due {
                return;
            }
            ctx.cancel_future(timer.handle);
        }
        let handle = ctx.run_later(due.saturating_duration_since(Instant::now()), |act, ctx| {
            if let VmState::Ready(ready) = &mut act.state {
                ready.timer = None;
                act.on_timer(ctx);
            }
        });
        ready.timer = Some(Timer { handle, at: due });
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let idle = self.is_idle();
        let lifetime = self.idle_lifetime();
        let VmState::Ready(ready) = &mut self.state else {
            return;
        };
        if ready.ttl.is_some_and(|ttl| now >= ttl) {
            ready.ttl = None;
            log::info!(
                "task={} vm={} reached its TTL",
                self.task_id,
                ready.live.id()
            );
            if ready.running {
                // Let the running command finish (it is bounded by its own
                // timeout); commands behind it move to a fresh instance.
                // A pending shutdown keeps precedence.
                ready.retire_after.get_or_insert(RetireAfter::Ttl);
            } else {
                self.retire(Some(RestartReason::Ttl), ctx);
            }
            return;
        }
        if idle && now >= self.idle_since + lifetime {
            log::info!(
                "task={} vm={} idle for {lifetime:?}: stopping",
                self.task_id,
                ready.live.id()
            );
            self.retire(Some(RestartReason::Idle), ctx);
            return;
        }
        self.ensure_timer(ctx);
    }

    fn begin_start(&mut self, ctx: &mut Context<Self>) {
        self.state = VmState::Starting {
            shutdown_requested: false,
        };
        let shared = self.shared.clone();
        let task_id = self.task_id.clone();
        let env = self.env.clone();
        let start = async move {
            let spec = env.as_ref().map(|env| env.spec.clone());
            let (live, mut report) = run::start_instance(&shared, &task_id, spec).await?;
            if let Some(env) = &env {
                report.setup = Some(run::apply_spec(&shared, &task_id, &live, env).await);
            }
            Ok((live, report))
        };
        ctx.spawn(
            start
                .into_actor(self)
                .map(|started, act, ctx| act.on_started(started, ctx)),
        );
    }

    /// The start that [`begin_start`](Self::begin_start) made has ended.
    fn on_started(&mut self, started: Result<(Live, StartReport)>, ctx: &mut Context<Self>) {
        let VmState::Starting { shutdown_requested } = self.state else {
            // The actor retired (an eviction, a shutdown's grace) while the
            // instance started: nobody will use it, so stop it now.
            self.state.call_ended();
            match started {
                Ok((live, _)) => {
                    log::info!(
                        "task={} vm={} started after retiring; stopping",
                        self.task_id,
                        live.id()
                    );
                    let reason = self
                        .state
                        .retired()
                        .map_or(RestartReason::Failed, |retired| retired.reason);
                    self.state = VmState::Stopping(Retired {
                        reason,
                        instance_id: Some(live.id().to_string()),
                        call_in_flight: false,
                    });
                    self.stop_instance(live, ctx);
                }
                // Nothing started, so nothing is left to stop.
                Err(_) if matches!(self.state, VmState::Stopping(_)) => {
                    self.mark_gone(Ok(()), ctx);
                }
                Err(_) => self.finish_if_gone(ctx),
            }
            return;
        };
        match started {
            Ok((live, report)) => {
                log::info!("task={} vm={} ready", self.task_id, live.id());
                let failed = report
                    .setup
                    .as_ref()
                    .filter(|setup| !setup.ok)
                    .map(|setup| setup.failure(&self.task_id));
                self.state = VmState::Ready(Ready {
                    live,
                    ttl: Some(Instant::now() + self.vm_ttl()),
                    timer: None,
                    start_report: Some(report),
                    running: false,
                    retire_after: shutdown_requested.then_some(RetireAfter::Shutdown),
                });
                if let Some(err) = failed {
                    // The setup failed: this request and every later one
                    // of the task get its error until the task is evicted.
                    log::warn!("task={} setup failed", self.task_id);
                    if let Some(env) = &self.env {
                        env.set_failure(err.clone());
                    }
                    // Retire first, so the registry hears of it before any
                    // caller does (and a shutdown it sends next finds the
                    // actor forgotten).
                    let failed: Vec<_> = self.queue.drain(..).collect();
                    self.retire(Some(RestartReason::Failed), ctx);
                    for exec in failed {
                        exec.fail(err.clone());
                    }
                    return;
                }
                self.ensure_timer(ctx);
                self.pump(ctx);
            }
            Err(err) => {
                log::warn!("task={} start failed: {err}", self.task_id);
                self.state = VmState::NoInstance;
                // Retire first, so the registry hears of it before any
                // caller does (and a shutdown it sends next finds the actor
                // forgotten, not stopped under it).
                let failed = self.take_queue();
                self.retire(None, ctx);
                for exec in failed {
                    exec.fail(err.clone());
                }
            }
        }
    }

    /// Runs the command at the head of the queue on the ready instance.
    fn begin_exec(&mut self, ctx: &mut Context<Self>) {
        let VmState::Ready(ready) = &mut self.state else {
            return;
        };
        let shared = self.shared.clone();
        let config = shared.config.clone();
        let support = run::ShellSupport::of(&*shared.provider);
        let spec = self.env.as_ref().map(|env| env.spec.clone());
        // A command the persistent shell cannot wrap is answered unrun.
        let (exec, (command, shell)) = loop {
            let Some(mut exec) = self.queue.pop_front() else {
                return self.pump(ctx);
            };
            shared.metrics.add_queued(-1);
            if let Some(transfer) = exec.transfer.take() {
                return self.begin_transfer(exec, transfer, ctx);
            }
            if exec.open {
                // Only opening the task: the instance is up, the spec applied.
                RunningCommand::new(
                    exec,
                    ready.live.id().to_string(),
                    Instant::now(),
                    ready.start_report.take(),
                )
                .answer(&self.task_id, crate::provider::ExecOutput::default(), 0);
                continue;
            }
            match run::shell_text(
                &exec.request,
                ready.live.id(),
                &config,
                support,
                spec.as_deref(),
            ) {
                Ok(text) => break (exec, text),
                Err(err) => drop(exec.reply.send(Err(err))),
            }
        };
        ready.running = true;
        let (command, pending_job) = match jobs::prepare(
            &self.shared,
            &self.task_id,
            &*ready.live.instance,
            &exec.request,
            command,
        ) {
            Ok(prepared) => prepared,
            Err(err) => {
                ready.running = false;
                let _ = exec.reply.send(Err(err));
                return self.pump(ctx);
            }
        };
        let spec = ExecSpec {
            command,
            background: exec.request.background || pending_job.is_some(),
            timeout: exec.request.timeout.unwrap_or(config.command_timeout),
            capture_bytes: config.capture_bytes,
            shell,
        };
        let started = Instant::now();
        let command = RunningCommand::new(
            exec,
            ready.live.id().to_string(),
            started,
            ready.start_report.take(),
        );
        log::debug!(
            "task={} vm={} exec (queued {:?}, background {})",
            self.task_id,
            command.instance_id,
            command.queued,
            spec.background
        );
        let instance = ready.live.instance.clone();
        let task_id = self.task_id.clone();
        let window = pending_job.as_ref().and_then(|p| p.window(&config));
        let sink = command.sink();
        let run = async move {
            let ran = run::run_command(
                &config,
                &shared.metrics,
                &task_id,
                Rc::clone(&instance),
                spec,
                sink,
            )
            .await;
            let yielded = match (&ran.result, window) {
                (Ok(output), Some(window)) => Some(window.watch(instance, output).await),
                _ => None,
            };
            (ran, yielded)
        };
        ctx.spawn(
            run.into_actor(self)
                .map(move |(mut ran, yielded), act, ctx| {
                    if let Some(pending) = pending_job {
                        act.job_started(pending, &command.instance_id, &mut ran, yielded, ctx);
                    }
                    act.on_command_done(command, ran, ctx)
                }),
        );
    }

    /// The command that [`begin_exec`](Self::begin_exec) sent has ended:
    /// answers its caller (or moves it to a fresh instance if its instance
    /// vanished before it ran), then moves the queue on.
    fn on_command_done(
        &mut self,
        command: RunningCommand,
        ran: CommandRun,
        ctx: &mut Context<Self>,
    ) {
        self.state.call_ended();
        let retired = self.state.retired().is_some();
        match ran.result {
            Ok(output) => command.answer(&self.task_id, output, ran.attempts),
            Err(err)
                if err.kind() == ErrorKind::InstanceGone
                    && !retired
                    && ran.indeterminate_failures == 0
                    && command.vanish_restarts() < MAX_VANISH_RESTARTS =>
            {
                // The backend says the instance is gone and the command
                // never reached it: run it on a fresh instance.
                log::warn!(
                    "task={} vm={} vanished; starting a fresh instance",
                    self.task_id,
                    command.instance_id
                );
                let retire_after = match &self.state {
                    VmState::Ready(ready) => ready.retire_after,
                    _ => None,
                };
                self.drop_instance(ctx);
                self.shared.metrics.instance_ended(EndReason::Vanished);
                if let Some(mut exec) = command.into_exec() {
                    exec.restart = Some(RestartReason::Vanished);
                    exec.bump_vanish_restarts();
                    self.requeue_front(exec);
                }
                if retire_after.is_some() {
                    // The TTL or a shutdown already ended this actor's
                    // service: the request goes to a fresh actor instead.
                    self.retire(None, ctx);
                }
            }
            Err(err) => {
                let err = if retired && err.kind() == ErrorKind::InstanceGone {
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
                command.fail(err);
                if ran.panicked {
                    self.retire(Some(RestartReason::Failed), ctx);
                }
            }
        }
        self.finish_if_gone(ctx);
        self.pump(ctx);
    }

    /// Forgets an instance that the backend says is gone (no stop needed).
    fn drop_instance(&mut self, ctx: &mut Context<Self>) {
        self.jobs_instance_ended("its instance disappeared");
        if let VmState::Ready(ready) = std::mem::replace(&mut self.state, VmState::NoInstance) {
            if let Some(timer) = ready.timer {
                ctx.cancel_future(timer.handle);
            }
        }
    }

    /// Tells the registry, if it still runs, about this actor.
    fn tell_registry<M>(&self, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        TaskRegistry: Handler<M>,
    {
        if let Some(registry) = self.shared.registry.upgrade() {
            registry.do_send(msg);
        }
    }

    /// Hands requests back to the registry for a fresh actor; once the
    /// registry has stopped (after a shutdown) they are refused instead.
    fn reroute(&self, execs: Vec<Exec>) {
        let refuse = |execs: Vec<Exec>| {
            for exec in execs {
                let _ = exec.reply.send(Err(Error::shutting_down()));
            }
        };
        let Some(registry) = self.shared.registry.upgrade() else {
            return refuse(execs);
        };
        match registry.try_send(Reroute { execs }) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => registry.do_send(msg),
            Err(SendError::Closed(msg)) => refuse(msg.execs),
        }
    }
}

impl Drop for VmActor {
    fn drop(&mut self) {
        let metrics = &self.shared.metrics;
        metrics.add_tasks(-1);
        metrics.add_queued(-(self.queue.len() as i64));
    }
}

impl Actor for VmActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.jobs_instance_ended("its task's actor stopped");
        // Best effort only: the registry learnt of the retirement through
        // VmRetired; this covers an actor stopped any other way.
        if !matches!(self.state, VmState::Gone { .. }) {
            self.tell_registry(VmRetired {
                task_id: self.task_id.clone(),
                generation: self.generation,
                reason: Some(RestartReason::Failed),
            });
        }
    }
}

impl Handler<Exec> for VmActor {
    type Result = ();

    fn handle(&mut self, mut exec: Exec, ctx: &mut Self::Context) {
        if let Some(retired) = self.state.retired() {
            if exec.restart.is_none() {
                exec.restart = Some(retired.reason);
            }
            self.reroute(vec![exec]);
            return;
        }
        self.enqueue(exec);
        self.pump(ctx);
    }
}

impl Handler<GetInfo> for VmActor {
    type Result = MessageResult<GetInfo>;

    fn handle(&mut self, _: GetInfo, _: &mut Self::Context) -> Self::Result {
        MessageResult(TaskInfo {
            task_id: self.task_id.to_string(),
            state: self.state.task_state(),
            instance_id: self.state.instance_id().map(str::to_string),
            idle_for: self.is_idle().then(|| self.idle_since.elapsed()),
            running: matches!(&self.state, VmState::Ready(ready) if ready.running),
            queued: self.queue.len(),
        })
    }
}
