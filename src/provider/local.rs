//! The local backend: each instance is a private directory on this machine,
//! and commands run as child processes of the runtime. This module owns the
//! instance directories under the configured root, the processes started in
//! them (foreground commands and background jobs), and their cleanup.
//!
//! # Layout of an instance
//!
//! `<root>/<instance id>/` (mode 0700), where the id is
//! `local-<pid>-<counter>-<random>` and never derived from the task id, holds
//! `work/` (cwd and `HOME` of commands), `tmp/` (`TMPDIR`), `jobs/` (one log
//! and one exit file per background job) and `instance.json` (task id and
//! metadata, for debugging and [`Provider::sweep_orphans`]).
//!
//! # Processes
//!
//! Each instance has its own launcher ([`crate::launcher`]): a small
//! process started with the instance that spawns every command of it, each
//! in its own session and (where the machine allows) its own cgroup, with
//! a cleared environment carrying two markers, `HECATE_INSTANCE_ID` and
//! `HECATE_EXEC_ID`. Commands are its children, not the runtime's: they
//! cannot read the runtime's environment through `/proc/$PPID/environ`,
//! and every orphan they leave comes back to the launcher. A timeout kills
//! the command's processes (cgroup, then descent, then marker); stopping
//! the instance kills all of them and the launcher. Processes a finished
//! foreground command left behind (`server &`) keep running until the
//! instance stops.
//!
//! # Half-made instances
//!
//! An instance directory is built under a temporary name
//! (`.partial-<id>`), guarded by a lock file taken before it is made, and
//! renamed to `<id>` once `instance.json` is written. A start that fails
//! half-way (out of descriptors, say) removes it; if even that fails, the
//! shutdown sweep ([`Provider::sweep_orphans`]) removes every partial
//! directory of this process whose lock is free.

mod exec;
mod fsutil;
mod orphans;

pub use orphans::Abandoned;

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::config::SandboxConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::launcher::sandbox::{self, SandboxReport, SandboxSpec, WORKSPACE};
use crate::launcher::{self, Launcher, LauncherConfig, INSTANCE_MARKER};
use crate::provider::{BoxFuture, ExecOutput, ExecSpec, Instance, Provider, StartSpec};
use crate::unix;

/// `PATH` for commands when the runtime itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The per-instance metadata file, inside the instance directory.
const META_FILE: &str = "instance.json";
/// The prefix of every instance id (and so of every instance directory).
const ID_PREFIX: &str = "local-";
/// The prefix of an instance directory still being built (see the module
/// docs); its lock file adds [`LOCK_SUFFIX`].
const PARTIAL_PREFIX: &str = ".partial-";
/// The suffix of a partial directory's lock file.
const LOCK_SUFFIX: &str = ".lock";

/// Makes instance ids unique within this process even across providers.
static INSTANCE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The local backend (`local`): instances are private directories under
/// [`LocalConfig::root`](crate::config::LocalConfig::root), commands run as
/// processes of this machine, started by a launcher per instance. Needs a
/// POSIX shell and a launcher binary (see [`crate::launcher`]).
#[derive(Debug)]
pub struct LocalProvider {
    root: PathBuf,
    kill_grace: Duration,
    shell: String,
    path_env: String,
    launcher: LauncherConfig,
    /// The sandbox mode (`sandbox` backend): each instance's launcher is
    /// put in namespaces around its work directory.
    sandbox: Option<SandboxConfig>,
}

impl LocalProvider {
    /// A provider using `config.local.root` (created with mode 0700 if
    /// missing; it must be a directory owned by this user), the launcher of
    /// `config.launcher` (found now, so that a missing one is a
    /// configuration error at once) and `config.local.kill_grace`. Commands
    /// get the runtime's `PATH` (or a default) and nothing else from its
    /// environment. With `config.harden_runtime` this process is made
    /// non-dumpable ([`launcher::harden_runtime_process`]).
    pub fn new(config: &crate::Config) -> Result<Self> {
        let mut provider = Self::for_cleanup(config)?;
        provider.launcher.program = Some(config.launcher.resolve_program()?);
        if config.harden_runtime {
            launcher::harden_runtime_process()?;
        }
        Ok(provider)
    }

    /// The `sandbox` backend: [`LocalProvider::new`] whose instances each
    /// run in their own namespaces ([`crate::launcher::sandbox`]) with
    /// `config.sandbox`'s network, limits and root filesystem; commands
    /// run in [`WORKSPACE`] (also `HOME`) with `TMPDIR=/tmp`. Fails with
    /// a configuration error naming the cause when a sandbox cannot be
    /// made here ([`sandbox::probe`]) or the root filesystem is not a
    /// directory.
    pub fn new_sandbox(config: &crate::Config) -> Result<Self> {
        sandbox::probe().map_err(|why| Error::config(format!("HECATE_BACKEND=sandbox: {why}")))?;
        let mut settings = config.sandbox.clone();
        if let Some(dir) = &settings.rootfs {
            let canonical = dir.canonicalize().ok().filter(|d| d.is_dir());
            let Some(canonical) = canonical else {
                return Err(Error::config(format!(
                    "HECATE_SANDBOX_ROOTFS: {} is not a directory",
                    dir.display()
                )));
            };
            settings.rootfs = Some(canonical);
        }
        let mut provider = Self::new(config)?;
        provider.shell = sandbox_shell(settings.rootfs.as_deref())?;
        provider.sandbox = Some(settings);
        Ok(provider)
    }

    /// A provider for `hecate gc`: it finds and removes instances under the
    /// root but starts none, so it needs no launcher and leaves this
    /// process as it is (dumpable).
    pub fn for_cleanup(config: &crate::Config) -> Result<Self> {
        let requested = &config.local.root;
        if requested.as_os_str().is_empty() {
            return Err(Error::config("HECATE_LOCAL_ROOT: must not be empty"));
        }
        let root = fsutil::ensure_private_root(requested).map_err(|err| {
            Error::config(format!(
                "HECATE_LOCAL_ROOT: cannot use {}: {err}",
                requested.display()
            ))
        })?;
        if root.to_str().is_none() {
            // Paths travel to the launcher as UTF-8.
            return Err(Error::config(format!(
                "HECATE_LOCAL_ROOT: {} is not valid UTF-8",
                root.display()
            )));
        }
        let shell = if Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let path_env = std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        log::debug!("local: root {} shell {shell}", root.display());
        Ok(LocalProvider {
            root,
            kill_grace: config.local.kill_grace,
            shell: shell.to_string(),
            path_env,
            launcher: config.launcher.clone(),
            sandbox: None,
        })
    }

    /// The (canonical) directory instances are created in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the instance directory (see the module docs on half-made
    /// instances); returns its id and path.
    fn make_dir(&self, spec: &StartSpec) -> Result<(String, PathBuf)> {
        let id = new_instance_id();
        // The root may have been removed since `new` (a tmp cleaner).
        fsutil::ensure_private_root(&self.root)
            .map_err(|err| io_error(err, format!("local root {}", self.root.display())))?;
        let partial = self.root.join(format!("{PARTIAL_PREFIX}{id}"));
        let lock_path = self.root.join(format!("{PARTIAL_PREFIX}{id}{LOCK_SUFFIX}"));
        // Taken before the directory exists and released after it was
        // renamed or removed: a sweep that can take it knows the builder
        // is done or dead.
        let lock = fsutil::create_lock(&lock_path)
            .map_err(|err| io_error(err, format!("locking {}", lock_path.display())))?;
        let dir = self.root.join(&id);
        let made = (|| -> std::io::Result<()> {
            fsutil::create_private_dir(&partial)?;
            for sub in ["work", "tmp", "jobs"] {
                fsutil::create_private_dir(&partial.join(sub))?;
            }
            let meta = serde_json::json!({
                "instance_id": id,
                "task_id": spec.task_id,
                "runtime_pid": std::process::id(),
                "ttl_secs": spec.ttl.map(|t| t.as_secs()),
                "metadata": spec.metadata,
            });
            std::fs::write(partial.join(META_FILE), meta.to_string())?;
            std::fs::rename(&partial, &dir)
        })();
        if let Err(err) = made {
            if let Err(e) = fsutil::remove_tree(&partial) {
                log::warn!(
                    "local: half-made instance {} not removed ({e}); the shutdown sweep will",
                    partial.display()
                );
            }
            let _ = std::fs::remove_file(&lock_path);
            drop(lock);
            return Err(io_error(
                err,
                format!("preparing instance dir {}", dir.display()),
            ));
        }
        let _ = std::fs::remove_file(&lock_path);
        drop(lock);
        Ok((id, dir))
    }

    async fn start_instance(
        prepared: Result<(String, PathBuf)>,
        mut config: LauncherConfig,
        sandboxed: Option<SandboxConfig>,
        shell: String,
        path_env: String,
        kill_grace: Duration,
        log_task: String,
    ) -> Result<LocalInstance> {
        let (id, dir) = prepared?;
        if let Some(settings) = &sandboxed {
            config.sandbox = Some(SandboxSpec {
                rootfs: settings.rootfs.clone(),
                network: settings.network,
                memory_limit: settings.memory_limit,
                pids_limit: settings.pids_limit,
                ..SandboxSpec::new(dir.join("work"))
            });
        }
        let launcher = match Launcher::start(&config, &id).await {
            Ok(l) => l,
            Err(err) => {
                let _ = remove_dir(dir).await;
                return Err(err.context(format_args!("local instance {id}")));
            }
        };
        log::info!(
            "task={log_task} vm={id} local instance started in {} (launcher pid {})",
            dir.display(),
            launcher.pid()
        );
        let text = |p: &Path| p.to_str().map(str::to_owned).unwrap_or_default();
        let (work, tmp) = if sandboxed.is_some() {
            (WORKSPACE.to_string(), "/tmp".to_string())
        } else {
            (text(&dir.join("work")), text(&dir.join("tmp")))
        };
        let inner = Inner {
            host_work: dir.join("work"),
            work,
            tmp,
            sandboxed: sandboxed.is_some(),
            jobs: dir.join("jobs"),
            dir,
            id,
            log_task,
            shell,
            path_env,
            kill_grace,
            launcher: Arc::new(launcher),
            state: RefCell::new(State::default()),
        };
        Ok(LocalInstance {
            inner: Rc::new(inner),
        })
    }
}

/// The shell of sandboxed commands: `/bin/bash` if the sandbox's root
/// (the host's, or `rootfs`) has one, else `/bin/sh`.
fn sandbox_shell(rootfs: Option<&Path>) -> Result<String> {
    let base = rootfs.unwrap_or(Path::new("/"));
    for shell in ["bin/bash", "bin/sh"] {
        if base.join(shell).exists() {
            return Ok(format!("/{shell}"));
        }
    }
    Err(Error::config(format!(
        "HECATE_SANDBOX_ROOTFS: {} has neither /bin/bash nor /bin/sh",
        base.display()
    )))
}

/// An I/O failure classified: out of descriptors, memory or processes is
/// transient (a retry after others finished may succeed), anything else
/// internal.
fn io_error(err: std::io::Error, what: String) -> Error {
    let kind = launcher::errno_kind(&err, ErrorKind::Internal);
    Error::new(kind, format!("{what}: {err}")).with_source(err)
}

impl Provider for LocalProvider {
    fn supports_persistent_shell(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        if self.sandbox.is_some() {
            "sandbox"
        } else {
            "local"
        }
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<Result<Box<dyn Instance>>> {
        let started = self.start_local(spec);
        Box::pin(async move { Ok(Box::new(started.await?) as Box<dyn Instance>) })
    }

    /// Stops the instances under the root whose metadata carries
    /// `hecate_runtime_id = runtime_id` (kills their processes and removes
    /// their directories), and removes this process's half-made instance
    /// directories.
    fn sweep_orphans(&self, runtime_id: &str) -> BoxFuture<Result<Vec<String>>> {
        self.sweep_partial();
        self.sweep_tagged(runtime_id)
    }
}

impl LocalProvider {
    /// [`Provider::start`] with the concrete instance (for its host
    /// paths and [`LocalInstance::sandbox`] report).
    pub fn start_local(&self, spec: StartSpec) -> BoxFuture<Result<LocalInstance>> {
        let prepared = self.make_dir(&spec);
        let started = LocalProvider::start_instance(
            prepared,
            self.launcher.clone(),
            self.sandbox.clone(),
            self.shell.clone(),
            self.path_env.clone(),
            self.kill_grace,
            loggable_task(&spec.task_id),
        );
        let slot = spec.create_slot;
        Box::pin(async move {
            let started = started.await;
            // The directory and the launcher are made: nothing further to
            // create.
            slot.release();
            started
        })
    }
}

/// A running local instance: a private directory, its launcher and the
/// processes started through it. Created by [`LocalProvider`]; see the
/// [module docs](self).
///
/// Dropping it without [`stop`](Instance::stop) ends its launcher, which
/// kills its processes (best effort, asynchronously), but leaves the
/// directory.
pub struct LocalInstance {
    inner: Rc<Inner>,
}

impl fmt::Debug for LocalInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalInstance")
            .field("id", &self.inner.id)
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl LocalInstance {
    /// The instance's private directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The working directory (and `HOME`) of its commands, on the host
    /// (a sandboxed command sees it as [`WORKSPACE`]).
    pub fn work_dir(&self) -> &Path {
        &self.inner.host_work
    }

    /// What the sandbox applied, for an instance of the `sandbox` backend.
    pub fn sandbox(&self) -> Option<&SandboxReport> {
        self.inner.launcher.sandbox()
    }

    /// The pid of its launcher process.
    pub fn launcher_pid(&self) -> u32 {
        self.inner.launcher.pid()
    }
}

struct Inner {
    id: String,
    /// The task id, escaped and shortened for log lines.
    log_task: String,
    dir: PathBuf,
    /// The work directory on the host.
    host_work: PathBuf,
    /// The work directory (and `HOME`) as commands see it.
    work: String,
    /// `TMPDIR` as commands see it.
    tmp: String,
    /// Sandboxed: commands see [`WORKSPACE`], a private `/tmp`, and keep
    /// their job files there.
    sandboxed: bool,
    jobs: PathBuf,
    shell: String,
    path_env: String,
    kill_grace: Duration,
    /// Shared with the guards of running commands, which kill through it
    /// when their call is abandoned.
    launcher: Arc<Launcher>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    jobs: u64,
    /// Tasks reading pipes that leftover processes of finished commands
    /// still hold; aborted when the instance stops.
    drains: Vec<AbortHandle>,
    stopped: bool,
}

impl Instance for LocalInstance {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn exec(&self, spec: ExecSpec) -> BoxFuture<Result<ExecOutput>> {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move {
            inner.check_runnable(&spec.command)?;
            if spec.background {
                inner.exec_background(&spec).await
            } else {
                inner.exec_foreground(&spec, None).await
            }
        })
    }

    fn exec_streaming(
        &self,
        spec: ExecSpec,
        sink: crate::stream::OutputSink,
    ) -> BoxFuture<Result<ExecOutput>> {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move {
            inner.check_runnable(&spec.command)?;
            if spec.background {
                let output = inner.exec_background(&spec).await?;
                sink.push_captured(crate::stream::StreamKind::Stdout, &output.stdout);
                return Ok(output);
            }
            inner.exec_foreground(&spec, Some(&sink)).await
        })
    }

    fn stop(&self) -> BoxFuture<Result<()>> {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move { inner.stop().await })
    }
}

impl Drop for LocalInstance {
    fn drop(&mut self) {
        let drains = {
            let mut st = self.inner.state.borrow_mut();
            if st.stopped {
                return;
            }
            st.stopped = true;
            std::mem::take(&mut st.drains)
        };
        log::warn!(
            "task={} vm={} dropped without stop; its launcher kills its processes",
            self.inner.log_task,
            self.inner.id
        );
        // The launcher ends when its last handle is dropped (the control
        // stream closes), and kills everything on its way out.
        for d in drains {
            d.abort();
        }
    }
}

impl Inner {
    /// Kills every process of the instance (through the launcher, which
    /// then exits) and removes its directory.
    async fn stop(&self) -> Result<()> {
        let drains = {
            let mut st = self.state.borrow_mut();
            st.stopped = true;
            std::mem::take(&mut st.drains)
        };
        let left = match self.launcher.stop().await {
            Ok(left) => left as usize,
            Err(err) => {
                // The launcher died (or hangs): its commands may be loose.
                // Their instance marker is what is left to find them by.
                log::warn!(
                    "task={} vm={} launcher failed to stop ({err}); sweeping by marker",
                    self.log_task,
                    self.id
                );
                let marker = unix::env_entry(INSTANCE_MARKER, &self.id);
                unix::kill_tree(Default::default(), &marker, self.kill_grace).await
            }
        };
        if left > 0 {
            log::warn!(
                "task={} vm={} {left} processes survived SIGKILL",
                self.log_task,
                self.id
            );
        }
        for d in drains {
            d.abort();
        }
        remove_dir(self.dir.clone()).await?;
        log::info!(
            "task={} vm={} local instance stopped",
            self.log_task,
            self.id
        );
        Ok(())
    }
}

/// Removes an instance directory off the arbiter thread (it may be large).
async fn remove_dir(dir: PathBuf) -> Result<()> {
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || fsutil::remove_tree(&dir))
        .await
        .map_err(|e| Error::internal(format!("removing {shown}: {e}")))?
        .map_err(|e| Error::internal(format!("removing {shown}: {e}")))
}

/// `local-<pid>-<counter>-<random>`: unique, and safe as a path component
/// whatever the task id is.
fn new_instance_id() -> String {
    let n = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    format!(
        "{ID_PREFIX}{}-{n}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// The task id escaped and cut for a log line (task ids are arbitrary text).
fn loggable_task(task_id: &str) -> String {
    const MAX: usize = 64;
    if task_id.chars().count() <= MAX {
        return format!("{task_id:?}");
    }
    let cut: String = task_id.chars().take(MAX).collect();
    format!("{cut:?}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_unique_and_path_safe() {
        let a = new_instance_id();
        let b = new_instance_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(id.starts_with(&format!("local-{}-", std::process::id())));
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        }
    }

    #[test]
    fn long_and_odd_task_ids_are_escaped_and_cut_in_logs() {
        let shown = loggable_task(&"a\n".repeat(5000));
        assert!(!shown.contains('\n'));
        assert!(shown.len() < 200);
        assert_eq!(loggable_task("t1"), "\"t1\"");
    }
}
