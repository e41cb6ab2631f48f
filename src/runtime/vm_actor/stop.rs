//! How a [`VmActor`] stops: retiring (no more work), stopping its
//! instance, answering whoever waits for the stop, and the graceful
//! shutdown's bound on all of it.

use actix::clock::Instant;
use actix::prelude::*;
use tokio::sync::oneshot;

use super::run;
use super::state::{Live, RetireAfter, Retired, VmState};
use super::VmActor;
use crate::error::{Error, Result};
use crate::metrics::EndReason;
use crate::runtime::guard::{Deadline, ShutdownEnd, Source};
use crate::runtime::messages::{Exec, StopCause, StopResult, StopVm, VmRetired};
use crate::runtime::RestartReason;

impl VmActor {
    /// Takes no more work: tells the registry, hands queued requests back to
    /// it, stops the instance, and stops the actor once nothing is in flight.
    pub(super) fn retire(&mut self, reason: Option<RestartReason>, ctx: &mut Context<Self>) {
        if self.state.retired().is_some() {
            return;
        }
        let call_in_flight = self.state.call_in_flight();
        let starting = matches!(self.state, VmState::Starting { .. });
        let live = match std::mem::replace(&mut self.state, VmState::NoInstance) {
            VmState::Ready(ready) => {
                if let Some(timer) = ready.timer {
                    ctx.cancel_future(timer.handle);
                }
                Some(ready.live)
            }
            _ => None,
        };
        let reason = if live.is_some() { reason } else { None };
        self.jobs_instance_ended(match reason {
            Some(r) => r.notice(),
            None => "its instance was stopped",
        });
        self.state = VmState::Stopping(Retired {
            reason: reason.unwrap_or(RestartReason::Failed),
            instance_id: live.as_ref().map(|live| live.id().to_string()),
            call_in_flight,
        });
        self.tell_registry(VmRetired {
            task_id: self.task_id.clone(),
            generation: self.generation,
            reason,
        });
        if live.is_some() {
            self.shared.metrics.instance_ended(EndReason::of(reason));
        }
        let mut late: Vec<Exec> = self.take_queue().into();
        if !late.is_empty() {
            for exec in &mut late {
                if exec.restart.is_none() {
                    exec.restart = reason;
                }
            }
            self.reroute(late);
        }
        match live {
            Some(live) => {
                log::info!("task={} vm={} stopping", self.task_id, live.id());
                self.stop_instance(live, ctx);
            }
            // The start in flight may yet bring an instance: `on_started`
            // stops it, and only then is the instance gone.
            None if starting => {}
            None => self.mark_gone(Ok(()), ctx),
        }
    }

    /// The end of the graceful shutdown this actor is stopping for, if any.
    pub(super) fn shutdown_end(&self) -> Option<ShutdownEnd> {
        self.stop_waiters.as_ref().and_then(|w| w.shutdown)
    }

    /// A graceful shutdown's end has come: whoever still waits for the stop
    /// is told it did not finish in time, and the actor stops, dropping any
    /// call still in flight.
    pub(super) fn abandon(&mut self, ctx: &mut Context<Self>) {
        if let Some(waiters) = self.stop_waiters.take() {
            let instance_id = self.state.instance_id().map(str::to_string);
            let doing = if instance_id.is_some() {
                "stopping the instance"
            } else {
                "the instance start"
            };
            let error = waiters.shutdown.map_or_else(Error::shutting_down, |end| {
                Deadline::new(end.grace, Source::ShutdownGrace { grace: end.grace }).expired(doing)
            });
            log::error!(
                "task={} vm={} not stopped: {error}",
                self.task_id,
                instance_id.as_deref().unwrap_or("-")
            );
            for waiter in waiters.senders {
                let _ = waiter.send(StopResult {
                    instance_id: instance_id.clone(),
                    result: Err(error.clone()),
                });
            }
        }
        ctx.stop();
    }

    /// Stops the instance of a `Stopping` actor, then marks it gone.
    pub(super) fn stop_instance(&mut self, live: Live, ctx: &mut Context<Self>) {
        let shared = self.shared.clone();
        let task_id = self.task_id.clone();
        let end = self.shutdown_end();
        let stop = async move {
            run::stop_instance(&shared.config, &shared.metrics, &task_id, live, end).await
        };
        ctx.spawn(stop.into_actor(self).map(|stopped, act, ctx| {
            if let Err(err) = &stopped {
                log::error!(
                    "task={} vm={} could not be stopped: {err}",
                    act.task_id,
                    act.state.instance_id().unwrap_or_default()
                );
            }
            act.mark_gone(stopped, ctx);
        }));
    }

    /// The instance is stopped (or could not be): answers whoever waits for
    /// that, and stops the actor if nothing is in flight.
    pub(super) fn mark_gone(&mut self, stopped: Result<()>, ctx: &mut Context<Self>) {
        let retired = match std::mem::replace(&mut self.state, VmState::NoInstance) {
            VmState::Stopping(retired) | VmState::Gone { retired, .. } => retired,
            other => {
                // Only a retired actor stops its instance.
                self.state = other;
                return;
            }
        };
        for waiter in self.stop_waiters.take().into_iter().flat_map(|w| w.senders) {
            let _ = waiter.send(StopResult {
                instance_id: retired.instance_id.clone(),
                result: stopped.clone(),
            });
        }
        self.state = VmState::Gone {
            retired,
            error: stopped.err().map(Box::new),
        };
        self.finish_if_gone(ctx);
    }

    /// Stops the actor once its instance is gone and no call is in flight
    /// (stopping earlier would drop the running command's answer).
    pub(super) fn finish_if_gone(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.state, VmState::Gone { .. }) && !self.state.call_in_flight() {
            ctx.stop();
        }
    }
}

impl Handler<StopVm> for VmActor {
    type Result = ResponseFuture<StopResult>;

    fn handle(&mut self, msg: StopVm, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match self.state.stop_result() {
            Some(result) => {
                let _ = tx.send(StopResult {
                    instance_id: self.state.instance_id().map(str::to_string),
                    result,
                });
            }
            None => self
                .stop_waiters
                .get_or_insert_with(Box::default)
                .senders
                .push(tx),
        }
        match msg.cause {
            StopCause::Evicted => self.retire(Some(RestartReason::Evicted), ctx),
            StopCause::Shutdown {
                commands_until,
                end,
            } => {
                if let Some(waiters) = &mut self.stop_waiters {
                    waiters.shutdown = Some(end);
                }
                let now = Instant::now();
                // The shutdown's end bounds everything, whatever happens
                // before it.
                ctx.run_later(end.at.saturating_duration_since(now), |act, ctx| {
                    act.abandon(ctx);
                });
                for exec in self.take_queue() {
                    let _ = exec.reply.send(Err(
                        Error::shutting_down().context("the command was not run")
                    ));
                }
                let waits = match &mut self.state {
                    VmState::Starting { shutdown_requested } => {
                        *shutdown_requested = true;
                        true
                    }
                    VmState::Ready(ready) if ready.running => {
                        ready.retire_after = Some(RetireAfter::Shutdown);
                        true
                    }
                    _ => false,
                };
                if waits {
                    // Past the commands' share of the grace, stop the
                    // instance under the call.
                    ctx.run_later(commands_until.saturating_duration_since(now), |act, ctx| {
                        act.retire(None, ctx);
                    });
                } else {
                    self.retire(None, ctx);
                }
            }
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| StopResult {
                instance_id: None,
                result: Err(Error::actor_died("the stop request")),
            })
        })
    }
}
