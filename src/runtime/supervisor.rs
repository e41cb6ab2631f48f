//! [`TaskSupervisor`]: creates one [`VmActor`] per task, spread over worker
//! arbiters, and owns what all task actors share: the provider, the caps on
//! live instances and concurrent starts, and the runtime id. It also owns the
//! worker arbiters, which the last step of a shutdown stops and joins.
//!
//! Only the registry holds the supervisor's address, and task actors hold
//! the registry's only weakly, so once the registry stops the supervisor
//! stops too: no address cycle keeps either alive.

use std::sync::Arc;

use actix::clock::Instant;
use actix::prelude::*;
use tokio::sync::{oneshot, Semaphore};

use super::backoff::Backoff;
use super::guard::{guarded, Deadline, Source};
use super::messages::{SpawnVm, StopWorkers, SweepOrphans, TaskId};
use super::vm_actor::{Shared, VmActor};
use super::TaskRegistry;
use super::{Placement, MAILBOX_CAPACITY};
use crate::config::Config;
use crate::error::Result;
use crate::metrics::Metrics;
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
        registry: actix::WeakAddr<TaskRegistry>,
        jobs: Arc<crate::jobs::JobTable>,
        metrics: Arc<Metrics>,
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
            jobs,
            metrics,
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
        let env = msg.env;
        let addr = VmActor::start_in_arbiter(worker, move |ctx| {
            // The actor queues requests itself; the mailbox is only a hand-off.
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            VmActor::new(task_id, generation, shared, env)
        });
        MessageResult((addr, generation))
    }
}

impl Handler<SweepOrphans> for TaskSupervisor {
    type Result = ResponseFuture<Result<Vec<String>>>;

    fn handle(&mut self, msg: SweepOrphans, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        let end = msg.end;
        Box::pin(async move {
            let per_attempt = Deadline::new(shared.config.stop_timeout, Source::StopTimeout);
            // A sweep lists and stops again whatever is still there, so a
            // transient failure is retried, within the shutdown's grace.
            let swept = Backoff::new(&shared.config.retry)
                .counted(&shared.metrics)
                .until(end.at)
                .run(
                    &format_args!("runtime={}", shared.runtime_id),
                    "sweep",
                    || async {
                        let deadline = per_attempt.or_shutdown(Some(end), Instant::now());
                        guarded(
                            deadline.limit,
                            shared.provider.sweep_orphans(&shared.runtime_id),
                        )
                        .await
                        .into_result("sweeping leftover instances", &deadline)
                    },
                )
                .await;
            swept.result
        })
    }
}

impl Handler<StopWorkers> for TaskSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: StopWorkers, _: &mut Self::Context) -> Self::Result {
        let owned = std::mem::take(&mut self.owned);
        let count = owned.len();
        let joined = join_workers(owned);
        Box::pin(
            async move {
                if count > 0 && tokio::time::timeout_at(msg.until, joined).await.is_err() {
                    log::warn!("shutdown: worker threads still running at the deadline");
                }
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}

/// Tells the arbiters to stop and joins their threads on a helper thread
/// (joining blocks); the receiver answers once all have ended.
fn join_workers(owned: Vec<Arbiter>) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    if owned.is_empty() {
        let _ = tx.send(());
        return rx;
    }
    for arbiter in &owned {
        arbiter.stop();
    }
    let joiner = std::thread::Builder::new()
        .name("hecate-join".into())
        .spawn(move || {
            for arbiter in owned {
                if arbiter.join().is_err() {
                    log::error!("shutdown: a worker thread panicked");
                }
            }
            let _ = tx.send(());
        });
    if let Err(err) = joiner {
        // The arbiters were told to stop; they end without being joined.
        log::warn!("shutdown: could not start a thread to join the workers: {err}");
    }
    rx
}
