//! [`NoopProvider`]: a backend whose instances do nothing, so that a
//! benchmark measures the runtime (routing, actors, timers) and nothing
//! else. It counts starts and stops, and can record how late each idle
//! eviction came.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::Result;
use crate::provider::{BoxFuture, ExecOutput, ExecSpec, Instance, Provider, StartSpec};

/// A provider whose instances start at once, answer every command with exit
/// code 0 and no output, and stop at once.
#[derive(Debug, Clone, Default)]
pub struct NoopProvider {
    shared: Arc<NoopShared>,
}

#[derive(Debug, Default)]
struct NoopShared {
    started: AtomicU64,
    stopped: AtomicU64,
    /// When set, every stop records how long after `last exec + this` it came.
    idle_lifetime: Option<Duration>,
    lateness: Mutex<Vec<Duration>>,
    stop_seen: Notify,
}

impl NoopProvider {
    /// A provider that only counts.
    pub fn new() -> Self {
        Self::default()
    }

    /// A provider that also records, for every stop, how long after the idle
    /// deadline (its instance's last command's end plus `idle_lifetime`) it
    /// came. The last command's end is taken in the instance, a little
    /// before the runtime marks the task idle, so the figure errs on the
    /// late side.
    pub fn recording_eviction(idle_lifetime: Duration) -> Self {
        NoopProvider {
            shared: Arc::new(NoopShared {
                idle_lifetime: Some(idle_lifetime),
                ..NoopShared::default()
            }),
        }
    }

    /// Instances started so far.
    pub fn started(&self) -> u64 {
        self.shared.started.load(Ordering::SeqCst)
    }

    /// Instances stopped so far.
    pub fn stopped(&self) -> u64 {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Instances started and not stopped.
    pub fn live(&self) -> u64 {
        self.started().saturating_sub(self.stopped())
    }

    /// The recorded eviction lateness, one entry per stop (only with
    /// [`recording_eviction`](Self::recording_eviction)).
    pub fn lateness(&self) -> Vec<Duration> {
        self.shared
            .lateness
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `count` instances have been stopped.
    pub async fn wait_stopped(&self, count: u64) {
        loop {
            // Registered before the check, so a stop in between still wakes us.
            let notified = self.shared.stop_seen.notified();
            if self.stopped() >= count {
                return;
            }
            notified.await;
        }
    }
}

impl Provider for NoopProvider {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn start(&self, _spec: StartSpec) -> BoxFuture<Result<Box<dyn Instance>>> {
        self.shared.started.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let instance: Box<dyn Instance> = Box::new(NoopInstance {
                shared,
                last_exec_end: Cell::new(None),
            });
            Ok(instance)
        })
    }
}

/// An instance of [`NoopProvider`]: as small as an instance can be, so the
/// memory of an idle task is the runtime's own.
struct NoopInstance {
    shared: Arc<NoopShared>,
    last_exec_end: Cell<Option<Instant>>,
}

impl Instance for NoopInstance {
    fn id(&self) -> &str {
        "noop"
    }

    fn exec(&self, _spec: ExecSpec) -> BoxFuture<Result<ExecOutput>> {
        if self.shared.idle_lifetime.is_some() {
            self.last_exec_end.set(Some(Instant::now()));
        }
        Box::pin(std::future::ready(Ok(ExecOutput::default())))
    }

    fn stop(&self) -> BoxFuture<Result<()>> {
        if let (Some(lifetime), Some(end)) = (self.shared.idle_lifetime, self.last_exec_end.get()) {
            let late = Instant::now().saturating_duration_since(end + lifetime);
            if let Ok(mut lateness) = self.shared.lateness.lock() {
                lateness.push(late);
            }
        }
        self.shared.stopped.fetch_add(1, Ordering::SeqCst);
        self.shared.stop_seen.notify_waiters();
        Box::pin(std::future::ready(Ok(())))
    }
}
