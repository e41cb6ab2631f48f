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
//! Every command runs in its own process group with a cleared environment
//! that carries two markers, `HECATE_INSTANCE_ID` and `HECATE_EXEC_ID`. A
//! timeout kills the command's group and every process carrying its exec
//! marker (catching `setsid` escapees); stopping the instance does the same
//! for the instance marker. Processes a finished foreground command left
//! behind (`server &`) keep running until the instance stops.

mod exec;
mod fsutil;
mod orphans;

pub use orphans::Abandoned;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::error::{Error, Result};
use crate::provider::{BoxFuture, ExecOutput, ExecSpec, Instance, Provider, StartSpec};
use crate::unix;

/// `PATH` for commands when the runtime itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The per-instance metadata file, inside the instance directory.
const META_FILE: &str = "instance.json";
/// The environment variable marking every process of an instance.
const INSTANCE_MARKER: &str = "HECATE_INSTANCE_ID";
/// The environment variable marking every process of one command.
const EXEC_MARKER: &str = "HECATE_EXEC_ID";
/// How many scans a synchronous kill (in `Drop`) makes.
const SYNC_KILL_ROUNDS: usize = 3;

/// Makes instance ids unique within this process even across providers.
static INSTANCE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The local backend (`local`): instances are private directories under
/// [`LocalConfig::root`](crate::config::LocalConfig::root), commands run as
/// processes of this machine. Needs nothing installed beyond a POSIX shell.
#[derive(Debug)]
pub struct LocalProvider {
    root: PathBuf,
    kill_grace: Duration,
    shell: PathBuf,
    path_env: OsString,
}

impl LocalProvider {
    /// A provider using `config.local.root` (created with mode 0700 if
    /// missing; it must be a directory owned by this user) and
    /// `config.local.kill_grace`. Commands get the runtime's `PATH` (or a
    /// default) and nothing else from its environment.
    pub fn new(config: &crate::Config) -> Result<Self> {
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
        let shell = if Path::new("/bin/bash").exists() {
            PathBuf::from("/bin/bash")
        } else {
            PathBuf::from("/bin/sh")
        };
        let path_env = std::env::var_os("PATH")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| OsString::from(DEFAULT_PATH));
        log::debug!("local: root {} shell {}", root.display(), shell.display());
        Ok(LocalProvider {
            root,
            kill_grace: config.local.kill_grace,
            shell,
            path_env,
        })
    }

    /// The (canonical) directory instances are created in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn start_sync(&self, spec: &StartSpec) -> Result<LocalInstance> {
        let id = new_instance_id();
        let log_task = loggable_task(&spec.task_id);
        // The root may have been removed since `new` (a tmp cleaner).
        fsutil::ensure_private_root(&self.root)
            .map_err(|err| Error::internal(format!("local root {}: {err}", self.root.display())))?;
        let dir = self.root.join(&id);
        fsutil::create_private_dir(&dir).map_err(|err| {
            Error::internal(format!("creating instance dir {}: {err}", dir.display()))
        })?;
        let made = (|| -> std::io::Result<()> {
            for sub in ["work", "tmp", "jobs"] {
                fsutil::create_private_dir(&dir.join(sub))?;
            }
            let meta = serde_json::json!({
                "instance_id": id,
                "task_id": spec.task_id,
                "runtime_pid": std::process::id(),
                "ttl_secs": spec.ttl.map(|t| t.as_secs()),
                "metadata": spec.metadata,
            });
            std::fs::write(dir.join(META_FILE), meta.to_string())
        })();
        if let Err(err) = made {
            let _ = fsutil::remove_tree(&dir);
            return Err(Error::internal(format!(
                "preparing instance dir {}: {err}",
                dir.display()
            )));
        }
        log::info!(
            "task={log_task} vm={id} local instance started in {}",
            dir.display()
        );
        let inner = Inner {
            instance_marker: unix::env_entry(INSTANCE_MARKER, &id),
            work: dir.join("work"),
            tmp: dir.join("tmp"),
            jobs: dir.join("jobs"),
            dir,
            id,
            log_task,
            shell: self.shell.clone(),
            path_env: self.path_env.clone(),
            kill_grace: self.kill_grace,
            state: RefCell::new(State::default()),
        };
        Ok(LocalInstance {
            inner: Rc::new(inner),
        })
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<Result<Box<dyn Instance>>> {
        let started = self
            .start_sync(&spec)
            .map(|i| Box::new(i) as Box<dyn Instance>);
        // The directory is made: nothing further to create.
        spec.create_slot.release();
        Box::pin(async move { started })
    }

    /// Stops the instances under the root whose metadata carries
    /// `hecate_runtime_id = runtime_id`: kills their processes and removes
    /// their directories.
    /// Stops the instances under the root whose metadata carries
    /// `hecate_runtime_id = runtime_id`: kills their processes and removes
    /// their directories.
    fn sweep_orphans(&self, runtime_id: &str) -> BoxFuture<Result<Vec<String>>> {
        self.sweep_tagged(runtime_id)
    }
}

/// A running local instance: a private directory and the processes started
/// in it. Created by [`LocalProvider`]; see the [module docs](self).
///
/// Dropping it without [`stop`](Instance::stop) kills its processes (best
/// effort) but leaves the directory.
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

    /// The working directory (and `HOME`) of its commands.
    pub fn work_dir(&self) -> &Path {
        &self.inner.work
    }
}

struct Inner {
    id: String,
    /// The task id, escaped and shortened for log lines.
    log_task: String,
    dir: PathBuf,
    work: PathBuf,
    tmp: PathBuf,
    jobs: PathBuf,
    shell: PathBuf,
    path_env: OsString,
    kill_grace: Duration,
    instance_marker: Vec<u8>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    execs: u64,
    jobs: u64,
    /// Process groups of all commands and jobs started (their leaders'
    /// pids), each with a flag set once its leader has been reaped: until
    /// then the group id cannot be reused, so the group is certainly ours.
    groups: BTreeMap<i32, Arc<AtomicBool>>,
    /// Tasks reading pipes that leftover processes of finished commands
    /// still hold; aborted when the instance stops.
    drains: Vec<AbortHandle>,
    stopped: bool,
}

impl State {
    /// Takes all recorded groups, and those whose leader is not reaped yet.
    fn take_groups(&mut self) -> (BTreeSet<i32>, BTreeSet<i32>) {
        let groups = std::mem::take(&mut self.groups);
        let unreaped = groups
            .iter()
            .filter(|(_, reaped)| !reaped.load(Ordering::Acquire))
            .map(|(g, _)| *g)
            .collect();
        (groups.into_keys().collect(), unreaped)
    }
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
                inner.exec_background(&spec)
            } else {
                inner.exec_foreground(&spec).await
            }
        })
    }

    fn stop(&self) -> BoxFuture<Result<()>> {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move { inner.stop().await })
    }
}

impl Drop for LocalInstance {
    fn drop(&mut self) {
        let ((groups, unreaped), drains) = {
            let mut st = self.inner.state.borrow_mut();
            if st.stopped {
                return;
            }
            st.stopped = true;
            (st.take_groups(), std::mem::take(&mut st.drains))
        };
        let marker = &self.inner.instance_marker;
        let live = unix::scan(marker, &groups);
        if !live.is_empty() {
            log::warn!(
                "task={} vm={} dropped without stop; killing {} processes",
                self.inner.log_task,
                self.inner.id,
                live.len()
            );
        }
        let trusted = trusted_groups(&groups, unreaped, &live);
        unix::kill_now(trusted, marker, SYNC_KILL_ROUNDS);
        for d in drains {
            d.abort();
        }
    }
}

impl Inner {
    /// Kills every process of the instance and removes its directory.
    async fn stop(&self) -> Result<()> {
        let ((groups, unreaped), drains) = {
            let mut st = self.state.borrow_mut();
            st.stopped = true;
            (st.take_groups(), std::mem::take(&mut st.drains))
        };
        let marker = &self.instance_marker;
        let live = unix::scan(marker, &groups);
        let trusted = trusted_groups(&groups, unreaped, &live);
        let left = unix::kill_tree(trusted, marker, self.kill_grace).await;
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
/// The recorded `groups` that are safe to signal, given a scan `live` of
/// them and the instance marker. A group is certainly ours while its leader
/// is unreaped (`unreaped`), or while a member carries our marker; a group
/// that emptied long ago may have an unrelated owner by now. (A
/// just-started process may not show its environment yet, hence the first
/// rule.)
fn trusted_groups(
    groups: &BTreeSet<i32>,
    unreaped: BTreeSet<i32>,
    live: &[unix::ProcEntry],
) -> BTreeSet<i32> {
    let mut trusted = unix::verified_groups(groups, live);
    trusted.extend(unreaped);
    trusted
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
    format!("local-{}-{n}-{:08x}", std::process::id(), fastrand::u32(..))
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
