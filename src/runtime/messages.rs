//! The messages the runtime's actors exchange. Orchestrators built on actix
//! send [`RunCommand`], [`EvictTask`], [`ListTasks`] and [`ShutdownRuntime`]
//! to the [`TaskRegistry`](super::TaskRegistry) address; the rest are
//! internal events and commands between the actors.
//!
//! Commands are imperative (`Exec`, `StopVm`), events past tense
//! (`VmRetired`).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::guard::ShutdownEnd;
use super::vm_actor::VmActor;
use super::{ExecOutcome, ExecRequest, RestartReason, ShutdownReport, TaskInfo};
use crate::error::Result;

/// A task id as the runtime keeps it.
pub type TaskId = Arc<str>;

/// Run a command for a task and answer through `reply`, exactly once.
///
/// This is the fast path used by [`Runtime`](super::Runtime): the answer
/// goes straight from the task's actor to the caller, without a hop back
/// through the registry. Orchestrators may prefer [`RunCommand`].
pub struct Exec {
    /// The task the command belongs to.
    pub task_id: TaskId,
    /// What to run.
    pub request: ExecRequest,
    /// Where the one answer goes.
    pub reply: oneshot::Sender<Result<ExecOutcome>>,
    /// When the runtime received the request.
    pub received: actix::clock::Instant,
    /// Set when the task's previous instance ended and this request will
    /// run in a fresh one.
    pub restart: Option<RestartReason>,
    /// How often this request moved to a fresh instance because its
    /// instance vanished before the command reached it.
    pub(crate) vanish_restarts: u32,
    /// Where the command's output goes as it is produced, for a streaming
    /// call ([`Runtime::exec_stream`](super::Runtime::exec_stream)).
    pub(crate) sink: Option<crate::stream::OutputSink>,
}

impl Exec {
    /// A request received now.
    pub fn new(
        task_id: impl Into<TaskId>,
        request: ExecRequest,
        reply: oneshot::Sender<Result<ExecOutcome>>,
    ) -> Self {
        Exec {
            task_id: task_id.into(),
            request,
            reply,
            received: actix::clock::Instant::now(),
            restart: None,
            vanish_restarts: 0,
            sink: None,
        }
    }

    /// Streams the command's output to `sink` as it is produced
    /// ([`crate::stream`]).
    #[must_use]
    pub fn with_sink(mut self, sink: crate::stream::OutputSink) -> Self {
        self.sink = Some(sink);
        self
    }

    pub(crate) fn vanish_restarts(&self) -> u32 {
        self.vanish_restarts
    }

    pub(crate) fn bump_vanish_restarts(&mut self) {
        self.vanish_restarts += 1;
    }
}

impl Message for Exec {
    type Result = ();
}

/// Run a command for a task and answer with the outcome (request/response
/// form of [`Exec`], for actix orchestrators).
#[derive(Debug, Clone)]
pub struct RunCommand {
    /// The task the command belongs to.
    pub task_id: String,
    /// What to run.
    pub request: ExecRequest,
}

impl Message for RunCommand {
    type Result = Result<ExecOutcome>;
}

/// Stop a task's instance now and forget the task; answers whether there
/// was a live task. A command still running is interrupted; commands queued
/// behind it run on a fresh instance.
#[derive(Debug, Clone)]
pub struct EvictTask {
    /// The task to evict.
    pub task_id: String,
}

impl Message for EvictTask {
    type Result = Result<bool>;
}

/// List the live tasks.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListTasks;

impl Message for ListTasks {
    type Result = Vec<TaskInfo>;
}

/// Stop taking work, stop every instance within `grace`, sweep the backend
/// for leftovers, stop every actor and worker thread, and report.
///
/// The grace bounds the whole shutdown. Running commands may go on until
/// only `min(grace / 2, Config::stop_timeout)` of it is left; that rest is
/// for stopping the instances (retries included) and the sweep. Task actors
/// answer and stop by the end of the grace. What could not be stopped or swept in time is listed
/// in the report as a [`Timeout`](crate::ErrorKind::Timeout) failure rather
/// than waited for.
///
/// A second `ShutdownRuntime` while one is under way waits for it and gets
/// the same report (its own `grace` is ignored). Once the shutdown is over
/// the registry has stopped, so later messages fail to deliver;
/// [`Runtime::shutdown`](super::Runtime::shutdown) then still answers with
/// the report.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownRuntime {
    /// How long the whole shutdown may take.
    pub grace: Duration,
}

impl Message for ShutdownRuntime {
    type Result = ShutdownReport;
}

/// Registry → supervisor: create the actor for a task.
pub(crate) struct SpawnVm {
    pub task_id: TaskId,
}

impl Message for SpawnVm {
    type Result = (Addr<VmActor>, u64);
}

/// Registry → supervisor: the registry has stopped every task actor; stop
/// backend leftovers (`sweep_orphans`) by the shutdown's end and answer
/// with what was swept.
pub(crate) struct SweepOrphans {
    pub end: ShutdownEnd,
}

impl Message for SweepOrphans {
    type Result = Result<Vec<String>>;
}

/// Registry → supervisor, last of a shutdown: stop the worker arbiters,
/// wait until `until` for their threads to end, then stop.
pub(crate) struct StopWorkers {
    pub until: actix::clock::Instant,
}

impl Message for StopWorkers {
    type Result = ();
}

/// VmActor → registry: this actor takes no more work (idle, TTL, evicted,
/// failed). The registry forgets it, so the task's next request gets a
/// fresh actor and is told why.
pub(crate) struct VmRetired {
    pub task_id: TaskId,
    pub generation: u64,
    /// Why, if the task had an instance that ended.
    pub reason: Option<RestartReason>,
}

impl Message for VmRetired {
    type Result = ();
}

/// VmActor → registry: requests that reached an actor after it retired,
/// to be routed to a fresh actor.
pub(crate) struct Reroute {
    pub execs: Vec<Exec>,
}

impl Message for Reroute {
    type Result = ();
}

/// Why an actor is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopCause {
    Evicted,
    /// A graceful shutdown: a running call may go on until
    /// `commands_until`; the actor answers and stops by `end`.
    Shutdown {
        commands_until: actix::clock::Instant,
        end: ShutdownEnd,
    },
}

/// Registry → VmActor: stop the instance and the actor; answer when the
/// instance is stopped (or could not be).
pub(crate) struct StopVm {
    pub cause: StopCause,
}

/// How stopping one task's instance went.
#[derive(Debug, Clone)]
pub(crate) struct StopResult {
    pub instance_id: Option<String>,
    pub result: Result<()>,
}

impl Message for StopVm {
    type Result = StopResult;
}

/// Registry → VmActor: describe yourself.
pub(crate) struct GetInfo;

impl Message for GetInfo {
    type Result = TaskInfo;
}
