//! The launcher process itself (`hecate __launcher ...`): one thread, one
//! `poll` loop over the control socket and a signalfd, no tokio. It ties
//! its lifetime to the runtime (parent-death signal, end of the control
//! stream), adopts every orphan of its commands (child subreaper), reaps
//! them all, starts commands and kills them: by cgroup first, then by
//! descent from itself, then by marker.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use std::path::PathBuf;

use super::cgroup::InstanceCgroups;
use super::proto::{encode, Event, FrameBuf, Request, SpawnRequest, StdioSpec};
use super::{procs, sandbox, spawn, sys, CgroupMode, EXEC_MARKER, INSTANCE_MARKER};
use crate::shell::native::{self, SavedShell};

/// The signal the kernel sends when the runtime's spawning thread ends; the
/// launcher then checks whether the whole runtime is gone.
const PARENT_DEATH_SIGNAL: libc::c_int = libc::SIGUSR2;
/// Bound on descent and marker kill rounds (processes that keep forking).
const KILL_ROUNDS: usize = 400;
/// How many times a kill repeats its descent and marker rounds while the
/// previous pass still found something. A round that finds nothing may
/// have missed a process forked while it read `/proc`: `/proc` lists pids
/// in order, and a new pid wraps around below the listing's position
/// (pid_max is often 32768), so only a whole pass finding nothing new
/// ends the kill.
const CONFIRM_PASSES: usize = 10;
/// How long a kill waits for the processes it sent SIGKILL to finish
/// exiting before it counts them as survivors. A killed process leaves
/// the cgroup listing and loses its environment (the marker) before it
/// has finished exiting (freeing a large memory takes a while), so "no
/// longer found" is not yet "dead"; only a process stuck in the kernel
/// (uninterruptible I/O) takes this long.
const DEATH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the launcher knows about one command.
#[derive(Debug, Clone, Copy)]
struct Command {
    /// The main process until it is reaped (its pid is ours until then).
    main: Option<i32>,
    /// Its session id (the main pid: the child called setsid).
    sid: i32,
}

struct Server {
    sock: OwnedFd,
    signals: OwnedFd,
    parent: i32,
    me: i32,
    instance: String,
    cgroups: InstanceCgroups,
    commands: HashMap<u64, Command>,
    by_pid: HashMap<i32, u64>,
    fds: VecDeque<OwnedFd>,
    inbox: FrameBuf,
    /// Set when the runtime can no longer be written to.
    closed: bool,
    /// The working directory of a command that names none (the sandbox's
    /// workspace; `/` otherwise).
    default_cwd: Option<String>,
    /// The persistent shell's state: what the last foreground command that
    /// saved left ([`crate::shell::native`]).
    shell: Option<SavedShell>,
    /// Commands that save the shell state when they exit: their dump file
    /// and the secret patterns to apply.
    dumps: HashMap<u64, (PathBuf, Vec<String>)>,
}

/// The arguments after `__launcher`: instance id, runtime pid, cgroup mode.
fn parse_args(args: &[OsString]) -> Option<(String, i32, CgroupMode)> {
    let instance = args.first()?.to_str()?.to_string();
    let parent = args.get(1)?.to_str()?.parse().ok()?;
    let mode = CgroupMode::parse(args.get(2)?.to_str()?)?;
    super::valid_instance_id(&instance).then_some((instance, parent, mode))
}

/// Runs the launcher; returns its exit code.
pub(crate) fn main(args: Vec<OsString>) -> i32 {
    let Some((instance, parent, mode)) = parse_args(&args) else {
        eprintln!("hecate-launcher: usage: __launcher <instance id> <runtime pid> <cgroups>");
        return 2;
    };
    // Die with the runtime; if it died before this took effect we were
    // already reparented and must not run at all.
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL as libc::c_ulong);
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        return 1;
    }
    // Not dumpable: a command (same uid, no CAP_SYS_PTRACE) cannot ptrace
    // the launcher, which keeps the capabilities the commands lose.
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    if let Err(err) = sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) {
        eprintln!("hecate-launcher: cannot become a subreaper ({err})");
        return 1;
    }
    // The control socket arrives as stdin: move it to a close-on-exec
    // descriptor and put /dev/null in its place.
    // SAFETY: fd 0 is ours; F_DUPFD_CLOEXEC returns a new descriptor we own.
    let sock = unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            eprintln!("hecate-launcher: no control socket");
            return 1;
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null > 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        OwnedFd::from_raw_fd(fd)
    };
    if let Err(err) = sys::cloexec_inherited() {
        eprintln!("hecate-launcher: cannot close inherited descriptors ({err})");
        return 1;
    }
    let signals = match sys::signalfd(&[
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        PARENT_DEATH_SIGNAL,
    ]) {
        Ok(fd) => fd,
        Err(err) => {
            eprintln!("hecate-launcher: signalfd ({err})");
            return 1;
        }
    };
    let mut cgroups = InstanceCgroups::setup(mode, &instance);
    let labels = cgroups.labels();
    let mut sandbox_report = None;
    if let Some(arg) = args.get(3) {
        // The sandbox hook: returns here only as PID 1 of the sandbox,
        // whose commands are tracked by descent (the instance cgroups stay
        // with the outer launcher, in the host's namespaces).
        let entered = match arg.to_str().and_then(sandbox::SandboxSpec::from_arg) {
            Some(spec) => sandbox::enter(&spec, &instance, &cgroups, sock.as_raw_fd()),
            None => Err("malformed sandbox argument".to_string()),
        };
        match entered {
            Ok(report) => {
                sandbox_report = Some(report);
                cgroups = InstanceCgroups::default();
            }
            Err(reason) => {
                let _ = cgroups.remove_instance();
                sandbox::reject(sock.as_raw_fd(), reason);
                return 1;
            }
        }
    }
    let default_cwd = sandbox_report
        .is_some()
        .then(|| sandbox::WORKSPACE.to_string());
    let mut server = Server {
        sock,
        signals,
        parent,
        me: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        instance,
        cgroups,
        commands: HashMap::new(),
        by_pid: HashMap::new(),
        fds: VecDeque::new(),
        inbox: FrameBuf::default(),
        closed: false,
        default_cwd,
        shell: None,
        dumps: HashMap::new(),
    };
    let ready = Event::Ready {
        pid: server.me,
        cgroups: labels,
        sandbox: sandbox_report,
    };
    server.send(&ready);
    server.run();
    0
}

impl Server {
    fn run(&mut self) {
        loop {
            if self.closed {
                self.shutdown();
                return;
            }
            let revents = match sys::poll(&[self.sock.as_raw_fd(), self.signals.as_raw_fd()], -1) {
                Ok(r) => r,
                Err(err) => {
                    eprintln!("hecate-launcher: poll ({err})");
                    self.shutdown();
                    return;
                }
            };
            if revents[1] != 0 {
                for sig in sys::drain_signalfd(&self.signals) {
                    let sig = sig as libc::c_int;
                    if sig == libc::SIGCHLD {
                        continue;
                    }
                    // The runtime's spawning thread may end while the
                    // runtime lives on (we are then reparented to another
                    // of its threads, same pid): only a new parent counts.
                    // SAFETY: getppid cannot fail.
                    if sig == PARENT_DEATH_SIGNAL && unsafe { libc::getppid() } == self.parent {
                        continue;
                    }
                    self.shutdown();
                    return;
                }
                self.reap();
            }
            if revents[0] != 0 && self.read_requests() {
                return;
            }
        }
    }

    /// Reads what is available and handles every complete request; true
    /// when the launcher is done (stopped, or the runtime went away).
    fn read_requests(&mut self) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut fds = Vec::new();
            match sys::recv_with_fds(self.sock.as_raw_fd(), &mut buf, &mut fds) {
                Ok(0) => {
                    // End of stream: the runtime closed or died.
                    self.closed = true;
                    self.shutdown();
                    return true;
                }
                Ok(n) => {
                    self.fds.extend(fds);
                    self.inbox.push(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    eprintln!("hecate-launcher: control socket ({err})");
                    self.closed = true;
                    self.shutdown();
                    return true;
                }
            }
        }
        loop {
            match self.inbox.next_frame::<Request>() {
                Ok(Some(req)) => {
                    if self.handle(req) {
                        return true;
                    }
                }
                Ok(None) => return false,
                Err(err) => {
                    // The stream cannot be resynchronised: stop cleanly.
                    self.send(&Event::Rejected {
                        reason: err.to_string(),
                    });
                    self.shutdown();
                    return true;
                }
            }
        }
    }

    fn handle(&mut self, req: Request) -> bool {
        match req {
            Request::Spawn(spawn) => self.spawn(spawn),
            Request::Kill { id, signal } => {
                let remaining = self.kill_command(id, signal);
                self.send(&Event::Killed { id, remaining });
            }
            Request::KillAll { signal } => {
                let remaining = self.kill_all(signal);
                for id in self.commands.keys().copied().collect::<Vec<_>>() {
                    self.forget_if_done(id);
                }
                self.send(&Event::KilledAll { remaining });
            }
            Request::Stop => {
                let remaining = self.shutdown();
                self.send(&Event::Stopped { remaining });
                return true;
            }
        }
        false
    }

    fn exec_marker(&self, id: u64) -> String {
        format!(
            "{EXEC_MARKER}={}",
            super::exec_marker_value(&self.instance, id)
        )
    }

    fn spawn(&mut self, mut req: SpawnRequest) {
        if req.cwd.is_none() {
            req.cwd = self.default_cwd.clone();
        }
        let id = req.id;
        let mut take = |spec: StdioSpec| match spec {
            StdioSpec::Null => Ok(None),
            StdioSpec::Fd => self.fds.pop_front().map(Some).ok_or(()),
        };
        let (stdout, stderr) = match (take(req.stdout), take(req.stderr)) {
            (Ok(o), Ok(e)) => (o, e),
            _ => {
                self.send(&Event::SpawnFailed {
                    id,
                    errno: libc::EBADF,
                    stage: "stdio".into(),
                });
                return;
            }
        };
        if self.commands.contains_key(&id) {
            self.send(&Event::SpawnFailed {
                id,
                errno: libc::EEXIST,
                stage: "id".into(),
            });
            return;
        }
        let joins = match self.cgroups.create_command(id) {
            Ok(j) => j,
            Err(err) => {
                self.send(&Event::SpawnFailed {
                    id,
                    errno: err.raw_os_error().unwrap_or(libc::EIO),
                    stage: "cgroup".into(),
                });
                return;
            }
        };
        let markers = [
            format!("{INSTANCE_MARKER}={}", self.instance),
            self.exec_marker(id),
        ];
        let restore = self.persist(&mut req);
        match spawn::spawn(&req, stdout, stderr, &joins, &markers, restore.as_ref()) {
            Ok(pid) => {
                self.commands.insert(
                    id,
                    Command {
                        main: Some(pid),
                        sid: pid,
                    },
                );
                self.by_pid.insert(pid, id);
                self.send(&Event::Spawned { id, pid });
            }
            Err(err) => {
                self.cgroups.remove_command(id);
                if let Some((dump, _)) = self.dumps.remove(&id) {
                    let _ = std::fs::remove_file(dump);
                }
                self.send(&Event::SpawnFailed {
                    id,
                    errno: err.errno,
                    stage: err.stage.into(),
                });
            }
        }
    }

    /// Applies the persistent shell of a request: the restore (environment
    /// and directory) to start it with, and for a saving `bash -c COMMAND`
    /// its text wrapped to dump the state when it exits.
    fn persist(&mut self, req: &mut SpawnRequest) -> Option<spawn::Restore> {
        let op = req.shell.take()?;
        let restore = self.shell.as_ref().map(|saved| spawn::Restore {
            env: native::restored_env(saved, &req.env, &op.secret_patterns),
            cwd: saved.cwd.clone(),
        });
        if op.save && req.argv.len() == 3 && req.argv[1] == "-c" {
            let tmp = req
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "TMPDIR")
                .map_or("/tmp", |(_, v)| v.as_str());
            let dump = PathBuf::from(format!("{tmp}/.hecate-shell-{}-{}", self.me, req.id));
            // A file of that name (a leftover, or one planted) would make
            // the save fail (noclobber); remove it, never following a link.
            let _ = std::fs::remove_file(&dump);
            if let Some(path) = dump.to_str() {
                req.argv[2] = native::wrap(&req.argv[2], path);
                self.dumps.insert(req.id, (dump, op.secret_patterns));
            }
        }
        restore
    }

    /// Reads the state dump of command `id`'s bash, if it saves one, and
    /// keeps it when it is complete; the file is removed either way.
    fn keep_shell_state(&mut self, id: u64) {
        let Some((dump, patterns)) = self.dumps.remove(&id) else {
            return;
        };
        if let Some(bytes) = read_dump(&dump) {
            if let Some(saved) = native::parse_dump(&bytes, &patterns) {
                self.shell = Some(saved);
            }
        }
        let _ = std::fs::remove_file(&dump);
    }

    /// Reaps every dead child; a command's main process ending is reported.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child of ours.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let Some(id) = self.by_pid.remove(&pid) else {
                continue;
            };
            if let Some(cmd) = self.commands.get_mut(&id) {
                cmd.main = None;
            }
            // The state is taken before the exit is reported: the
            // runtime's next command comes after it.
            self.keep_shell_state(id);
            self.send(&Event::Exited { id, status });
            self.forget_if_done(id);
        }
    }

    /// Drops a command whose main process was reaped once its cgroup is
    /// empty and removed. Without cgroups it is kept: its session is how a
    /// later kill finds what it left running.
    fn forget_if_done(&mut self, id: u64) {
        let Some(cmd) = self.commands.get(&id) else {
            return;
        };
        if cmd.main.is_none()
            && !self.cgroups.is_empty()
            && self.cgroups.command_procs(id).is_empty()
            && self.cgroups.remove_command(id)
        {
            self.commands.remove(&id);
        }
    }

    /// Sends `signal` to `pids`; for SIGKILL repeats `find` until it comes
    /// back empty or the rounds run out. Returns what is left; every pid
    /// signalled is added to `signalled`.
    fn kill_rounds(
        &mut self,
        signal: i32,
        signalled: &mut BTreeSet<i32>,
        find: &dyn Fn(&Server) -> Vec<i32>,
    ) -> Vec<i32> {
        let rounds = if signal == libc::SIGKILL {
            KILL_ROUNDS
        } else {
            1
        };
        let mut left = Vec::new();
        for _ in 0..rounds {
            left = find(self);
            if left.is_empty() {
                break;
            }
            for pid in &left {
                // SAFETY: no memory effects; every pid comes from our tree,
                // our session or our marker.
                unsafe { libc::kill(*pid, signal) };
            }
            signalled.extend(left.iter().copied());
            if signal != libc::SIGKILL {
                break;
            }
            self.reap();
            std::thread::sleep(std::time::Duration::from_micros(200));
            self.reap();
        }
        left
    }

    /// Kills everything command `id` started: cgroup, then descent, then
    /// marker. Returns how many of its processes are still alive.
    fn kill_command(&mut self, id: u64, signal: i32) -> u32 {
        let cgroups = self.cgroups.clone();
        let mut signalled = BTreeSet::new();
        let left = cgroups.kill_command(id, signal, &mut signalled, &mut || self.reap());
        let sid = self.commands.get(&id).map(|c| c.sid);
        let marker = self.exec_marker(id);
        let tree = move |s: &Server| -> Vec<i32> {
            // Re-read each round: once reaped, the main pid is not ours.
            let main = s.commands.get(&id).and_then(|c| c.main);
            sid.map_or_else(Vec::new, |sid| {
                procs::command_tree(&procs::snapshot(), s.me, main, sid)
                    .into_iter()
                    .collect()
            })
        };
        let left = self.kill_passes(signal, signalled, left, &tree, &marker);
        if signal == libc::SIGKILL && left.is_empty() {
            self.cgroups.remove_command(id);
            if self.commands.get(&id).is_some_and(|c| c.main.is_none()) {
                self.commands.remove(&id);
            }
        }
        u32::try_from(left.len()).unwrap_or(u32::MAX)
    }

    /// Kills every process of every command: cgroups, then every descendant
    /// of the launcher (orphans included), then the instance marker.
    fn kill_all(&mut self, signal: i32) -> u32 {
        let cgroups = self.cgroups.clone();
        let mut signalled = BTreeSet::new();
        let left = cgroups.kill_all(signal, &mut signalled, &mut || self.reap());
        let marker = format!("{INSTANCE_MARKER}={}", self.instance);
        let tree = |s: &Server| -> Vec<i32> {
            procs::descendants(&procs::snapshot(), s.me)
                .into_iter()
                .collect()
        };
        let left = self.kill_passes(signal, signalled, left, &tree, &marker);
        u32::try_from(left.len()).unwrap_or(u32::MAX)
    }

    /// The passes after a cgroup kill: by descent (`tree`), then by
    /// `marker` (an environment entry), repeated while a pass finds someone
    /// new (SIGKILL only: a `/proc` listing can miss pids that wrapped
    /// around); for SIGKILL, then waits for every signalled process to die
    /// and looks once more, starting over while anyone is still found (up
    /// to [`DEATH_LIMIT`]). Returns the pids still alive.
    fn kill_passes(
        &mut self,
        signal: i32,
        mut signalled: BTreeSet<i32>,
        mut left: Vec<i32>,
        tree: &dyn Fn(&Server) -> Vec<i32>,
        marker: &str,
    ) -> Vec<i32> {
        let by_marker = |s: &Server| procs::with_marker(marker.as_bytes(), s.me);
        let deadline = std::time::Instant::now() + DEATH_LIMIT;
        loop {
            for _ in 0..CONFIRM_PASSES {
                let before = signalled.len();
                left.extend(self.kill_rounds(signal, &mut signalled, tree));
                left.extend(self.kill_rounds(signal, &mut signalled, &by_marker));
                if signal != libc::SIGKILL || signalled.len() == before {
                    break;
                }
            }
            if signal != libc::SIGKILL {
                break;
            }
            left.extend(self.await_deaths(std::mem::take(&mut signalled)));
            // A last look: a listing can miss a process forked while it was
            // read, twice in a row on a busy machine; anyone still found
            // starts the passes again, until the deadline.
            self.reap();
            let mut found = tree(self);
            found.extend(by_marker(self));
            found.retain(|pid| procs::alive(*pid));
            if found.is_empty() || std::time::Instant::now() >= deadline {
                break;
            }
        }
        self.reap();
        left.sort_unstable();
        left.dedup();
        left.retain(|pid| procs::alive(*pid));
        left
    }

    /// Waits (bounded by [`DEATH_LIMIT`], reaping meanwhile) until every
    /// process in `signalled` (each sent SIGKILL) has died; returns those
    /// still alive then. A pid seen dead once is dropped for good, so a
    /// reuse of it later does not count.
    fn await_deaths(&mut self, mut signalled: BTreeSet<i32>) -> Vec<i32> {
        let deadline = std::time::Instant::now() + DEATH_LIMIT;
        loop {
            self.reap();
            signalled.retain(|pid| procs::alive(*pid));
            if signalled.is_empty() || std::time::Instant::now() >= deadline {
                return signalled.into_iter().collect();
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Kills everything and removes the instance's cgroups; returns how
    /// many processes survived.
    fn shutdown(&mut self) -> u32 {
        let remaining = self.kill_all(libc::SIGKILL);
        for id in self.commands.keys().copied().collect::<Vec<_>>() {
            self.cgroups.remove_command(id);
        }
        if !self.cgroups.remove_instance() {
            eprintln!("hecate-launcher: instance cgroups could not all be removed");
        }
        remaining
    }

    /// Writes one event; a failed write means the runtime is gone.
    fn send(&mut self, event: &Event) {
        if self.closed {
            return;
        }
        let frame = match encode(event) {
            Ok(f) => f,
            Err(err) => {
                eprintln!("hecate-launcher: cannot encode an event ({err})");
                return;
            }
        };
        let mut sent = 0;
        while sent < frame.len() {
            // SAFETY: sending from a live buffer; MSG_NOSIGNAL turns a
            // closed peer into EPIPE instead of a signal.
            let n = unsafe {
                libc::send(
                    self.sock.as_raw_fd(),
                    frame[sent..].as_ptr().cast(),
                    frame.len() - sent,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                self.closed = true;
                return;
            }
            sent += n as usize;
        }
    }
}

/// The bytes of a state dump: a regular file, not a link, at most
/// [`native::MAX_DUMP_BYTES`].
fn read_dump(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > native::MAX_DUMP_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(native::MAX_DUMP_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}
