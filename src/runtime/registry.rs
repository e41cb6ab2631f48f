//! [`TaskRegistry`]: routes requests by task id to the task's
//! [`VmActor`], asks the supervisor for a new actor on a task's first
//! request, forgets actors when they retire, and runs the graceful shutdown.
//!
//! It remembers why a task's instance ended (TTL, idle, eviction) until the
//! task's next request, so that request's result can say it runs on a fresh
//! instance.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use tokio::sync::oneshot;

use super::messages::{
    EvictTask, Exec, GetInfo, ListTasks, Reroute, RunCommand, ShutdownRuntime, SpawnVm, StopCause,
    StopResult, StopVm, SweepOrphans, TaskId, VmRetired,
};
use super::supervisor::TaskSupervisor;
use super::vm_actor::VmActor;
use super::{
    validate_task_id, ExecOutcome, RestartReason, ShutdownReport, StopFailure, TaskInfo,
    MAILBOX_CAPACITY,
};
use crate::config::Config;
use crate::error::{Error, Result};

/// How many task actors a shutdown stops at once.
const SHUTDOWN_IN_FLIGHT: usize = 10_000;

/// How many ended tasks the registry remembers for their next request.
const MAX_REMEMBERED_ENDINGS: usize = 1 << 20;

/// Routes requests to task actors: one entry per live task, a fresh actor on
/// a task's first request, and the graceful shutdown.
pub struct TaskRegistry {
    config: Arc<Config>,
    supervisor: Addr<TaskSupervisor>,
    tasks: HashMap<TaskId, (Addr<VmActor>, u64)>,
    ended: HashMap<TaskId, RestartReason>,
    accepting: bool,
}

impl TaskRegistry {
    pub(crate) fn new(config: Arc<Config>, supervisor: Addr<TaskSupervisor>) -> Self {
        TaskRegistry {
            config,
            supervisor,
            tasks: HashMap::new(),
            ended: HashMap::new(),
            accepting: true,
        }
    }

    fn remember_ending(&mut self, task_id: TaskId, reason: RestartReason) {
        if self.ended.len() >= MAX_REMEMBERED_ENDINGS {
            // Forgetting only costs a notice in some later result.
            self.ended.clear();
        }
        self.ended.insert(task_id, reason);
    }

    /// Sends a request to its task's actor, creating the actor if needed.
    fn route(&mut self, mut exec: Exec, ctx: &mut Context<Self>) {
        if !self.accepting {
            let _ = exec.reply.send(Err(Error::shutting_down()));
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
        if let Err(err) =
            validate_task_id(&msg.task_id).and_then(|()| msg.request.validate(&self.config))
        {
            return Box::pin(async move { Err(err) });
        }
        let (tx, rx) = oneshot::channel();
        self.route(Exec::new(msg.task_id, msg.request, tx), ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::actor_died("the command")))
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
    type Result = ResponseActFuture<Self, ShutdownReport>;

    fn handle(&mut self, msg: ShutdownRuntime, _: &mut Self::Context) -> Self::Result {
        self.accepting = false;
        self.ended.clear();
        let cause = StopCause::Shutdown { grace: msg.grace };
        let actors: Vec<_> = self
            .tasks
            .drain()
            .map(|(task_id, (addr, _))| (task_id, addr))
            .collect();
        log::info!("shutting down: stopping {} task(s)", actors.len());
        // At most SHUTDOWN_IN_FLIGHT stops at once: holding a million stop
        // requests and answers at once cost more memory than the idle tasks
        // themselves. A stop is sent when its turn comes.
        let stops = stream::iter(actors)
            .map(move |(task_id, addr)| async move { (task_id, addr.send(StopVm { cause }).await) })
            .buffer_unordered(SHUTDOWN_IN_FLIGHT)
            .collect::<Vec<_>>();
        let supervisor = self.supervisor.clone();
        Box::pin(
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
                        Ok(StopResult {
                            instance_id,
                            result,
                        }) => (instance_id, result),
                        Err(_) => (None, Err(Error::actor_died("the stop request"))),
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
                match supervisor.send(SweepOrphans).await {
                    Ok(Ok(swept)) => report.swept = swept,
                    Ok(Err(err)) => report.failed.push(StopFailure {
                        task_id: None,
                        instance_id: None,
                        error: err.context("sweeping leftover instances failed"),
                    }),
                    Err(_) => {}
                }
                for failure in &report.failed {
                    log::error!(
                        "shutdown: task={} vm={} not stopped: {}",
                        failure.task_id.as_deref().unwrap_or("-"),
                        failure.instance_id.as_deref().unwrap_or("-"),
                        failure.error
                    );
                }
                report
            }
            .into_actor(self),
        )
    }
}
