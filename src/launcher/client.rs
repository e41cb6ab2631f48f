//! The runtime's side: [`Launcher`] starts the launcher process and talks
//! to it through one connection task that owns the control socket, the
//! launcher's `Child`, and the waiters for every answer and exit.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::os::unix::process::ExitStatusExt;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::command::{CommandSpec, Exit, Spawned};
use super::proto::{encode, Event, FrameBuf, Request, SpawnRequest, StdioSpec};
use super::sandbox::SandboxReport;
use super::{sys, valid_instance_id, LauncherConfig, LAUNCHER_ARG, LAUNCHER_ENV};
use crate::{Error, ErrorKind, Result};

/// How long the connection task waits for the launcher to exit after its
/// control stream ended before killing it.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The kind of a failed system call: running out of processes, memory or
/// descriptors is transient (a retry after others finished may succeed),
/// anything else is `otherwise`.
pub(crate) fn errno_kind(err: &std::io::Error, otherwise: ErrorKind) -> ErrorKind {
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE) => ErrorKind::Transient,
        _ => otherwise,
    }
}

pub(super) fn gone() -> Error {
    Error::new(ErrorKind::InstanceGone, "the local launcher exited")
}

type Reply<T> = oneshot::Sender<Result<T>>;

/// A request from the handle to the connection task.
enum Call {
    Spawn {
        req: SpawnRequest,
        fds: Vec<OwnedFd>,
        reply: Reply<(u32, Exit)>,
    },
    Kill {
        id: u64,
        signal: i32,
        reply: Reply<u32>,
    },
    KillAll {
        signal: i32,
        reply: Reply<u32>,
    },
    Stop {
        reply: Reply<u32>,
    },
}

/// The runtime's handle on one instance's launcher process. Dropping it
/// closes the control socket: the launcher then kills everything it
/// started and exits. Methods take `&self`; wrap it in an `Rc`/`Arc` to
/// share it.
#[derive(Debug)]
pub struct Launcher {
    calls: mpsc::UnboundedSender<Call>,
    pid: u32,
    instance: String,
    cgroups: Vec<String>,
    sandbox: Option<SandboxReport>,
    next_id: AtomicU64,
    reply_timeout: Duration,
}

impl Launcher {
    /// Starts the launcher for instance `instance_id` (letters, digits,
    /// `.`, `_`, `-`; at most 64 bytes: it names cgroup directories) and
    /// waits for it to be ready, at most `config.reply_timeout`. It is
    /// spawned on std's fast path: absolute program, empty environment,
    /// its own process group, the control socket as its stdin.
    pub async fn start(config: &LauncherConfig, instance_id: &str) -> Result<Launcher> {
        if !valid_instance_id(instance_id) {
            return Err(Error::invalid_input(format!(
                "launcher: instance id {instance_id:?} is not a valid cgroup name"
            )));
        }
        let program = config.resolve_program()?;
        let (ours, theirs) = sys::socketpair().map_err(|e| {
            Error::new(
                errno_kind(&e, ErrorKind::Internal),
                "launcher: socketpair failed",
            )
            .with_source(e)
        })?;
        let mut cmd = std::process::Command::new(&program);
        cmd.arg(LAUNCHER_ARG)
            .arg(instance_id)
            .arg(std::process::id().to_string())
            .arg(config.cgroups.as_str())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(spec) = &config.sandbox {
            cmd.arg(spec.to_arg());
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = tokio::process::Command::from(cmd).spawn().map_err(|e| {
            let kind = errno_kind(&e, ErrorKind::Config);
            let hint = if kind == ErrorKind::Config {
                format!(
                    " (point {LAUNCHER_ENV} or the launcher program setting at a `hecate` \
                     binary, or call hecate::launcher::run_if_requested() first in main)"
                )
            } else {
                String::new()
            };
            Error::new(
                kind,
                format!("launcher: cannot start {}{hint}", program.display()),
            )
            .with_source(e)
        })?;
        let pid = child.id().unwrap_or(0);
        let std_stream = std::os::unix::net::UnixStream::from(ours);
        std_stream
            .set_nonblocking(true)
            .map_err(|e| Error::internal("launcher: socket").with_source(e))?;
        let stream = UnixStream::from_std(std_stream)
            .map_err(|e| Error::internal("launcher: socket").with_source(e))?;
        let mut inbox = FrameBuf::default();
        let ready = tokio::time::timeout(config.reply_timeout, read_event(&stream, &mut inbox))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "launcher: not ready within {:?} ({})",
                        config.reply_timeout,
                        program.display()
                    ),
                )
            })??;
        let (cgroups, sandbox) = match ready {
            Event::Ready {
                cgroups, sandbox, ..
            } => (cgroups, sandbox),
            // The launcher refuses to start only when its sandbox cannot be
            // made here.
            Event::Rejected { reason } => {
                return Err(Error::config(format!("launcher: {reason}")));
            }
            other => {
                return Err(Error::protocol(format!(
                    "launcher: expected ready, got {other:?}"
                )));
            }
        };
        let (calls, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            stream,
            child,
            inbox,
            calls: rx,
            spawns: HashMap::new(),
            exits: HashMap::new(),
            kills: HashMap::new(),
            kill_alls: VecDeque::new(),
            stops: Vec::new(),
            stopped: None,
            outq: VecDeque::new(),
        };
        tokio::spawn(conn.run());
        log::debug!("instance={instance_id} launcher pid={pid} cgroups={cgroups:?}");
        Ok(Launcher {
            calls,
            pid,
            instance: instance_id.to_string(),
            cgroups,
            sandbox,
            next_id: AtomicU64::new(1),
            reply_timeout: config.reply_timeout,
        })
    }

    /// The launcher's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The instance id it was started for.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// The cgroups the launcher tracks commands with (`v2:<dir>`,
    /// `v1-freezer:<dir>`, `v1-pids:<dir>`); empty when it runs without
    /// (then commands are tracked by descent and markers only).
    pub fn cgroups(&self) -> &[String] {
        &self.cgroups
    }

    /// What the sandbox applied ([`LauncherConfig::sandbox`]); `None`
    /// without one.
    pub fn sandbox(&self) -> Option<&SandboxReport> {
        self.sandbox.as_ref()
    }

    async fn call<T>(&self, what: &str, make: impl FnOnce(Reply<T>) -> Call) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.calls.send(make(tx)).map_err(|_| gone())?;
        match tokio::time::timeout(self.reply_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "launcher: no answer to {what} within {:?}",
                    self.reply_timeout
                ),
            )),
        }
    }

    /// Starts a command; returns once its main process runs (or failed to:
    /// then an error of kind `InvalidInput` for a missing program, bad
    /// directory or argument, `Internal` otherwise, naming the step).
    /// Dropped before it returns, or timing out, it has the launcher kill
    /// the command: a started command always has an owner.
    pub async fn spawn(&self, spec: CommandSpec) -> Result<Spawned> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut argv = vec![spec.arg0.unwrap_or_else(|| spec.program.clone())];
        argv.extend(spec.args);
        let cwd = match spec.cwd {
            Some(dir) => Some(dir.into_os_string().into_string().map_err(|_| {
                Error::invalid_input("launcher: the working directory is not UTF-8")
            })?),
            None => None,
        };
        let stdio = |fd: &Option<OwnedFd>| {
            if fd.is_some() {
                StdioSpec::Fd
            } else {
                StdioSpec::Null
            }
        };
        let req = SpawnRequest {
            id,
            program: spec.program,
            argv,
            env: spec.env,
            cwd,
            stdout: stdio(&spec.stdout),
            stderr: stdio(&spec.stderr),
            shell: spec.persist,
        };
        let fds: Vec<OwnedFd> = spec.stdout.into_iter().chain(spec.stderr).collect();
        // From here until the caller holds the answer, this future is the
        // only owner of the command: dropped in between (its caller gave
        // up), the guard kills whatever the launcher started.
        let mut guard = Unclaimed {
            calls: &self.calls,
            id,
            armed: true,
        };
        let answer = self
            .call("spawn", |reply| Call::Spawn { req, fds, reply })
            .await;
        // An answer (started, or failed to) hands the command to the caller;
        // no answer in time leaves it to the guard.
        guard.armed = matches!(&answer, Err(e) if e.kind() == ErrorKind::Timeout);
        let (pid, exit) = answer?;
        Ok(Spawned { id, pid, exit })
    }

    /// Kills (SIGKILL) every process command `id` started, wherever it
    /// went; returns how many survived (0 unless something defeats every
    /// layer, see the module doc).
    pub async fn kill(&self, id: u64) -> Result<u32> {
        self.signal(id, libc::SIGKILL).await
    }

    /// Sends `signal` to every process of command `id` once (SIGKILL takes
    /// [`Launcher::kill`]'s thorough path); returns how many are alive.
    pub async fn signal(&self, id: u64, signal: i32) -> Result<u32> {
        self.call("kill", |reply| Call::Kill { id, signal, reply })
            .await
    }

    /// Kills every process of every command; the launcher keeps running.
    pub async fn kill_all(&self) -> Result<u32> {
        self.call("kill_all", |reply| Call::KillAll {
            signal: libc::SIGKILL,
            reply,
        })
        .await
    }

    /// Kills everything, removes the instance's cgroups, and waits for the
    /// launcher to exit (and reaps it). Returns how many processes
    /// survived.
    pub async fn stop(&self) -> Result<u32> {
        self.call("stop", |reply| Call::Stop { reply }).await
    }
}

/// A spawn whose answer nobody has taken yet. Dropped armed (the spawn
/// future was dropped before it returned, or gave up waiting), it asks the
/// launcher to kill the command: the request goes out after the spawn's on
/// the same ordered channel, so it reaches the command whether the
/// launcher started it already, starts it next, or failed to.
struct Unclaimed<'a> {
    calls: &'a mpsc::UnboundedSender<Call>,
    id: u64,
    armed: bool,
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        log::debug!(
            "launcher: spawn {} abandoned before its answer was taken; killing it",
            self.id
        );
        // Nobody waits for this answer; the connection task drops it.
        let (reply, _) = oneshot::channel();
        let _ = self.calls.send(Call::Kill {
            id: self.id,
            signal: libc::SIGKILL,
            reply,
        });
    }
}

/// Reads until one event is complete.
async fn read_event(stream: &UnixStream, inbox: &mut FrameBuf) -> Result<Event> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(ev) = inbox
            .next_frame::<Event>()
            .map_err(|e| Error::protocol(format!("launcher: {e}")))?
        {
            return Ok(ev);
        }
        stream
            .readable()
            .await
            .map_err(|e| Error::internal("launcher: socket").with_source(e))?;
        match stream.try_read(&mut buf) {
            Ok(0) => return Err(gone()),
            Ok(n) => inbox.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Error::internal("launcher: socket").with_source(e)),
        }
    }
}

/// One frame on its way out; its descriptors go with its first byte.
struct Outgoing {
    frame: Vec<u8>,
    sent: usize,
    fds: Vec<OwnedFd>,
}

/// The connection task's state: the socket, the launcher process, and who
/// waits for what.
struct Conn {
    stream: UnixStream,
    child: tokio::process::Child,
    inbox: FrameBuf,
    calls: mpsc::UnboundedReceiver<Call>,
    spawns: HashMap<u64, Reply<(u32, Exit)>>,
    exits: HashMap<u64, oneshot::Sender<Result<ExitStatus>>>,
    kills: HashMap<u64, VecDeque<Reply<u32>>>,
    kill_alls: VecDeque<Reply<u32>>,
    stops: Vec<Reply<u32>>,
    /// The launcher's answer to a stop, delivered once it has exited.
    stopped: Option<u32>,
    outq: VecDeque<Outgoing>,
}

impl Conn {
    async fn run(mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                ready = self.stream.readable() => {
                    if ready.is_err() {
                        break;
                    }
                    match self.stream.try_read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            self.inbox.push(&buf[..n]);
                            if !self.dispatch() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
                call = self.calls.recv() => match call {
                    Some(call) => self.queue(call),
                    // The handle was dropped: close the socket, which tells
                    // the launcher to kill everything and exit.
                    None => break,
                },
                ready = self.stream.writable(), if !self.outq.is_empty() => {
                    if ready.is_err() || !self.write_some() {
                        break;
                    }
                }
            }
        }
        let Conn {
            stream,
            mut child,
            spawns,
            exits,
            kills,
            kill_alls,
            stops,
            stopped,
            ..
        } = self;
        drop(stream);
        if tokio::time::timeout(EXIT_GRACE, child.wait())
            .await
            .is_err()
        {
            log::warn!("local launcher did not exit after its control stream closed; killing it");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        for (_, reply) in spawns {
            let _ = reply.send(Err(gone()));
        }
        for (_, exit) in exits {
            let _ = exit.send(Err(gone()));
        }
        for reply in kills.into_values().flatten().chain(kill_alls) {
            let _ = reply.send(Err(gone()));
        }
        for reply in stops {
            let _ = reply.send(stopped.ok_or_else(gone));
        }
    }

    fn queue(&mut self, call: Call) {
        let (req, fds) = match call {
            Call::Spawn { req, fds, reply } => {
                self.spawns.insert(req.id, reply);
                (Request::Spawn(req), fds)
            }
            Call::Kill { id, signal, reply } => {
                self.kills.entry(id).or_default().push_back(reply);
                (Request::Kill { id, signal }, Vec::new())
            }
            Call::KillAll { signal, reply } => {
                self.kill_alls.push_back(reply);
                (Request::KillAll { signal }, Vec::new())
            }
            Call::Stop { reply } => {
                self.stops.push(reply);
                (Request::Stop, Vec::new())
            }
        };
        match encode(&req) {
            Ok(frame) => self.outq.push_back(Outgoing {
                frame,
                sent: 0,
                fds,
            }),
            Err(err) => {
                // Only a spawn can be too large; answer it here.
                if let Request::Spawn(req) = req {
                    if let Some(reply) = self.spawns.remove(&req.id) {
                        let _ = reply.send(Err(Error::invalid_input(format!(
                            "launcher: command too large ({err})"
                        ))));
                    }
                }
            }
        }
    }

    /// Writes as much of the queue as the socket takes; false if it broke.
    fn write_some(&mut self) -> bool {
        while let Some(out) = self.outq.front_mut() {
            let raw: Vec<RawFd> = out.fds.iter().map(AsRawFd::as_raw_fd).collect();
            let fd = self.stream.as_raw_fd();
            let res = self.stream.try_io(Interest::WRITABLE, || {
                sys::send_with_fds(fd, &out.frame[out.sent..], &raw)
            });
            match res {
                Ok(n) => {
                    // The descriptors are in flight with the first byte.
                    out.fds.clear();
                    out.sent += n;
                    if out.sent == out.frame.len() {
                        self.outq.pop_front();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Routes every complete event to its waiter; false on a protocol
    /// error (the stream cannot be trusted any more).
    fn dispatch(&mut self) -> bool {
        loop {
            let ev = match self.inbox.next_frame::<Event>() {
                Ok(Some(ev)) => ev,
                Ok(None) => return true,
                Err(err) => {
                    log::error!("local launcher: {err}");
                    return false;
                }
            };
            match ev {
                Event::Spawned { id, pid } => {
                    if let Some(reply) = self.spawns.remove(&id) {
                        let (tx, rx) = oneshot::channel();
                        self.exits.insert(id, tx);
                        let pid = u32::try_from(pid).unwrap_or(0);
                        let _ = reply.send(Ok((pid, Exit(rx))));
                    }
                }
                Event::SpawnFailed { id, errno, stage } => {
                    if let Some(reply) = self.spawns.remove(&id) {
                        let err = std::io::Error::from_raw_os_error(errno);
                        let kind = match (stage.as_str(), errno) {
                            // Out of processes, memory or descriptors: a
                            // later try may succeed.
                            (_, libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE) => {
                                ErrorKind::Transient
                            }
                            ("program" | "exec" | "chdir" | "argv", _) => ErrorKind::InvalidInput,
                            _ => ErrorKind::Internal,
                        };
                        let _ = reply.send(Err(Error::new(
                            kind,
                            format!("launcher: spawn failed at {stage}: {err}"),
                        )));
                    }
                }
                Event::Exited { id, status } => {
                    if let Some(exit) = self.exits.remove(&id) {
                        let _ = exit.send(Ok(ExitStatus::from_raw(status)));
                    }
                }
                Event::Killed { id, remaining } => {
                    let queue = self.kills.get_mut(&id);
                    if let Some(reply) = queue.and_then(VecDeque::pop_front) {
                        let _ = reply.send(Ok(remaining));
                    }
                    if self.kills.get(&id).is_some_and(VecDeque::is_empty) {
                        self.kills.remove(&id);
                    }
                }
                Event::KilledAll { remaining } => {
                    if let Some(reply) = self.kill_alls.pop_front() {
                        let _ = reply.send(Ok(remaining));
                    }
                }
                Event::Stopped { remaining } => self.stopped = Some(remaining),
                Event::Ready { .. } => {}
                Event::Rejected { reason } => {
                    log::error!("local launcher rejected a request: {reason}");
                }
            }
        }
    }
}
