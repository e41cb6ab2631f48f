//! [`TaskSupervisor`]: creates one [`VmActor`] per task, spread over worker
//! arbiters, and owns what all task actors share: the provider, the caps on
//! live instances and concurrent starts, and the runtime id.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::Semaphore;

use super::messages::{SpawnVm, SweepOrphans, TaskId};
use super::vm_actor::{retry_transient, Shared, VmActor};
use super::{Placement, MAILBOX_CAPACITY};
use crate::config::Config;
use crate::error::Result;
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
        let registry = msg.registry;
        let addr = VmActor::start_in_arbiter(worker, move |ctx| {
            // The actor queues requests itself; the mailbox is only a hand-off.
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            VmActor::new(task_id, generation, shared, registry)
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
            let first = shared.provider.sweep_orphans(&shared.runtime_id);
            let again = {
                let shared = shared.clone();
                move || shared.provider.sweep_orphans(&shared.runtime_id)
            };
            let what = format!("runtime={}: sweep", shared.runtime_id);
            let sweep = retry_transient(shared.config.retry.clone(), what, first, again);
            match actix::clock::timeout(deadline, sweep).await {
                Ok(result) => result,
                Err(_) => Err(crate::Error::new(
                    crate::ErrorKind::Timeout,
                    "sweeping leftover instances did not finish in time",
                )),
            }
        })
    }
}
