//! [`TaskRegistry`]: routes requests by task id to the task's
//! [`VmActor`], asks the supervisor for a new actor on a task's first
//! request, forgets actors when they retire, and runs the graceful shutdown,
//! at whose end it stops itself (and with it the supervisor, whose only
//! address it holds).
//!
//! It remembers why a task's instance ended (TTL, idle, eviction) until the
//! task's next request, so that request's result can say it runs on a fresh
//! instance.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use actix::clock::Instant;
use actix::prelude::*;
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use tokio::sync::{oneshot, watch};

use super::guard::{secs, ShutdownEnd};
use super::messages::{
    EvictTask, Exec, GetInfo, ListTasks, Reroute, RunCommand, ShutdownRuntime, SpawnVm, StopCause,
    StopResult, StopVm, StopWorkers, SweepOrphans, TaskId, VmRetired,
};
use super::supervisor::TaskSupervisor;
use super::vm_actor::VmActor;
use super::{
    validate_task_id, ExecOutcome, RestartReason, ShutdownReport, StopFailure, TaskInfo,
    MAILBOX_CAPACITY,
};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::Metrics;
use crate::spec::TaskEnv;

/// How many task actors a shutdown stops at once.
const SHUTDOWN_IN_FLIGHT: usize = 10_000;

/// How many ended tasks the registry remembers for their next request.
const MAX_REMEMBERED_ENDINGS: usize = 1 << 20;

/// How long past a shutdown's end the registry still waits for a task actor
/// to answer its stop. Every actor answers by the end on its own; only one
/// whose thread is blocked (a backend calling blocking code) needs this.
const WEDGED_ACTOR_MARGIN: Duration = Duration::from_secs(1);

/// Joining the worker threads gets at least this long, even when the grace
/// has run out: they only have to drop what they hold.
const JOIN_AT_LEAST: Duration = Duration::from_secs(1);

/// The shutdown's result, published once for every caller that waits for it.
pub(crate) type ShutdownDone = watch::Receiver<Option<ShutdownReport>>;

/// Waits for the report of a shutdown under way.
pub(crate) async fn wait_for_report(mut done: ShutdownDone) -> Option<ShutdownReport> {
    let report = done.wait_for(Option::is_some).await.ok()?;
    report.clone()
}
/// Routes requests to task actors: one entry per live task, a fresh actor on
/// a task's first request, and the graceful shutdown.
pub struct TaskRegistry {
    config: Arc<Config>,
    supervisor: Addr<TaskSupervisor>,
    tasks: HashMap<TaskId, (Addr<VmActor>, u64)>,
    ended: HashMap<TaskId, RestartReason>,
    /// The specs of tasks that have one, from first use until eviction
    /// (they outlive the task's actors: a replacement instance gets the
    /// spec again, and a failed setup's error stays).
    envs: HashMap<TaskId, Arc<TaskEnv>>,
    accepting: bool,
    /// Where the shutdown's report goes once it is done.
    done: watch::Sender<Option<ShutdownReport>>,
    /// Counts the calls that come as [`RunCommand`].
    metrics: Arc<Metrics>,
}

impl TaskRegistry {
    pub(crate) fn new(
        config: Arc<Config>,
        supervisor: Addr<TaskSupervisor>,
        done: watch::Sender<Option<ShutdownReport>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        TaskRegistry {
            config,
            supervisor,
            tasks: HashMap::new(),
            ended: HashMap::new(),
            envs: HashMap::new(),
            accepting: true,
            done,
            metrics,
        }
    }

    /// The actor of a live task.
    pub(super) fn actor_of(&self, task_id: &str) -> Option<Addr<VmActor>> {
        self.tasks.get(task_id).map(|(addr, _)| addr.clone())
    }

    fn remember_ending(&mut self, task_id: TaskId, reason: RestartReason) {
        if self.ended.len() >= MAX_REMEMBERED_ENDINGS {
            // Forgetting only costs a notice in some later result.
            self.ended.clear();
        }
        self.ended.insert(task_id, reason);
    }

    /// Checks a request against its task's spec: records the spec a task
    /// gets with its first request, refuses a different one, and answers
    /// for a task whose setup failed.
    fn check_spec(&mut self, exec: &Exec) -> Result<()> {
        let env = self.envs.get(&exec.task_id);
        match (&exec.request.spec, env) {
            (Some(spec), Some(env)) if env.spec != *spec => {
                return Err(crate::spec::conflict(format!(
                    "task {} was opened with a different spec",
                    crate::spec::short(&exec.task_id, 200)
                )));
            }
            (Some(spec), None) => {
                if self.tasks.contains_key(&exec.task_id) {
                    return Err(crate::spec::conflict(format!(
                        "task {} is running without a spec",
                        crate::spec::short(&exec.task_id, 200)
                    )));
                }
                self.envs
                    .insert(exec.task_id.clone(), Arc::new(TaskEnv::new(spec.clone())));
            }
            _ => {}
        }
        match self.envs.get(&exec.task_id).and_then(|env| env.failure()) {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Sends a request to its task's actor, creating the actor if needed.
    fn route(&mut self, mut exec: Exec, ctx: &mut Context<Self>) {
        if !self.accepting {
            let _ = exec.reply.send(Err(Error::shutting_down()));
            return;
        }
        if let Err(err) = self.check_spec(&exec) {
            exec.fail(err);
            return;
        }
        if let Some((addr, _)) = self.tasks.get(&exec.task_id) {
            match addr.try_send(exec) {
                Ok(()) => return,
                Err(SendError::Full(msg)) => {
                    addr.do_send(msg);
                    return;
                }
                Err(SendError::Closed(msg)) => {
                    // The actor died without retiring (it cannot have
                    // panicked in backend code: that is caught); start anew.
                    log::warn!("task={} actor gone; starting a fresh one", msg.task_id);
                    self.tasks.remove(&msg.task_id);
                    exec = msg;
                    if exec.restart.is_none() {
                        exec.restart = Some(RestartReason::Failed);
                    }
                }
            }
        }
        if exec.restart.is_none() {
            exec.restart = self.ended.remove(&exec.task_id);
        } else {
            self.ended.remove(&exec.task_id);
        }
        let spawn = self.supervisor.send(SpawnVm {
            task_id: exec.task_id.clone(),
            env: self.envs.get(&exec.task_id).cloned(),
        });
        // Waiting here keeps later requests for the same task behind this
        // one, so the actor exists before they are routed (FIFO per task).
        ctx.wait(
            spawn
                .into_actor(self)
                .map(move |spawned, act, _| match spawned {
                    Ok((addr, generation)) => {
                        act.tasks
                            .insert(exec.task_id.clone(), (addr.clone(), generation));
                        if let Err(SendError::Full(msg)) = addr.try_send(exec) {
                            addr.do_send(msg);
                        }
                    }
                    Err(_) => {
                        let _ = exec.reply.send(Err(Error::shutting_down()));
                    }
                }),
        );
    }
}

impl Actor for TaskRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

impl Handler<Exec> for TaskRegistry {
    type Result = ();

    fn handle(&mut self, exec: Exec, ctx: &mut Self::Context) {
        self.route(exec, ctx);
    }
}

impl Handler<RunCommand> for TaskRegistry {
    type Result = ResponseFuture<Result<ExecOutcome>>;

    fn handle(&mut self, msg: RunCommand, ctx: &mut Self::Context) -> Self::Result {
        let received = Instant::now();
        let metrics = self.metrics.clone();
        if let Err(err) =
            validate_task_id(&msg.task_id).and_then(|()| msg.request.validate(&self.config))
        {
            let result = Err(err);
            metrics.exec_done(&result, received.elapsed());
            return Box::pin(async move { result });
        }
        let (tx, rx) = oneshot::channel();
        self.route(Exec::new(msg.task_id, msg.request, tx), ctx);
        Box::pin(async move {
            let result = rx
                .await
                .unwrap_or_else(|_| Err(Error::actor_died("the command")));
            metrics.exec_done(&result, received.elapsed());
            result
        })
    }
}

impl Handler<Reroute> for TaskRegistry {
    type Result = ();

    fn handle(&mut self, msg: Reroute, ctx: &mut Self::Context) {
        for exec in msg.execs {
            self.route(exec, ctx);
        }
    }
}

impl Handler<VmRetired> for TaskRegistry {
    type Result = ();

    fn handle(&mut self, msg: VmRetired, _: &mut Self::Context) {
        let current = self
            .tasks
            .get(&msg.task_id)
            .is_some_and(|(_, generation)| *generation == msg.generation);
        if current {
            self.tasks.remove(&msg.task_id);
            if let Some(reason) = msg.reason {
                self.remember_ending(msg.task_id, reason);
            }
        }
    }
}

impl Handler<EvictTask> for TaskRegistry {
    type Result = ResponseFuture<Result<bool>>;

    fn handle(&mut self, msg: EvictTask, _: &mut Self::Context) -> Self::Result {
        let task_id: TaskId = msg.task_id.into();
        self.envs.remove(&task_id);
        let Some((addr, _)) = self.tasks.remove(&task_id) else {
            return Box::pin(async { Ok(false) });
        };
        self.remember_ending(task_id, RestartReason::Evicted);
        Box::pin(async move {
            let stopped = addr
                .send(StopVm {
                    cause: StopCause::Evicted,
                })
                .await
                .map_err(|_| Error::actor_died("the eviction"))?;
            stopped.result.map(|()| true)
        })
    }
}

impl Handler<ListTasks> for TaskRegistry {
    type Result = ResponseFuture<Vec<TaskInfo>>;

    fn handle(&mut self, _: ListTasks, _: &mut Self::Context) -> Self::Result {
        let asks: Vec<_> = self
            .tasks
            .values()
            .map(|(addr, _)| addr.send(GetInfo))
            .collect();
        Box::pin(async move {
            // Unconstrained for the reason given in the shutdown below.
            tokio::task::unconstrained(join_all(asks))
                .await
                .into_iter()
                .filter_map(std::result::Result::ok)
                .collect()
        })
    }
}

impl Handler<ShutdownRuntime> for TaskRegistry {
    type Result = ResponseFuture<ShutdownReport>;

    fn handle(&mut self, msg: ShutdownRuntime, ctx: &mut Self::Context) -> Self::Result {
        // Every caller, the first included, waits for the one report; the
        // answer is a detached future, so it outlives the registry, which
        // stops once the shutdown is done.
        let done = self.done.subscribe();
        if self.accepting {
            self.shut_down(msg.grace, ctx);
        }
        Box::pin(async move {
            wait_for_report(done)
                .await
                .unwrap_or_else(|| ShutdownReport {
                    failed: vec![StopFailure {
                        task_id: None,
                        instance_id: None,
                        error: Error::actor_died("the shutdown"),
                    }],
                    ..ShutdownReport::default()
                })
        })
    }
}

impl TaskRegistry {
    /// Runs the shutdown: stops every task actor, has the supervisor sweep
    /// and stop the workers, publishes the report, and stops the registry.
    fn shut_down(&mut self, grace: Duration, ctx: &mut Context<Self>) {
        self.accepting = false;
        self.ended.clear();
        self.envs.clear();
        let end = ShutdownEnd {
            at: Instant::now() + grace,
            grace,
        };
        // Running commands get the grace but what stopping needs: its last
        // `stop_timeout`, or its second half if that is less.
        let for_stops = (grace / 2).min(self.config.stop_timeout);
        let cause = StopCause::Shutdown {
            commands_until: end.at - for_stops,
            end,
        };
        let actors: Vec<_> = self
            .tasks
            .drain()
            .map(|(task_id, (addr, _))| (task_id, addr))
            .collect();
        log::info!(
            "shutting down: stopping {} task(s) within {}",
            actors.len(),
            secs(grace)
        );
        // At most SHUTDOWN_IN_FLIGHT stops at once: holding a million stop
        // requests and answers at once cost more memory than the idle tasks
        // themselves. A stop is sent when its turn comes.
        let backstop = end.at + WEDGED_ACTOR_MARGIN;
        let stops = stream::iter(actors)
            .map(move |(task_id, addr)| async move {
                let answer = tokio::time::timeout_at(backstop, addr.send(StopVm { cause })).await;
                (task_id, answer)
            })
            .buffer_unordered(SHUTDOWN_IN_FLIGHT)
            .collect::<Vec<_>>();
        let supervisor = self.supervisor.clone();
        ctx.spawn(
            async move {
                let mut report = ShutdownReport::default();
                // Unconstrained: under tokio's coop budget every pending
                // answer past the budget defers its wake-up, so each poll
                // walks all outstanding stops while ~128 complete, which is
                // quadratic (1,000,000 idle tasks took 335 s to shut down;
                // 5 s this way).
                let stopped_all = tokio::task::unconstrained(stops).await;
                for (task_id, stopped) in stopped_all {
                    let (instance_id, result) = match stopped {
                        Ok(Ok(StopResult {
                            instance_id,
                            result,
                        })) => (instance_id, result),
                        Ok(Err(_)) => (None, Err(Error::actor_died("the stop request"))),
                        Err(_) => (
                            None,
                            Err(Error::new(
                                ErrorKind::Timeout,
                                format!(
                                    "the task's actor did not answer its stop within \
                                     the shutdown's grace of {}",
                                    secs(end.grace)
                                ),
                            )),
                        ),
                    };
                    match result {
                        Ok(()) => report.stopped.extend(instance_id),
                        Err(error) => report.failed.push(StopFailure {
                            task_id: Some(task_id.to_string()),
                            instance_id,
                            error,
                        }),
                    }
                }
                let swept = match supervisor.send(SweepOrphans { end }).await {
                    Ok(swept) => swept,
                    Err(_) => Err(Error::actor_died("the sweep")),
                };
                match swept {
                    Ok(swept) => report.swept = swept,
                    Err(err) => report.failed.push(StopFailure {
                        task_id: None,
                        instance_id: None,
                        error: err.context("sweeping leftover instances failed"),
                    }),
                }
                for failure in &report.failed {
                    log::error!(
                        "shutdown: task={} vm={} not stopped: {}",
                        failure.task_id.as_deref().unwrap_or("-"),
                        failure.instance_id.as_deref().unwrap_or("-"),
                        failure.error
                    );
                }
                let until = end.at.max(Instant::now() + JOIN_AT_LEAST);
                // An unreachable supervisor has no workers left to stop.
                let _ = supervisor.send(StopWorkers { until }).await;
                report
            }
            .into_actor(self)
            .map(|report, act, ctx| {
                act.done.send_replace(Some(report));
                log::info!("shutdown: done; the runtime has stopped");
                ctx.stop();
            }),
        );
    }
}
