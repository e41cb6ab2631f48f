//! Starting one command inside the launcher: everything is prepared
//! before the child is cloned (C strings, the program's path, the cgroup
//! files), then the child puts itself in its own session and cgroups,
//! takes its stdio, gives up the dangerous capabilities, sets
//! `no_new_privs` and execs. A close-on-exec pipe carries `(stage, errno)`
//! back if any step fails.
//!
//! The child is cloned vfork-style (`CLONE_VM | CLONE_VFORK`, on a stack of
//! its own): it shares the launcher's memory until it execs, so no page
//! tables are copied and nothing is copied on write; that halved the
//! launcher's cost per command compared with `fork`. It is safe because
//! the launcher is single-threaded and suspended until the child execs or
//! exits, and the child only makes system calls on data prepared before.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::proto::SpawnRequest;
use super::sys;

/// Why a spawn failed: the step, and the OS error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnError {
    /// `program`, `argv`, `cgroup`, `fork`, `setsid`, `stdio`, `chdir`,
    /// `capabilities`, `no_new_privs` or `exec`.
    pub stage: &'static str,
    /// The errno.
    pub errno: i32,
}

const STAGES: [&str; 10] = [
    "program",
    "argv",
    "cgroup",
    "fork",
    "setsid",
    "stdio",
    "chdir",
    "capabilities",
    "no_new_privs",
    "exec",
];

fn stage_code(stage: &str) -> u32 {
    STAGES.iter().position(|s| *s == stage).unwrap_or(0) as u32
}

impl SpawnError {
    fn new(stage: &'static str, errno: i32) -> Self {
        SpawnError { stage, errno }
    }
    fn io(stage: &'static str, err: &io::Error) -> Self {
        SpawnError::new(stage, err.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// The command's `PATH`, or the usual default.
fn path_of(env: &[(String, String)]) -> &str {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin")
}

/// The program's path: as given if it has a slash, otherwise the first
/// executable file of that name in the command's `PATH`.
fn resolve(program: &str, env: &[(String, String)]) -> Result<PathBuf, SpawnError> {
    if program.is_empty() {
        return Err(SpawnError::new("program", libc::ENOENT));
    }
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    for dir in path_of(env).split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        let Ok(c) = CString::new(candidate.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: c is a valid C string.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(SpawnError::new("program", libc::ENOENT))
}

fn cstring(bytes: impl Into<Vec<u8>>) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::new("argv", libc::EINVAL))
}

/// A NULL-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A persistent shell state to start a command in: it replaces the
/// request's environment, and its directory is tried before the request's
/// (which is used if the saved one is gone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restore {
    /// The whole environment, as raw bytes.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// The working directory to try first.
    pub cwd: Vec<u8>,
}

/// Starts `req` and returns its pid. `markers` (`NAME=value`) replace any
/// entry of the same name in the command's environment; `joins` are the
/// `cgroup.procs` files the child writes itself into; `restore` replaces
/// the environment and names a directory to try first.
pub fn spawn(
    req: &SpawnRequest,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    joins: &[PathBuf],
    markers: &[String],
    restore: Option<&Restore>,
) -> Result<i32, SpawnError> {
    let program = cstring(resolve(&req.program, &req.env)?.as_os_str().as_bytes())?;
    let argv = req
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let marker_names: Vec<&str> = markers
        .iter()
        .filter_map(|m| m.split_once('=').map(|(k, _)| k))
        .collect();
    let mut envp = Vec::with_capacity(req.env.len() + markers.len());
    let entries: Vec<(&[u8], &[u8])> = match restore {
        Some(r) => r
            .env
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect(),
        None => req
            .env
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect(),
    };
    for (k, v) in entries {
        if k.is_empty() || k.contains(&b'=') {
            return Err(SpawnError::new("argv", libc::EINVAL));
        }
        if !marker_names.iter().any(|m| m.as_bytes() == k) {
            let mut entry = Vec::with_capacity(k.len() + 1 + v.len());
            entry.extend_from_slice(k);
            entry.push(b'=');
            entry.extend_from_slice(v);
            envp.push(cstring(entry)?);
        }
    }
    for m in markers {
        envp.push(cstring(m.as_bytes())?);
    }
    let cwd = req
        .cwd
        .as_deref()
        .map(|c| cstring(c.as_bytes()))
        .transpose()?;
    // A saved directory with a NUL cannot be entered: skip it.
    let first_cwd = restore.and_then(|r| CString::new(r.cwd.clone()).ok());
    let joins = joins
        .iter()
        .map(|p| cstring(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let null = cstring("/dev/null")?;
    let argv_ptrs = pointers(&argv);
    let envp_ptrs = pointers(&envp);
    let (err_read, err_write) = sys::pipe().map_err(|e| SpawnError::io("fork", &e))?;
    let out_fd = stdout.as_ref().map(AsRawFd::as_raw_fd);
    let err_fd = stderr.as_ref().map(AsRawFd::as_raw_fd);

    let args = ChildArgs {
        program: &program,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        cwd: cwd.as_ref(),
        first_cwd: first_cwd.as_ref(),
        joins: &joins,
        null: &null,
        stdout: out_fd,
        stderr: err_fd,
        report: err_write.as_raw_fd(),
    };
    // The child shares our memory until it execs (CLONE_VM | CLONE_VFORK,
    // as posix_spawn does): no page tables are copied and no pages are
    // copied on write, which made plain fork most of a command's start
    // cost. We are suspended meanwhile, so nothing changes under it; it
    // runs on a stack of its own and only makes system calls on what was
    // prepared above, allocating nothing.
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its (16-byte aligned) top.
    let top = {
        let end = stack.as_mut_ptr_range().end as usize;
        (end & !15) as *mut libc::c_void
    };
    // SAFETY: `child_entry` gets a pointer to `args`, which outlives the
    // child's use of it (we are suspended until it execs or exits); `top`
    // is the top of a live, writable stack of CHILD_STACK bytes.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of!(args) as *mut libc::c_void,
        )
    };
    drop(stack);
    if pid < 0 {
        return Err(SpawnError::io("fork", &io::Error::last_os_error()));
    }
    // The child holds its own copies; the runtime must see EOF on its pipes
    // when the command's processes are done, so the launcher's go now.
    drop(stdout);
    drop(stderr);
    drop(err_write);
    let mut msg = [0u8; 8];
    let mut got = 0;
    while got < msg.len() {
        // SAFETY: reading into the unfilled tail of a live buffer.
        let n = unsafe {
            libc::read(
                err_read.as_raw_fd(),
                msg[got..].as_mut_ptr().cast(),
                msg.len() - got,
            )
        };
        if n == 0 {
            break;
        }
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        got += n as usize;
    }
    if got == 0 {
        return Ok(pid);
    }
    // The child reported a failure and exits with 127: reap it now so its
    // pid is not reported as a command's exit.
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let stage = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes")) as usize;
    let errno = i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
    Err(SpawnError::new(
        STAGES.get(stage).copied().unwrap_or("exec"),
        errno,
    ))
}

/// The stack of a starting child, until it execs.
const CHILD_STACK: usize = 256 * 1024;

/// What the child needs, prepared before the clone.
struct ChildArgs<'a> {
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    cwd: Option<&'a CString>,
    /// A directory to try before `cwd` (a restored shell state's).
    first_cwd: Option<&'a CString>,
    joins: &'a [CString],
    null: &'a CString,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    /// The write end of the close-on-exec pipe for `(stage, errno)`.
    report: RawFd,
}

/// The child's entry point: sets up and execs, or reports why it could not
/// and exits 127.
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a pointer to a `ChildArgs` that lives until
    // this child has exec'd or exited.
    let a = unsafe { &*(arg as *const ChildArgs<'_>) };
    let fail = child(a);
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&stage_code(fail.stage).to_ne_bytes());
    msg[4..].copy_from_slice(&fail.errno.to_ne_bytes());
    // SAFETY: writing 8 bytes from a live buffer, then leaving without
    // running any destructor or atexit handler (the memory is the
    // launcher's).
    unsafe {
        libc::write(a.report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127);
    }
}

/// `dup2(from, to)`, or `/dev/null` on `to` when `from` is `None`.
fn install(from: Option<RawFd>, to: RawFd, null: &CString) -> Result<(), SpawnError> {
    // SAFETY: plain descriptor calls on descriptors this process owns.
    unsafe {
        let src = match from {
            Some(fd) => fd,
            None => {
                let fd = libc::open(null.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(SpawnError::io("stdio", &io::Error::last_os_error()));
                }
                fd
            }
        };
        if src == to {
            // dup2 onto itself would keep close-on-exec set.
            let flags = libc::fcntl(to, libc::F_GETFD);
            libc::fcntl(to, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        } else if libc::dup2(src, to) < 0 {
            return Err(SpawnError::io("stdio", &io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The child's side; returns only on failure.
fn child(a: &ChildArgs<'_>) -> SpawnError {
    let ChildArgs {
        program,
        argv,
        envp,
        cwd,
        first_cwd,
        joins,
        null,
        stdout,
        stderr,
        report: _,
    } = *a;
    let last = || io::Error::last_os_error();
    // SAFETY: process-level calls in a single-threaded child; every pointer
    // is to data prepared before fork.
    unsafe {
        // The launcher blocks signals for its signalfd and Rust ignores
        // SIGPIPE: a command starts with neither.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // The main process dies with the launcher even if it was killed
        // without a chance to clean up.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::setsid() < 0 {
            return SpawnError::io("setsid", &last());
        }
        for join in joins {
            let fd = libc::open(join.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return SpawnError::io("cgroup", &last());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            let err = last();
            libc::close(fd);
            if !ok {
                return SpawnError::io("cgroup", &err);
            }
        }
    }
    // stdout and stderr first: their descriptors are >= 3 (0-2 are taken in
    // the launcher), so installing 0 cannot clobber them.
    if let Err(e) = install(stdout, 1, null)
        .and_then(|()| install(stderr, 2, null))
        .and_then(|()| install(None, 0, null))
    {
        return e;
    }
    // SAFETY: as above.
    unsafe {
        let dir = cwd.map(|c| c.as_ptr()).unwrap_or(c"/".as_ptr());
        let entered = first_cwd.is_some_and(|d| libc::chdir(d.as_ptr()) == 0);
        if !entered && libc::chdir(dir) < 0 {
            return SpawnError::io("chdir", &last());
        }
    }
    if let Err(e) = sys::drop_capabilities() {
        return SpawnError::io("capabilities", &e);
    }
    if let Err(e) = sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1) {
        return SpawnError::io("no_new_privs", &e);
    }
    // SAFETY: NULL-terminated arrays of valid C strings.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    SpawnError::io("exec", &last())
}
