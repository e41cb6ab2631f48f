//! A file transfer on the task's ready instance, in the place of a command
//! (see `runtime/files.rs`): it holds the instance like a command does,
//! runs under the transfer deadline with panics caught, and answers its
//! caller directly.

use actix::clock::Instant;
use actix::prelude::*;

use super::state::VmState;
use super::VmActor;
use crate::error::{Error, ErrorKind};
use crate::runtime::files::{Transfer, TransferOutcome};
use crate::runtime::guard::{guarded, Guarded};
use crate::runtime::messages::Exec;
use crate::runtime::RestartReason;

impl VmActor {
    /// Runs `transfer` (taken from `exec`) on the ready instance.
    pub(super) fn begin_transfer(
        &mut self,
        exec: Exec,
        transfer: Transfer,
        ctx: &mut Context<Self>,
    ) {
        let VmState::Ready(ready) = &mut self.state else {
            return;
        };
        ready.running = true;
        let instance = ready.live.instance.clone();
        let instance_id = ready.live.id().to_string();
        let instance_started = ready.start_report.take().is_some();
        let restart = exec.restart;
        let task_id = self.task_id.to_string();
        let Transfer { op, reply, timeout } = transfer;
        let started = Instant::now();
        log::debug!("task={task_id} vm={instance_id} file transfer");
        let run = async move { guarded(timeout, op(&*instance)).await };
        ctx.spawn(run.into_actor(self).map(move |ran, act, ctx| {
            act.state.call_ended();
            let mut panicked = false;
            let result = match ran {
                Guarded::Done(result) => result,
                Guarded::Panicked(msg) => {
                    panicked = true;
                    Err(Error::internal(format!(
                        "the backend panicked during the file transfer: {msg}"
                    )))
                }
                Guarded::TimedOut => Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the file transfer did not end within {} s (HECATE_FILES_TIMEOUT_SECONDS)",
                        timeout.as_secs_f64()
                    ),
                )),
            };
            let _ = reply.send(result.map(|transferred| TransferOutcome {
                task_id,
                instance_id,
                transferred,
                instance_restarted: restart,
                instance_started,
                duration: started.elapsed(),
            }));
            drop(exec);
            if panicked {
                act.retire(Some(RestartReason::Failed), ctx);
            }
            act.finish_if_gone(ctx);
            act.pump(ctx);
        }));
    }
}
