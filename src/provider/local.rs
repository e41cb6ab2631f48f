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

mod fsutil;
mod procs;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::AbortHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::provider::{
    tags, BoxFuture, Captured, ExecOutput, ExecSpec, Instance, JobInfo, OutputCapture, Provider,
    StartSpec,
};

/// How long output is still read after a foreground command's main process
/// exited, for pipes that its leftover children hold open.
const DRAIN_WINDOW: Duration = Duration::from_millis(150);
/// How long to wait for a killed main process to be reaped before giving up.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// `PATH` for commands when the runtime itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Linux refuses a single argument this long or longer (`MAX_ARG_STRLEN`).
/// The exit code reported for a command killed by its timeout.
const TIMEOUT_EXIT_CODE: i32 = 124;
/// Runs a background job's command and records its exit code. The command,
/// exit file and shell are positional arguments, never spliced into script.
const JOB_SCRIPT: &str = r#""$3" -c "$1"; echo "$?" > "$2""#;
/// Metadata key the runtime tags instances with.
/// The per-instance metadata file, inside the instance directory.
const META_FILE: &str = "instance.json";

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
            instance_marker: procs::marker("HECATE_INSTANCE_ID", &id),
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

    /// Instance directories under the root tagged with `runtime_id`.
    fn tagged_instances(&self, runtime_id: &str) -> Vec<(String, PathBuf)> {
        self.instance_dirs()
            .into_iter()
            .filter(|(_, _, meta)| {
                meta.as_ref()
                    .and_then(|m| m.get("metadata"))
                    .and_then(|m| m.get(tags::RUNTIME_ID))
                    .and_then(|v| v.as_str())
                    == Some(runtime_id)
            })
            .map(|(name, path, _)| (name, path))
            .collect()
    }

    /// Every instance directory under the root, with its metadata file
    /// parsed where it could be.
    fn instance_dirs(&self) -> Vec<(String, PathBuf, Option<serde_json::Value>)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_owned();
                if !name.starts_with("local-") {
                    return None;
                }
                let meta = std::fs::read(entry.path().join(META_FILE))
                    .ok()
                    .and_then(|text| serde_json::from_slice(&text).ok());
                Some((name, entry.path(), meta))
            })
            .collect()
    }
}

/// An instance directory whose runtime process is gone (crashed or killed
/// before it could stop its instances), as `hecate gc` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// The instance id (its directory name).
    pub id: String,
    /// The task it served.
    pub task_id: Option<String>,
    /// The `hecate_runtime_id` of the runtime that started it.
    pub runtime_id: Option<String>,
    /// When it was created, Unix seconds (0 if unknown).
    pub created: i64,
}

impl LocalProvider {
    /// Instances under the root whose runtime process no longer exists. An
    /// instance whose recorded pid is alive (even if the pid was reused) is
    /// left alone.
    pub fn abandoned(&self) -> Vec<Abandoned> {
        let mut found = Vec::new();
        for (name, path, meta) in self.instance_dirs() {
            let pid = meta
                .as_ref()
                .and_then(|m| m.get("runtime_pid"))
                .and_then(serde_json::Value::as_u64)
                .and_then(|p| i32::try_from(p).ok());
            if pid.is_some_and(process_exists) {
                continue;
            }
            let created = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            let text = |key: &str| {
                meta.as_ref()
                    .and_then(|m| m.get(key).or_else(|| m.get("metadata")?.get(key)))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            found.push(Abandoned {
                task_id: text("task_id"),
                runtime_id: text(tags::RUNTIME_ID),
                created,
                id: name,
            });
        }
        found
    }

    /// Kills every process of an abandoned instance and removes its
    /// directory. The id must name a directory directly under the root.
    pub async fn remove_abandoned(&self, id: &str) -> Result<()> {
        if !id.starts_with("local-") || id.contains('/') || id.contains("..") {
            return Err(Error::invalid_input(format!(
                "{id:?} is not a local instance id"
            )));
        }
        kill_and_remove(id, self.root.join(id), self.kill_grace).await
    }
}

/// Kills every process carrying an instance's marker and removes its
/// directory: the cleanup of an instance no live `LocalInstance` owns.
async fn kill_and_remove(id: &str, dir: PathBuf, grace: Duration) -> Result<()> {
    let marker = procs::marker("HECATE_INSTANCE_ID", id);
    let left = procs::kill_tree(BTreeSet::new(), &marker, grace).await;
    if left > 0 {
        log::warn!("vm={id} {left} processes survived SIGKILL");
    }
    remove_dir(dir).await?;
    log::info!("vm={id} orphaned local instance removed");
    Ok(())
}

/// Whether a process with this pid exists (EPERM: it exists, not ours).
fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<Result<Box<dyn Instance>>> {
        let started = self
            .start_sync(&spec)
            .map(|i| Box::new(i) as Box<dyn Instance>);
        Box::pin(async move { started })
    }

    /// Stops the instances under the root whose metadata carries
    /// `hecate_runtime_id = runtime_id`: kills their processes and removes
    /// their directories.
    fn sweep_orphans(&self, runtime_id: &str) -> BoxFuture<Result<Vec<String>>> {
        let found = self.tagged_instances(runtime_id);
        let grace = self.kill_grace;
        Box::pin(async move {
            let mut stopped = Vec::new();
            for (id, dir) in found {
                kill_and_remove(&id, dir, grace).await?;
                stopped.push(id);
            }
            Ok(stopped)
        })
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
        let live = procs::scan(marker, &groups);
        if !live.is_empty() {
            log::warn!(
                "task={} vm={} dropped without stop; killing {} processes",
                self.inner.log_task,
                self.inner.id,
                live.len()
            );
        }
        let mut trusted = procs::verified_groups(&groups, &live);
        trusted.extend(unreaped);
        procs::kill_now(trusted, marker);
        for d in drains {
            d.abort();
        }
    }
}

impl Inner {
    fn check_runnable(&self, command: &str) -> Result<()> {
        crate::provider::check_command(command)?;
        if self.state.borrow().stopped {
            return Err(Error::new(
                ErrorKind::InstanceGone,
                format!("local instance {} was stopped", self.id),
            ));
        }
        if !self.work.is_dir() {
            return Err(Error::new(
                ErrorKind::InstanceGone,
                format!("local instance {}: its directory is gone", self.id),
            ));
        }
        Ok(())
    }

    /// The next exec id (`<instance id>-<n>`).
    fn next_exec_id(&self) -> String {
        let mut st = self.state.borrow_mut();
        st.execs += 1;
        format!("{}-{}", self.id, st.execs)
    }

    /// A command running the shell with the instance's environment and
    /// nothing else, in its own process group.
    fn shell_command(&self, exec_id: &str) -> Command {
        let mut cmd = Command::new(&self.shell);
        cmd.current_dir(&self.work)
            .env_clear()
            .env("PATH", &self.path_env)
            .env("HOME", &self.work)
            .env("TMPDIR", &self.tmp)
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("TERM", "dumb")
            .env("PAGER", "cat")
            .env("GIT_PAGER", "cat")
            .env("HECATE_INSTANCE_ID", &self.id)
            .env("HECATE_EXEC_ID", exec_id)
            .process_group(0)
            .stdin(Stdio::null());
        cmd
    }

    fn spawn_error(&self, err: std::io::Error) -> Error {
        let kind = match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOMEM) | Some(libc::EMFILE) | Some(libc::ENFILE) => {
                ErrorKind::Transient
            }
            Some(libc::E2BIG) => ErrorKind::InvalidInput,
            Some(libc::ENOENT) if !self.work.is_dir() => ErrorKind::InstanceGone,
            _ => ErrorKind::Internal,
        };
        Error::new(
            kind,
            format!("local instance {}: cannot start command: {err}", self.id),
        )
    }

    /// Records the process group led by `pid`; the returned flag is to be
    /// set once the leader has been reaped.
    fn register_group(&self, pid: u32) -> Result<(i32, Arc<AtomicBool>)> {
        let pgid =
            i32::try_from(pid).map_err(|_| Error::internal(format!("pid {pid} out of range")))?;
        let reaped = Arc::new(AtomicBool::new(false));
        self.state
            .borrow_mut()
            .groups
            .insert(pgid, Arc::clone(&reaped));
        Ok((pgid, reaped))
    }

    async fn exec_foreground(&self, spec: &ExecSpec) -> Result<ExecOutput> {
        let exec_id = self.next_exec_id();
        let mut cmd = self.shell_command(&exec_id);
        cmd.arg("-c")
            .arg(&spec.command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::internal("spawned command has no pid"))?;
        let (pgid, reaped) = self.register_group(pid)?;
        log::debug!(
            "task={} vm={} exec={exec_id} pid={pid} started",
            self.log_task,
            self.id
        );
        let mut stdout = child.stdout.take().expect("stdout was set to piped");
        let mut stderr = child.stderr.take().expect("stderr was set to piped");
        let exec_marker = procs::marker("HECATE_EXEC_ID", &exec_id);
        let mut running = RunningChild {
            child,
            pgid,
            marker: exec_marker.clone(),
            reaped,
            armed: true,
        };
        let mut out = OutputCapture::new(spec.capture_bytes);
        let mut err = OutputCapture::new(spec.capture_bytes);
        let deadline = tokio::time::Instant::now().checked_add(spec.timeout);

        let (status, timed_out, drained) = {
            let reading = async {
                tokio::join!(pump(&mut stdout, &mut out), pump(&mut stderr, &mut err));
            };
            tokio::pin!(reading);
            let mut drained = false;
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(timer);

            let waited = loop {
                tokio::select! {
                    // A command that ends right at its deadline has ended.
                    biased;
                    status = running.child.wait() => break Some(status),
                    () = &mut timer => break None,
                    () = &mut reading, if !drained => drained = true,
                }
            };
            let (status, timed_out) = match waited {
                Some(status) => {
                    running.disarm();
                    (Some(status), false)
                }
                None => {
                    log::info!(
                        "task={} vm={} exec={exec_id} timed out after {:?}; killing its process tree",
                        self.log_task,
                        self.id,
                        spec.timeout
                    );
                    // The main process is not reaped yet, so its group id
                    // cannot have been reused: the group is ours.
                    let killing = procs::kill_tree([pgid].into(), &exec_marker, self.kill_grace);
                    tokio::pin!(killing);
                    let left = loop {
                        tokio::select! {
                            left = &mut killing => break left,
                            () = &mut reading, if !drained => drained = true,
                        }
                    };
                    if left > 0 {
                        log::warn!(
                            "task={} vm={} exec={exec_id} {left} processes survived SIGKILL",
                            self.log_task,
                            self.id
                        );
                    }
                    let status = tokio::time::timeout(REAP_TIMEOUT, running.child.wait())
                        .await
                        .ok();
                    if status.is_none() {
                        log::warn!(
                            "task={} vm={} exec={exec_id} main process not reaped after SIGKILL",
                            self.log_task,
                            self.id
                        );
                    }
                    running.disarm();
                    (status, true)
                }
            };
            if !drained {
                drained = tokio::time::timeout(DRAIN_WINDOW, &mut reading)
                    .await
                    .is_ok();
            }
            (status, timed_out, drained)
        };

        if !drained {
            // Leftover processes (`sleep 100 &`) hold the pipes. Keep reading
            // into the void so that they do not die of SIGPIPE; the
            // instance's stop ends them.
            log::debug!(
                "task={} vm={} exec={exec_id} leftover processes hold its output open",
                self.log_task,
                self.id
            );
            let mut st = self.state.borrow_mut();
            st.drains.retain(|d| !d.is_finished());
            st.drains.push(discard(stdout));
            st.drains.push(discard(stderr));
        }

        let exit_code = if timed_out {
            TIMEOUT_EXIT_CODE
        } else {
            match status {
                Some(Ok(status)) => exit_code(status),
                Some(Err(e)) => {
                    return Err(Error::internal(format!(
                        "local instance {}: waiting for command: {e}",
                        self.id
                    )))
                }
                None => TIMEOUT_EXIT_CODE,
            }
        };
        log::debug!(
            "task={} vm={} exec={exec_id} exit={exit_code} timed_out={timed_out}",
            self.log_task,
            self.id
        );
        Ok(ExecOutput {
            exit_code,
            stdout: out.finish(),
            stderr: err.finish(),
            timed_out,
            job: None,
        })
    }

    fn exec_background(&self, spec: &ExecSpec) -> Result<ExecOutput> {
        let exec_id = self.next_exec_id();
        let job = {
            let mut st = self.state.borrow_mut();
            st.jobs += 1;
            st.jobs
        };
        let log_path = self.jobs.join(format!("{job}.log"));
        let exit_path = self.jobs.join(format!("{job}.exit"));
        let io_err = |what: &str, e: std::io::Error| {
            Error::internal(format!("local instance {}: {what}: {e}", self.id))
        };
        // A stale exit file (commands can write there) would make the job
        // look finished.
        match std::fs::remove_file(&exit_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("removing old exit file", e))
            }
            _ => {}
        }
        let log = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&log_path)
                .map_err(|e| io_err("opening job log", e))?
        };
        let log_err = log.try_clone().map_err(|e| io_err("opening job log", e))?;
        let mut cmd = self.shell_command(&exec_id);
        cmd.arg("-c")
            .arg(JOB_SCRIPT)
            .arg("hecate-job")
            .arg(&spec.command)
            .arg(&exit_path)
            .arg(&self.shell)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::internal("spawned job has no pid"))?;
        let (_, reaped) = self.register_group(pid)?;
        let log_prefix = format!("task={} vm={} job={job}", self.log_task, self.id);
        log::info!("{log_prefix} exec={exec_id} pid={pid} started in the background");
        // Reaps the job when it ends, so that no zombie is left.
        tokio::spawn(async move {
            let status = child.wait().await;
            reaped.store(true, Ordering::Release);
            match status {
                Ok(status) => log::debug!("{log_prefix} ended: {status}"),
                Err(e) => log::warn!("{log_prefix} wait failed: {e}"),
            }
        });
        let line = format!(
            "started background job {job} (pid {pid}); log: {}\n",
            log_path.display()
        );
        Ok(ExecOutput {
            exit_code: 0,
            stdout: Captured::from_text(&line, spec.capture_bytes),
            stderr: Captured::default(),
            timed_out: false,
            job: Some(JobInfo {
                id: job.to_string(),
                pid: Some(pid),
                log_file: log_path.to_string_lossy().into_owned(),
                exit_file: exit_path.to_string_lossy().into_owned(),
            }),
        })
    }

    async fn stop(&self) -> Result<()> {
        let ((groups, unreaped), drains) = {
            let mut st = self.state.borrow_mut();
            st.stopped = true;
            (st.take_groups(), std::mem::take(&mut st.drains))
        };
        let marker = &self.instance_marker;
        let live = procs::scan(marker, &groups);
        // A group is certainly ours while its leader is unreaped, or while
        // a member carries our marker; a group that emptied long ago may
        // have an unrelated owner by now. (A just-started process may not
        // show its environment yet, hence the first rule.)
        let mut trusted = procs::verified_groups(&groups, &live);
        trusted.extend(unreaped);
        let left = procs::kill_tree(trusted, marker, self.kill_grace).await;
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

/// A foreground command's child process; if the exec future is dropped
/// while the command runs, its process tree is killed.
struct RunningChild {
    child: Child,
    pgid: i32,
    marker: Vec<u8>,
    /// Shared with the instance's record of the group.
    reaped: Arc<AtomicBool>,
    armed: bool,
}

impl RunningChild {
    /// The main process has been waited for (or given up on): nothing is
    /// to be killed on drop, and the group is no longer known to be ours.
    fn disarm(&mut self) {
        self.armed = false;
        self.reaped.store(true, Ordering::Release);
    }
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        if self.armed {
            // Runs before `child` is dropped: the main process is unreaped,
            // so the group id is still ours.
            procs::kill_now([self.pgid].into(), &self.marker);
        }
        // The child is reaped in the background from here on.
        self.reaped.store(true, Ordering::Release);
    }
}

/// Reads `src` to its end into `cap`.
async fn pump(src: &mut (impl AsyncRead + Unpin), cap: &mut OutputCapture) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => cap.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("local: reading command output failed: {e}");
                break;
            }
        }
    }
}

/// Reads `src` to its end in a task of its own, throwing the bytes away.
fn discard(mut src: impl AsyncRead + Unpin + Send + 'static) -> AbortHandle {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = src.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .abort_handle()
}

/// Removes an instance directory off the arbiter thread (it may be large).
async fn remove_dir(dir: PathBuf) -> Result<()> {
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || fsutil::remove_tree(&dir))
        .await
        .map_err(|e| Error::internal(format!("removing {shown}: {e}")))?
        .map_err(|e| Error::internal(format!("removing {shown}: {e}")))
}

/// The exit code of a finished process: its own, or 128+N for signal N.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        // wait() reports only exits and deaths by signal.
        .unwrap_or(-1)
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
    use std::collections::BTreeMap;

    fn tag(runtime_id: &str) -> BTreeMap<String, String> {
        [(tags::RUNTIME_ID.to_string(), runtime_id.to_string())].into()
    }

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
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }

    #[test]
    fn long_and_odd_task_ids_are_escaped_and_cut_in_logs() {
        let shown = loggable_task(&"a\n".repeat(5000));
        assert!(!shown.contains('\n'));
        assert!(shown.len() < 200);
        assert_eq!(loggable_task("t1"), "\"t1\"");
    }

    #[actix_rt::test]
    async fn sweep_orphans_stops_only_instances_of_that_runtime() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = crate::Config::default().with_local_root(tmp.path());
        let provider = LocalProvider::new(&config).expect("provider");
        let start = |runtime: &str| StartSpec {
            task_id: "t".into(),
            ttl: None,
            metadata: tag(runtime),
        };
        let mine = provider.start(start("rt-1")).await.expect("start");
        let other = provider.start(start("rt-2")).await.expect("start");
        let swept = provider.sweep_orphans("rt-1").await.expect("sweep");
        assert_eq!(swept, vec![mine.id().to_string()]);
        assert!(!provider.root().join(mine.id()).exists());
        assert!(provider.root().join(other.id()).exists());
        other.stop().await.expect("stop");
    }
}
