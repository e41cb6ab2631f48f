//! Running commands in a local instance: a foreground command with its
//! output captured, its timeout and the kill of its process tree; and a
//! background job writing to a log file, reaped when it ends.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::AbortHandle;

use super::{Inner, EXEC_MARKER, INSTANCE_MARKER, SYNC_KILL_ROUNDS};
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{Captured, ExecOutput, ExecSpec, JobInfo, OutputCapture};
use crate::unix;

/// How long output is still read after a foreground command's main process
/// exited, for pipes that its leftover children hold open.
const DRAIN_WINDOW: Duration = Duration::from_millis(150);
/// How long to wait for a killed main process to be reaped before giving up.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// The exit code reported for a command killed by its timeout.
const TIMEOUT_EXIT_CODE: i32 = 124;
/// Runs a background job's command and records its exit code. The command,
/// exit file and shell are positional arguments, never spliced into script.
const JOB_SCRIPT: &str = r#""$3" -c "$1"; echo "$?" > "$2""#;

impl Inner {
    pub(super) fn check_runnable(&self, command: &str) -> Result<()> {
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
            .env(INSTANCE_MARKER, &self.id)
            .env(EXEC_MARKER, exec_id)
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

    pub(super) async fn exec_foreground(&self, spec: &ExecSpec) -> Result<ExecOutput> {
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
        let exec_marker = unix::env_entry(EXEC_MARKER, &exec_id);
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
                    let killing = unix::kill_tree([pgid].into(), &exec_marker, self.kill_grace);
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
                Some(Ok(status)) => unix::exit_code(status),
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

    pub(super) fn exec_background(&self, spec: &ExecSpec) -> Result<ExecOutput> {
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
            unix::kill_now([self.pgid].into(), &self.marker, SYNC_KILL_ROUNDS);
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
