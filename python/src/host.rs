//! The one Hecate runtime of this Python process: an actix `System` on a
//! background thread, started on first use, replaced in a forked child,
//! stopped by `shutdown` (which the package registers with `atexit`).
//!
//! Locking rule: [`STATE`] is only ever locked with the GIL released (or,
//! in the fork hooks, by the thread that forks while no other thread can
//! hold it waiting for the GIL), and nothing waits for the GIL while
//! holding it, so the two locks never deadlock.

use std::cell::RefCell;
use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_rt::{ArbiterHandle, System};
use hecate::provider::Provider;
use hecate::runtime::Placement;
use hecate::{BackendKind, Config, Error, Runtime, ShutdownReport};

/// A running runtime and the thread its actix `System` runs on.
pub struct Host {
    /// The process that started it; a forked child has another pid and
    /// never uses it.
    pid: u32,
    rt: Runtime,
    arbiter: ArbiterHandle,
    system: System,
    thread: Mutex<Option<JoinHandle<()>>>,
}

type Slot = Option<Arc<Host>>;

/// The runtime of this process, if one was started.
static STATE: Mutex<Slot> = Mutex::new(None);

thread_local! {
    /// The lock on [`STATE`] that the forking thread holds from the
    /// `before` fork hook until the `after_in_*` hook.
    static FORK_GUARD: RefCell<Option<MutexGuard<'static, Slot>>> = const { RefCell::new(None) };
}

fn lock() -> MutexGuard<'static, Slot> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which runtime to start when none runs.
pub enum Backend {
    /// The configuration from the environment ([`config_from_env`]).
    FromEnv,
    /// The given provider with the configuration from the environment
    /// (the benchmark's no-op backend).
    Provider(Arc<dyn Provider>),
}

/// Hecate's configuration from the environment, except that with
/// `HECATE_BACKEND` unset the drop-in runs on MorphCloud, as the original
/// tool did: a caller that switched by installing this package never has
/// the model's commands run on its own machine unless it asks for that.
pub fn config_from_env() -> hecate::Result<Config> {
    let mut config = Config::from_env()?;
    let named = std::env::var("HECATE_BACKEND").is_ok_and(|v| !v.trim().is_empty());
    if !named {
        config.backend = BackendKind::Morph;
    }
    Ok(config)
}

/// The running runtime of this process, started now if there is none (or
/// the one there is belongs to the parent of this forked process). Call
/// with the GIL released.
pub fn get_or_start() -> hecate::Result<Arc<Host>> {
    let mut slot = lock();
    if let Some(host) = slot.as_ref() {
        if host.pid == std::process::id() {
            return Ok(host.clone());
        }
        // Inherited through a fork the hooks did not see (a fork from C):
        // the parent's threads do not exist here, and its instances are
        // the parent's. Leak the handle rather than touch any of it.
        if let Some(stale) = slot.take() {
            std::mem::forget(stale);
        }
    }
    let host = Arc::new(Host::start(Backend::FromEnv)?);
    *slot = Some(host.clone());
    Ok(host)
}

/// The running runtime of this process, if any (never starts one).
pub fn current() -> Option<Arc<Host>> {
    lock()
        .as_ref()
        .filter(|host| host.pid == std::process::id())
        .cloned()
}

/// Starts a runtime over `backend`, refusing if one already runs.
pub fn start_with(backend: Backend) -> hecate::Result<()> {
    let mut slot = lock();
    if slot
        .as_ref()
        .is_some_and(|host| host.pid == std::process::id())
    {
        return Err(Error::invalid_input(
            "a runtime is already running in this process: call shutdown() first",
        ));
    }
    if let Some(stale) = slot.take() {
        std::mem::forget(stale);
    }
    *slot = Some(Arc::new(Host::start(backend)?));
    Ok(())
}

/// Takes this process's runtime out of the slot (a later call starts a
/// fresh one), for shutting it down.
pub fn take() -> Option<Arc<Host>> {
    let mut slot = lock();
    match slot.take() {
        Some(host) if host.pid == std::process::id() => Some(host),
        Some(stale) => {
            std::mem::forget(stale);
            None
        }
        None => None,
    }
}

/// `os.register_at_fork(before=…)`: holds the lock across the fork, so the
/// child's copy of it is not held by a thread that does not exist there.
pub fn before_fork() {
    let guard = lock();
    FORK_GUARD.with(|g| *g.borrow_mut() = Some(guard));
}

/// `os.register_at_fork(after_in_parent=…)`: releases the lock.
pub fn after_fork_in_parent() {
    FORK_GUARD.with(|g| drop(g.borrow_mut().take()));
}

/// `os.register_at_fork(after_in_child=…)`: forgets the parent's runtime
/// without touching it (its threads are not in this process; its
/// instances are the parent's), and releases the lock. The child's first
/// call starts a runtime of its own.
pub fn after_fork_in_child() {
    let guard = FORK_GUARD.with(|g| g.borrow_mut().take());
    let mut guard = guard.unwrap_or_else(lock);
    if let Some(inherited) = guard.take() {
        std::mem::forget(inherited);
    }
}

impl Host {
    fn start(backend: Backend) -> hecate::Result<Host> {
        let config = config_from_env()?;
        let (tx, rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("hecate-runtime".into())
            .spawn(move || {
                let runner = System::new();
                let started = runner.block_on(async move {
                    match backend {
                        Backend::FromEnv => Runtime::start(config),
                        Backend::Provider(provider) => {
                            Runtime::start_with(config, provider, Placement::Workers)
                        }
                    }
                });
                let ok = started.is_ok();
                let _ = tx.send(started.map(|rt| (rt, System::current())));
                if ok {
                    // Until `Host::shutdown` stops the system.
                    if let Err(err) = runner.run() {
                        log::error!("the runtime's actix system ended with an error: {err}");
                    }
                }
            })
            .map_err(|err| Error::internal(format!("cannot start the runtime thread: {err}")))?;
        let (rt, system) = match rx.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(err)) => {
                let _ = thread.join();
                return Err(err);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::internal(
                    "the runtime thread ended before it started",
                ));
            }
        };
        Ok(Host {
            pid: std::process::id(),
            rt,
            arbiter: system.arbiter().clone(),
            system,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The runtime handle.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Runs `make(runtime)` on the runtime's thread; its output arrives on
    /// the returned receiver (which reports a disconnect if the runtime
    /// went away first).
    pub fn spawn<F, Fut, T>(&self, make: F) -> mpsc::Receiver<T>
    where
        F: FnOnce(Runtime) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let rt = self.rt.clone();
        // The future is made on the runtime's thread, so it need not be Send.
        self.arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let _ = tx.send(make(rt).await);
            });
        });
        rx
    }

    /// Evicts `task_id` (stops its instance, killing whatever runs there),
    /// waiting at most `limit`. `Ok(true)` if the task was live.
    pub fn evict_blocking(&self, task_id: &str, limit: Duration) -> hecate::Result<bool> {
        let task = task_id.to_string();
        let rx = self.spawn(move |rt| async move { rt.evict(task).await });
        match rx.recv_timeout(limit) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(Error::internal(format!(
                "stopping the instance of task {task_id:?} took longer than {limit:?}"
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(Error::shutting_down()),
        }
    }

    /// Shuts the runtime down within `grace` (every instance stopped), then
    /// stops its actix system and joins its thread. Blocks; call with the
    /// GIL released.
    pub fn shutdown(&self, grace: Duration) -> hecate::Result<ShutdownReport> {
        let started = Instant::now();
        let rx = self.spawn(move |rt| async move { rt.shutdown(grace).await });
        // The runtime bounds its shutdown by the grace; a little more for
        // the answer to come back.
        let result = match rx.recv_timeout(grace + Duration::from_secs(5)) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(Error::internal(format!(
                "the runtime did not shut down within {:?}",
                started.elapsed()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(Error::shutting_down()),
        };
        self.system.stop();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if result.is_ok() {
                let _ = thread.join();
            }
            // Otherwise the thread may be stuck in a backend call: leave it,
            // rather than hang the interpreter's exit.
        }
        result
    }
}
