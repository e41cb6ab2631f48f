//! The lifecycle of a task's instance as one enum, [`VmState`]: each variant
//! carries what exists only in that state (the live instance and its timers
//! when ready, why and how the actor retired once it has), so no loose field
//! beside it has to agree with it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::clock::Instant;
use actix::SpawnHandle;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::provider::Instance;
use crate::runtime::{RestartReason, TaskState};

/// The instance lifecycle: no instance → starting → ready → stopping → gone.
/// A vanished instance goes from ready back to no instance.
pub(super) enum VmState {
    /// No instance: before the first command, or after the backend said the
    /// instance vanished.
    NoInstance,
    /// An instance is starting for the command at the head of the queue.
    Starting {
        /// A graceful shutdown waits for the start; retire once it ends.
        shutdown_requested: bool,
    },
    /// The instance is up.
    Ready(Ready),
    /// The actor retired and is stopping its instance.
    Stopping(Retired),
    /// The actor retired and its instance is stopped, or could not be.
    Gone {
        retired: Retired,
        /// Why the stop failed; boxed because the final state of a million
        /// idle actors should not cost an error's size each.
        error: Option<Box<Error>>,
    },
}

/// A ready instance and what only a ready instance has.
pub(super) struct Ready {
    pub live: Live,
    /// When the instance reaches its TTL; `None` once it has (the actor then
    /// retires as soon as the running command ends).
    pub ttl: Option<Instant>,
    /// The one timer, for the earliest of the TTL and (when idle) the idle
    /// deadline. It may fire early; it then re-arms.
    pub timer: Option<Timer>,
    /// The start the next command reports (the first command on an
    /// instance is the one that started it).
    pub start_report: Option<StartReport>,
    /// A command is running on the instance.
    pub running: bool,
    /// Retire as soon as the running command ends.
    pub retire_after: Option<RetireAfter>,
}

/// Why a ready actor retires once its running command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RetireAfter {
    /// The instance reached its TTL.
    Ttl,
    /// A graceful shutdown waits for the command (it takes precedence).
    Shutdown,
}

/// A retired actor: it takes no more work and its instance is stopping or
/// stopped.
pub(super) struct Retired {
    /// Why, as requests that reach the actor late are told.
    pub reason: RestartReason,
    /// The instance it had, if any.
    pub instance_id: Option<String>,
    /// A start or a command begun before the retirement is still in flight;
    /// the actor stops only after it has answered.
    pub call_in_flight: bool,
}

/// An armed timer and when it fires.
#[derive(Clone, Copy)]
pub(super) struct Timer {
    pub handle: SpawnHandle,
    pub at: Instant,
}

/// A ready instance and the instance slot (`max_instances`) it holds.
pub(super) struct Live {
    pub instance: Rc<dyn Instance>,
    /// Released when the instance is dropped, which is after it stopped.
    pub _slot: OwnedSemaphorePermit,
    /// Counts this instance in `hecate_instances_live` while it lives.
    metrics: Arc<Metrics>,
}

impl Live {
    /// A started instance holding `slot`, counted as live until dropped.
    pub fn new(
        instance: Rc<dyn Instance>,
        slot: OwnedSemaphorePermit,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.add_instances(1);
        Live {
            instance,
            _slot: slot,
            metrics,
        }
    }

    pub fn id(&self) -> &str {
        self.instance.id()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.metrics.add_instances(-1);
    }
}

/// How the last start went, reported with the command that caused it.
#[derive(Debug, Clone)]
pub(super) struct StartReport {
    /// Time spent waiting for an instance slot.
    pub slot_wait: Duration,
    /// How applying the task's spec went, when it has one.
    pub setup: Option<crate::spec::SetupReport>,
}

impl VmState {
    /// Whether a backend start or command is in flight.
    pub fn call_in_flight(&self) -> bool {
        match self {
            VmState::NoInstance => false,
            VmState::Starting { .. } => true,
            VmState::Ready(ready) => ready.running,
            VmState::Stopping(retired) | VmState::Gone { retired, .. } => retired.call_in_flight,
        }
    }

    /// The in-flight start or command has answered.
    pub fn call_ended(&mut self) {
        match self {
            VmState::Ready(ready) => ready.running = false,
            VmState::Stopping(retired) | VmState::Gone { retired, .. } => {
                retired.call_in_flight = false;
            }
            // A start ends by leaving `Starting`.
            VmState::NoInstance | VmState::Starting { .. } => {}
        }
    }

    /// The retirement, once the actor has retired.
    pub fn retired(&self) -> Option<&Retired> {
        match self {
            VmState::Stopping(retired) | VmState::Gone { retired, .. } => Some(retired),
            _ => None,
        }
    }

    /// The instance, while there is or was one.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            VmState::Ready(ready) => Some(ready.live.id()),
            VmState::Stopping(retired) | VmState::Gone { retired, .. } => {
                retired.instance_id.as_deref()
            }
            VmState::NoInstance | VmState::Starting { .. } => None,
        }
    }

    /// How the stop went, once the instance is gone.
    pub fn stop_result(&self) -> Option<Result<()>> {
        match self {
            VmState::Gone { error: None, .. } => Some(Ok(())),
            VmState::Gone {
                error: Some(err), ..
            } => Some(Err((**err).clone())),
            _ => None,
        }
    }

    /// The public name of the state.
    pub fn task_state(&self) -> TaskState {
        match self {
            VmState::NoInstance => TaskState::NoInstance,
            VmState::Starting { .. } => TaskState::Starting,
            VmState::Ready(_) => TaskState::Ready,
            VmState::Stopping(_) => TaskState::Stopping,
            VmState::Gone { .. } => TaskState::Gone,
        }
    }
}
