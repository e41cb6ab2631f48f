//! [`TaskSupervisor`]: creates one [`VmActor`] per task, spread over worker
//! arbiters, and owns what all task actors share: the provider, the caps on
//! live instances and concurrent starts, and the runtime id.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::Semaphore;

use super::backoff::Backoff;
use super::messages::{SpawnVm, SweepOrphans, TaskId};
use super::vm_actor::{Shared, VmActor};
use super::TaskRegistry;
use super::{Placement, MAILBOX_CAPACITY};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::Provider;

/// Creates task actors and holds what they share.
pub struct TaskSupervisor {
    shared: Arc<Shared>,
    workers: Vec<ArbiterHandle>,
    /// The arbiters this supervisor created, stopped when it stops.
    owned: Vec<Arbiter>,
    next_worker: usize,
    next_generation: u64,
}

impl TaskSupervisor {
    pub(crate) fn new(
        config: Arc<Config>,
        provider: Arc<dyn Provider>,
        runtime_id: Arc<str>,
        placement: Placement,
        registry: Addr<TaskRegistry>,
    ) -> Self {
        let (owned, workers): (Vec<Arbiter>, Vec<ArbiterHandle>) = match placement {
            Placement::CurrentThread => (Vec::new(), vec![Arbiter::current()]),
            Placement::Workers => {
                let owned: Vec<Arbiter> = (0..config.workers).map(|_| Arbiter::new()).collect();
                let handles = owned.iter().map(Arbiter::handle).collect();
                (owned, handles)
            }
        };
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(config.max_instances)),
            starts: Arc::new(Semaphore::new(config.max_concurrent_starts)),
            config,
            provider,
            runtime_id,
            registry,
        });
        TaskSupervisor {
            shared,
            workers,
            owned,
            next_worker: 0,
            next_generation: 0,
        }
    }
}

impl Actor for TaskSupervisor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        for arbiter in self.owned.drain(..) {
            arbiter.stop();
        }
    }
}

impl Handler<SpawnVm> for TaskSupervisor {
    type Result = MessageResult<SpawnVm>;

    fn handle(&mut self, msg: SpawnVm, ctx: &mut Self::Context) -> Self::Result {
        let _ = ctx;
        self.next_generation += 1;
        let generation = self.next_generation;
        let worker = &self.workers[self.next_worker % self.workers.len()];
        self.next_worker = self.next_worker.wrapping_add(1);
        let shared = self.shared.clone();
        let task_id: TaskId = msg.task_id;
        let addr = VmActor::start_in_arbiter(worker, move |ctx| {
            // The actor queues requests itself; the mailbox is only a hand-off.
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            VmActor::new(task_id, generation, shared)
        });
        MessageResult((addr, generation))
    }
}

impl Handler<SweepOrphans> for TaskSupervisor {
    type Result = ResponseFuture<Result<Vec<String>>>;

    fn handle(&mut self, _: SweepOrphans, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            let deadline = shared.config.stop_timeout;
            // A sweep lists and stops again whatever is still there, so a
            // transient failure is retried.
            let swept = Backoff::new(&shared.config.retry)
                .run(
                    &format_args!("runtime={}", shared.runtime_id),
                    "sweep",
                    || async {
                        actix::clock::timeout(
                            deadline,
                            shared.provider.sweep_orphans(&shared.runtime_id),
                        )
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::new(
                                ErrorKind::Timeout,
                                "sweeping leftover instances did not finish in time",
                            ))
                        })
                    },
                )
                .await;
            swept.result
        })
    }
}
