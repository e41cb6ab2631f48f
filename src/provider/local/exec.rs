//! Running commands in a local instance through its launcher: a
//! foreground command with its output captured through pipes this process
//! reads, its timeout and the kill of everything it started; and a
//! background job writing to a log file, whose exit is logged.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::AbortHandle;

use super::{io_error, Inner};
use crate::error::{Error, ErrorKind, Result};
use crate::launcher::{CommandSpec, Launcher};
use crate::provider::{Captured, ExecOutput, ExecSpec, JobInfo, OutputCapture};
use crate::stream::{OutputSink, StreamKind};
use crate::unix;

/// How long output is still read after a foreground command's main process
/// exited, for pipes that its leftover children hold open.
const DRAIN_WINDOW: Duration = Duration::from_millis(150);
/// How long to wait for a killed main process to be reported before giving
/// up.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// The exit code reported for a command killed by its timeout.
const TIMEOUT_EXIT_CODE: i32 = 124;
/// Runs a background job's command and records its exit code. The command,
/// exit file and shell are positional arguments, never spliced into script.
const JOB_SCRIPT: &str = r#""$3" -c "$1"; echo "$?" > "$2""#;
/// Where a sandboxed instance keeps its job logs and exit files: in its
/// private `/tmp`, since the host's instance directory is not visible
/// inside.
const SANDBOX_JOBS: &str = "/tmp/hecate/jobs";
/// [`JOB_SCRIPT`] inside a sandbox: the script itself makes the log
/// (`$4`) and sends its output there, and removes a stale exit file.
const SANDBOX_JOB_SCRIPT: &str = r#"mkdir -p "${2%/*}" && rm -f "$2" && exec >"$4" 2>&1 || exit 125; "$3" -c "$1"; echo "$?" > "$2""#;

impl Inner {
    pub(super) fn check_runnable(&self, command: &str) -> Result<()> {
        crate::provider::check_command(command)?;
        if self.state.borrow().stopped {
            return Err(Error::new(
                ErrorKind::InstanceGone,
                format!("local instance {} was stopped", self.id),
            ));
        }
        if !self.host_work.is_dir() {
            return Err(Error::new(
                ErrorKind::InstanceGone,
                format!("local instance {}: its directory is gone", self.id),
            ));
        }
        Ok(())
    }

    /// The shell with `args`, the instance's environment and nothing else
    /// (the launcher adds the two markers), in the work directory.
    fn shell_command<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> CommandSpec {
        let mut cmd = CommandSpec::new(self.shell.as_str())
            .cwd(&self.work)
            .env("PATH", self.path_env.as_str())
            .env("HOME", self.work.as_str())
            .env("TMPDIR", self.tmp.as_str())
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("TERM", "dumb")
            .env("PAGER", "cat")
            .env("GIT_PAGER", "cat");
        for a in args {
            cmd = cmd.arg(a);
        }
        cmd
    }

    /// A launcher's spawn failure in this instance's terms: a missing work
    /// directory means the instance is gone.
    fn spawn_error(&self, err: Error) -> Error {
        let gone = err.kind() == ErrorKind::InvalidInput && !self.host_work.is_dir();
        let kind = if gone {
            ErrorKind::InstanceGone
        } else {
            err.kind()
        };
        Error::new(
            kind,
            format!("local instance {}: cannot start command", self.id),
        )
        .with_source(err)
    }

    /// Runs a foreground command; with `sink`, its output also goes there
    /// as it is read ([`crate::stream`]).
    pub(super) async fn exec_foreground(
        &self,
        spec: &ExecSpec,
        sink: Option<&OutputSink>,
    ) -> Result<ExecOutput> {
        let (stdout, out_w) = pipe().map_err(|e| io_error(e, self.what("stdout pipe")))?;
        let (stderr, err_w) = pipe().map_err(|e| io_error(e, self.what("stderr pipe")))?;
        let reader = |fd: OwnedFd| {
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| io_error(e, self.what("reading a pipe")))
        };
        let mut stdout = reader(stdout)?;
        let mut stderr = reader(stderr)?;
        let cmd = self
            .shell_command(["-c", spec.command.as_str()])
            .stdout(out_w)
            .stderr(err_w);
        let oom_before = self.oom_kills();
        let spawned = self
            .launcher
            .spawn(cmd)
            .await
            .map_err(|e| self.spawn_error(e))?;
        let exec_id = spawned.id;
        log::debug!(
            "task={} vm={} exec={exec_id} pid={} started",
            self.log_task,
            self.id,
            spawned.pid
        );
        let mut running = RunningCommand {
            launcher: Arc::clone(&self.launcher),
            id: exec_id,
            armed: true,
        };
        let mut exit = spawned.exit;
        let mut out = OutputCapture::new(spec.capture_bytes);
        let mut err = OutputCapture::new(spec.capture_bytes);
        let deadline = tokio::time::Instant::now().checked_add(spec.timeout);

        let (status, timed_out, drained) = {
            let reading = async {
                tokio::join!(
                    pump(&mut stdout, &mut out, sink.map(|s| (s, StreamKind::Stdout))),
                    pump(&mut stderr, &mut err, sink.map(|s| (s, StreamKind::Stderr)))
                );
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
                    status = &mut exit => break Some(status),
                    () = &mut timer => break None,
                    () = &mut reading, if !drained => drained = true,
                }
            };
            let (status, timed_out) = match waited {
                Some(status) => {
                    running.armed = false;
                    (Some(status), false)
                }
                None => {
                    log::info!(
                        "task={} vm={} exec={exec_id} timed out after {:?}; killing its processes",
                        self.log_task,
                        self.id,
                        spec.timeout
                    );
                    let killing = self.terminate(exec_id, &mut exit);
                    tokio::pin!(killing);
                    let status = loop {
                        tokio::select! {
                            status = &mut killing => break status,
                            () = &mut reading, if !drained => drained = true,
                        }
                    };
                    running.armed = false;
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
                Some(Err(e)) => return Err(e.context(format_args!("local instance {}", self.id))),
                None => TIMEOUT_EXIT_CODE,
            }
        };
        // Killed by SIGKILL while the sandbox's OOM-kill count grew: the
        // memory limit did it.
        let oom_killed = !timed_out
            && exit_code == 128 + libc::SIGKILL
            && matches!((oom_before, self.oom_kills()), (Some(b), Some(a)) if a > b);
        log::debug!(
            "task={} vm={} exec={exec_id} exit={exit_code} timed_out={timed_out} oom_killed={oom_killed}",
            self.log_task,
            self.id
        );
        Ok(ExecOutput {
            exit_code,
            stdout: out.finish(),
            stderr: err.finish(),
            timed_out,
            oom_killed,
            job: None,
        })
    }

    /// Ends a timed-out command: SIGTERM to its processes, up to the kill
    /// grace for its main process to go, then SIGKILL to everything it
    /// started (the launcher's kill: cgroup, descent, marker). Returns the
    /// main process's exit status if it was reported in time.
    async fn terminate(
        &self,
        exec_id: u64,
        exit: &mut crate::launcher::Exit,
    ) -> Option<Result<std::process::ExitStatus>> {
        let mut status = None;
        if !self.kill_grace.is_zero() && self.launcher.signal(exec_id, libc::SIGTERM).await.is_ok()
        {
            status = tokio::time::timeout(self.kill_grace, &mut *exit).await.ok();
        }
        match self.launcher.kill(exec_id).await {
            Ok(0) => {}
            Ok(left) => log::warn!(
                "task={} vm={} exec={exec_id} {left} processes survived SIGKILL",
                self.log_task,
                self.id
            ),
            Err(err) => log::warn!(
                "task={} vm={} exec={exec_id} kill failed: {err}",
                self.log_task,
                self.id
            ),
        }
        if status.is_none() {
            status = tokio::time::timeout(REAP_TIMEOUT, exit).await.ok();
            if status.is_none() {
                log::warn!(
                    "task={} vm={} exec={exec_id} main process not reported dead after SIGKILL",
                    self.log_task,
                    self.id
                );
            }
        }
        status
    }

    /// The sandbox's OOM-kill count, where it has a memory cgroup.
    fn oom_kills(&self) -> Option<u64> {
        self.launcher
            .sandbox()
            .and_then(crate::launcher::sandbox::oom_kills)
    }

    fn what(&self, what: &str) -> String {
        format!("local instance {}: {what}", self.id)
    }

    pub(super) async fn exec_background(&self, spec: &ExecSpec) -> Result<ExecOutput> {
        let job = {
            let mut st = self.state.borrow_mut();
            st.jobs += 1;
            st.jobs
        };
        if self.sandboxed {
            return self.exec_background_sandboxed(spec, job).await;
        }
        let log_path = self.jobs.join(format!("{job}.log"));
        let exit_path = self.jobs.join(format!("{job}.exit"));
        // A stale exit file (commands can write there) would make the job
        // look finished.
        match std::fs::remove_file(&exit_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error(e, self.what("removing old exit file")))
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
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&log_path)
                .map_err(|e| io_error(e, self.what("opening job log")))?
        };
        let log_err = log
            .try_clone()
            .map_err(|e| io_error(e, self.what("opening job log")))?;
        let exit_file = exit_path
            .to_str()
            .ok_or_else(|| Error::internal(self.what("job exit path is not UTF-8")))?;
        let cmd = self
            .shell_command([
                "-c",
                JOB_SCRIPT,
                "hecate-job",
                spec.command.as_str(),
                exit_file,
                self.shell.as_str(),
            ])
            .stdout(OwnedFd::from(log))
            .stderr(OwnedFd::from(log_err));
        let log_path = log_path.to_string_lossy().into_owned();
        let exit_path = exit_path.to_string_lossy().into_owned();
        self.start_job(spec, job, cmd, log_path, exit_path).await
    }

    /// A background job of a sandboxed instance: its log and exit file
    /// live in the sandbox's private `/tmp` ([`SANDBOX_JOBS`]), where the
    /// command (and the model) can read them.
    async fn exec_background_sandboxed(&self, spec: &ExecSpec, job: u64) -> Result<ExecOutput> {
        let log_path = format!("{SANDBOX_JOBS}/{job}.log");
        let exit_path = format!("{SANDBOX_JOBS}/{job}.exit");
        let cmd = self.shell_command([
            "-c",
            SANDBOX_JOB_SCRIPT,
            "hecate-job",
            spec.command.as_str(),
            exit_path.as_str(),
            self.shell.as_str(),
            log_path.as_str(),
        ]);
        self.start_job(spec, job, cmd, log_path, exit_path).await
    }

    /// Starts job `job` as `cmd` and reports it.
    async fn start_job(
        &self,
        spec: &ExecSpec,
        job: u64,
        cmd: CommandSpec,
        log_path: String,
        exit_path: String,
    ) -> Result<ExecOutput> {
        let spawned = self
            .launcher
            .spawn(cmd)
            .await
            .map_err(|e| self.spawn_error(e))?;
        let pid = spawned.pid;
        let log_prefix = format!("task={} vm={} job={job}", self.log_task, self.id);
        log::info!(
            "{log_prefix} exec={} pid={pid} started in the background",
            spawned.id
        );
        // The launcher reaps it; this only logs how it ended.
        let exit = spawned.exit;
        tokio::spawn(async move {
            match exit.await {
                Ok(status) => log::debug!("{log_prefix} ended: {status}"),
                Err(e) => log::debug!("{log_prefix} not waited for: {e}"),
            }
        });
        let line = format!("started background job {job} (pid {pid}); log: {log_path}\n");
        Ok(ExecOutput {
            exit_code: 0,
            stdout: Captured::from_text(&line, spec.capture_bytes),
            stderr: Captured::default(),
            timed_out: false,
            oom_killed: false,
            job: Some(JobInfo {
                id: job.to_string(),
                pid: Some(pid),
                log_file: log_path,
                exit_file: exit_path,
            }),
        })
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A running foreground command; if the exec future is dropped while it
/// runs (the call was abandoned), everything it started is killed.
struct RunningCommand {
    launcher: Arc<Launcher>,
    id: u64,
    armed: bool,
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let launcher = Arc::clone(&self.launcher);
        let id = self.id;
        // Drop cannot wait; the kill goes out on this thread's runtime. If
        // there is none, the runtime is going down and the launcher with it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(err) = launcher.kill(id).await {
                    log::debug!("exec={id} kill of an abandoned command failed: {err}");
                }
            });
        }
    }
}

/// Reads `src` to its end into `cap`, and into `sink` as it arrives.
async fn pump(
    src: &mut (impl AsyncRead + Unpin),
    cap: &mut OutputCapture,
    sink: Option<(&OutputSink, StreamKind)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                cap.push(&buf[..n]);
                if let Some((sink, stream)) = sink {
                    sink.push(stream, &buf[..n]);
                }
            }
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
