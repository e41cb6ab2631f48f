//! Entering the namespaces, in three processes:
//!
//! - the **outer** launcher (the process the runtime started, still in the
//!   host's namespaces, root there when the runtime is) applies the cgroup
//!   limits, forks the middle process, writes its uid/gid maps once it
//!   made its user namespace, waits for it, and at the end removes the
//!   instance's cgroups;
//! - the **middle** process makes the user namespace, waits for its maps,
//!   makes the other namespaces, forks the launcher loop as PID 1 of the
//!   new PID namespace and waits for it;
//! - **PID 1** builds the filesystem view, brings up loopback, applies the
//!   rlimit fallbacks and returns into the launcher loop.
//!
//! The launcher is single-threaded, so forking runs no risk of inheriting
//! a lock. Each process dies with its parent (`PR_SET_PDEATHSIG`
//! `SIGKILL`), and PID 1 dying kills the whole namespace.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::super::cgroup::InstanceCgroups;
use super::super::proto::{encode, Event};
use super::super::sys;
use super::{
    fs, limits, net, Isolation, NetworkMode, SandboxReport, SandboxSpec, SANDBOX_ID_BASE,
    SANDBOX_ID_SPAN,
};

/// The namespaces besides the user namespace.
pub(super) fn namespace_flags(network: NetworkMode) -> libc::c_int {
    let net = match network {
        NetworkMode::Isolated | NetworkMode::Outbound => libc::CLONE_NEWNET,
        NetworkMode::Host => 0,
    };
    libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | net
}

/// The outside uid of instance `instance`'s root: a stable hash (FNV-1a)
/// spread over [`SANDBOX_ID_SPAN`] ids from [`SANDBOX_ID_BASE`].
pub(super) fn outside_id(instance: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in instance.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    SANDBOX_ID_BASE + h % SANDBOX_ID_SPAN
}

pub(super) fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn os_error(what: &str, errno: i32) -> String {
    format!("{what}: {}", io::Error::from_raw_os_error(errno))
}

/// Tells the runtime on control socket `sock` that the sandbox could not be
/// made (its start then fails with `reason`).
pub(crate) fn reject(sock: RawFd, reason: String) {
    send_event(sock, &Event::Rejected { reason });
}

/// Writes `event` on the control socket (blocking; errors are ignored: the
/// runtime may be gone).
fn send_event(sock: RawFd, event: &Event) {
    let Ok(frame) = encode(event) else { return };
    let mut sent = 0;
    while sent < frame.len() {
        // SAFETY: sending from a live buffer; MSG_NOSIGNAL turns a closed
        // peer into EPIPE instead of a signal.
        let n = unsafe {
            libc::send(
                sock,
                frame[sent..].as_ptr().cast(),
                frame.len() - sent,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        sent += n as usize;
    }
}

fn write_all(fd: RawFd, bytes: &[u8]) -> bool {
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: writing from a live buffer.
        let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// Reads exactly `buf.len()` bytes; false at end of stream or on error.
fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of a live buffer.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        got += n as usize;
    }
    true
}

/// Waits for child `pid`; returns its exit code (128 + signal if killed).
pub(super) fn wait_code(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno() != libc::EINTR {
            return 1;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Changes the owner of `path` and everything below it to `uid:gid`,
/// without following symlinks.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The outer launcher's half of the user namespace: the work directory
/// becomes the sandbox root's, then the maps of process `child`.
fn map_ids(child: libc::pid_t, workdir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        chown_tree(workdir, uid, gid).map_err(|e| {
            format!(
                "sandbox: cannot hand the work directory {} to uid {uid}: {e}",
                workdir.display()
            )
        })?;
    } else {
        // Without CAP_SETGID a gid map needs setgroups denied first.
        std::fs::write(format!("/proc/{child}/setgroups"), "deny")
            .map_err(|e| format!("sandbox: cannot deny setgroups: {e}"))?;
    }
    std::fs::write(format!("/proc/{child}/uid_map"), format!("0 {uid} 1\n"))
        .map_err(|e| format!("sandbox: cannot write the uid map: {e}"))?;
    std::fs::write(format!("/proc/{child}/gid_map"), format!("0 {gid} 1\n"))
        .map_err(|e| format!("sandbox: cannot write the gid map: {e}"))?;
    Ok(())
}

/// Puts the calling launcher in the sandbox `spec` describes. Returns only
/// in the sandbox's PID 1 (with what was applied) or on a failure before
/// anything was forked (the caller then reports it and removes the
/// instance's cgroups); the outer and middle processes wait for PID 1 and
/// exit with its code. `sock` is the control socket: every process but
/// PID 1 closes it, so the runtime sees the end of stream when PID 1 ends.
pub(crate) fn enter(
    spec: &SandboxSpec,
    instance: &str,
    cgroups: &InstanceCgroups,
    sock: RawFd,
) -> Result<SandboxReport, String> {
    let workdir = spec
        .workdir
        .canonicalize()
        .ok()
        .filter(|w| w.is_dir())
        .ok_or_else(|| {
            format!(
                "sandbox: the work directory {} is not a directory",
                spec.workdir.display()
            )
        })?;
    let rootfs = match &spec.rootfs {
        Some(r) => Some(
            r.canonicalize()
                .ok()
                .filter(|r| r.is_dir())
                .ok_or_else(|| format!("sandbox: the root {} is not a directory", r.display()))?,
        ),
        None => None,
    };
    // SAFETY: these cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid, gid) = if euid == 0 {
        let id = outside_id(instance);
        (id, id)
    } else {
        (euid, egid)
    };
    let limits = limits::apply(spec, instance, cgroups);
    let (status_r, status_w) = sys::pipe().map_err(|e| format!("sandbox: pipe: {e}"))?;
    let (go_r, go_w) = sys::pipe().map_err(|e| format!("sandbox: pipe: {e}"))?;
    // SAFETY: getpid cannot fail.
    let outer = unsafe { libc::getpid() };
    // SAFETY: single-threaded; the child runs `middle`, which never returns.
    let child = unsafe { libc::fork() };
    if child < 0 {
        limits.remove();
        return Err(os_error("sandbox: fork", errno()));
    }
    if child == 0 {
        drop(status_r);
        drop(go_w);
        return middle(
            spec, &workdir, rootfs, &limits, sock, outer, status_w, go_r, uid, gid,
        );
    }
    drop(status_w);
    drop(go_r);
    let mut status = [0u8; 4];
    let userns_errno = if read_exact(status_r.as_raw_fd(), &mut status) {
        Some(i32::from_ne_bytes(status))
    } else {
        None
    };
    let handshake = match userns_errno {
        None => Err("sandbox: the namespace process died".to_string()),
        Some(0) => map_ids(child, &workdir, uid, gid),
        Some(_) => Ok(()),
    };
    let mut slirp = None;
    match handshake {
        Ok(()) => {
            write_all(go_w.as_raw_fd(), b"g");
            if spec.network == NetworkMode::Outbound {
                let userns = userns_errno == Some(0) && euid != 0;
                match outbound(spec, &status_r, &go_w, child, userns) {
                    Ok(s) => slirp = s,
                    Err(reason) => send_event(sock, &Event::Rejected { reason }),
                }
            }
        }
        // The middle process sees the end of the pipe and exits.
        Err(reason) => send_event(sock, &Event::Rejected { reason }),
    }
    drop(go_w);
    // SAFETY: the outer launcher never serves commands: its copy of the
    // control socket must go so that PID 1's end is the runtime's EOF.
    unsafe { libc::close(sock) };
    let code = wait_code(child);
    drop(slirp);
    // PID 1 is gone, so is every process of the namespace; what remains
    // are the (empty) cgroups.
    let _ = cgroups.kill_all(
        libc::SIGKILL,
        &mut std::collections::BTreeSet::new(),
        &mut || {},
    );
    if !cgroups.remove_instance() {
        eprintln!("hecate-launcher: instance cgroups could not all be removed");
    }
    limits.remove();
    std::process::exit(code);
}

/// The outer launcher's half of [`NetworkMode::Outbound`]: once the middle
/// process says its namespaces exist, slirp4netns is attached to its
/// network namespace, and the middle process told to go on. `Ok(None)`:
/// the middle process failed (and said why).
fn outbound(
    spec: &SandboxSpec,
    status_r: &OwnedFd,
    go_w: &OwnedFd,
    middle: libc::pid_t,
    userns: bool,
) -> Result<Option<net::Slirp>, String> {
    let mut status = [0u8; 4];
    if !read_exact(status_r.as_raw_fd(), &mut status) {
        return Ok(None);
    }
    let program = spec.slirp4netns.as_deref().ok_or_else(|| {
        "sandbox: the outbound network needs slirp4netns, and none was given".to_string()
    })?;
    let slirp = net::attach_slirp(program, middle, userns)?;
    write_all(go_w.as_raw_fd(), b"n");
    Ok(Some(slirp))
}

/// The middle process: user namespace, maps, the other namespaces, then
/// PID 1. Returns only in PID 1.
#[allow(clippy::too_many_arguments)]
fn middle(
    spec: &SandboxSpec,
    workdir: &Path,
    rootfs: Option<PathBuf>,
    limits: &limits::Limits,
    sock: RawFd,
    outer: libc::pid_t,
    status_w: OwnedFd,
    go_r: OwnedFd,
    uid: u32,
    gid: u32,
) -> Result<SandboxReport, String> {
    let fail = |reason: String| -> ! {
        send_event(sock, &Event::Rejected { reason });
        // SAFETY: leaving without running the launcher's destructors.
        unsafe { libc::_exit(1) }
    };
    // SAFETY: integer arguments; getppid cannot fail.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != outer {
            libc::_exit(1);
        }
    }
    // Cloned while still host root: inside the user namespace the
    // sandbox's root may not search the work directory's ancestors (an
    // instance root of mode 0700); attaching this detached copy needs no
    // search of them.
    let work_fd = clone_tree(workdir).unwrap_or_else(|e| {
        fail(format!(
            "sandbox: cannot open the work directory {}: {e}",
            workdir.display()
        ))
    });
    // The same for a root filesystem image: it may sit below a directory
    // only host root can search (a temporary directory of mode 0700).
    let rootfs_fd = rootfs.as_deref().map(|r| {
        clone_tree(r).unwrap_or_else(|e| {
            fail(format!(
                "sandbox: cannot open the root filesystem {}: {e}",
                r.display()
            ))
        })
    });
    let userns_errno = if spec.user_namespace {
        // SAFETY: a plain system call.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
            0
        } else {
            errno()
        }
    } else {
        libc::EPERM
    };
    write_all(status_w.as_raw_fd(), &userns_errno.to_ne_bytes());
    let mut go = [0u8; 1];
    if !read_exact(go_r.as_raw_fd(), &mut go) {
        // SAFETY: the outer launcher reported the failure.
        unsafe { libc::_exit(1) }
    }
    let isolation = if userns_errno == 0 {
        // SAFETY: plain system calls; root of the new namespace is mapped.
        unsafe {
            // Host root's supplementary groups are not mapped.
            libc::setgroups(0, std::ptr::null());
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                fail(os_error(
                    "sandbox: cannot become root of the namespace",
                    errno(),
                ));
            }
        }
        Isolation::UserNamespace { uid, gid }
    } else {
        let reason = if spec.user_namespace {
            os_error("unshare(CLONE_NEWUSER)", userns_errno)
        } else {
            "user namespace turned off".to_string()
        };
        Isolation::CapabilityDrop { reason }
    };
    // SAFETY: a plain system call.
    if unsafe { libc::unshare(namespace_flags(spec.network)) } != 0 {
        let e = errno();
        fail(match &isolation {
            Isolation::CapabilityDrop { reason } => format!(
                "sandbox: no user namespace ({reason}) and cannot make namespaces without it: {}",
                io::Error::from_raw_os_error(e)
            ),
            Isolation::UserNamespace { .. } => os_error("sandbox: unshare", e),
        });
    }
    if spec.network == NetworkMode::Outbound {
        // The network namespace exists: the outer launcher attaches
        // slirp4netns to it and says when it is configured.
        write_all(status_w.as_raw_fd(), &0i32.to_ne_bytes());
        if !read_exact(go_r.as_raw_fd(), &mut go) {
            // SAFETY: the outer launcher reported the failure.
            unsafe { libc::_exit(1) }
        }
    }
    drop(status_w);
    drop(go_r);
    // SAFETY: single-threaded; the child returns into the launcher loop.
    let pid1 = unsafe { libc::fork() };
    if pid1 < 0 {
        fail(os_error("sandbox: fork of PID 1", errno()));
    }
    if pid1 == 0 {
        // SAFETY: integer arguments. The middle process only waits for us:
        // if it is already gone, the namespace is being torn down anyway.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        return match pid_one(spec, work_fd, rootfs_fd, limits, &isolation) {
            Ok(()) => Ok(SandboxReport {
                isolation,
                network: spec.network,
                limits: limits.report.clone(),
            }),
            Err(reason) => fail(reason),
        };
    }
    // SAFETY: only PID 1 serves the runtime.
    unsafe { libc::close(sock) };
    let code = wait_code(pid1);
    // SAFETY: leaving without running the launcher's destructors.
    unsafe { libc::_exit(code) }
}

/// `open_tree(2)` flag: a detached copy of the mount, not the mount.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `open_tree(2)` flag: with the mounts below it.
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// A detached bind mount of `dir` (`open_tree` with `OPEN_TREE_CLONE`),
/// to be attached in the sandbox's mount namespace by [`fs::build`].
fn clone_tree(dir: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C string; the call returns a descriptor we own or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, ours alone.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// PID 1's setup before it serves commands. `work_fd` is the work
/// directory and `rootfs_fd` the root filesystem image, detached copies
/// made before the user namespace was; they are closed once bound.
fn pid_one(
    spec: &SandboxSpec,
    work_fd: OwnedFd,
    rootfs_fd: Option<OwnedFd>,
    limits: &limits::Limits,
    isolation: &Isolation,
) -> Result<(), String> {
    let resolver = (spec.network == NetworkMode::Outbound).then_some(net::RESOLVER);
    fs::build(
        work_fd.as_raw_fd(),
        rootfs_fd.as_ref().map(AsRawFd::as_raw_fd),
        resolver,
    )?;
    drop(work_fd);
    drop(rootfs_fd);
    if spec.network != NetworkMode::Host {
        net::loopback_up().map_err(|e| format!("sandbox: cannot bring up loopback: {e}"))?;
    }
    let name = b"sandbox";
    // SAFETY: a live buffer of the given length. A hostname is cosmetic.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    limits.apply_rlimits(spec)?;
    if let Isolation::UserNamespace { .. } = isolation {
        no_nested_user_namespaces()?;
    }
    if let Isolation::CapabilityDrop { .. } = isolation {
        drop_every_capability().map_err(|e| format!("sandbox: cannot drop capabilities: {e}"))?;
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
            .map_err(|e| format!("sandbox: no_new_privs: {e}"))?;
    }
    let ws = CString::new(super::WORKSPACE).expect("no NUL in a constant");
    // SAFETY: a valid C string.
    unsafe { libc::chdir(ws.as_ptr()) };
    Ok(())
}

/// `CAP_SYS_RESOURCE` (`linux/capability.h`).
const CAP_SYS_RESOURCE: libc::c_ulong = 24;

/// Forbids user namespaces inside the sandbox's: without them a command
/// cannot gain a fresh set of capabilities in a nested namespace (to
/// mount, make network devices, reach kernel code that only root of some
/// namespace may call). `user.max_user_namespaces` is per user namespace
/// and limits its descendants; commands lose `CAP_SYS_RESOURCE` (from the
/// bounding set, so no exec regains it), without which they cannot raise
/// it again.
fn no_nested_user_namespaces() -> Result<(), String> {
    let sysctl = Path::new("/proc/sys/user/max_user_namespaces");
    if sysctl.exists() {
        std::fs::write(sysctl, "0")
            .map_err(|e| format!("sandbox: cannot forbid nested user namespaces: {e}"))?;
    }
    sys::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_RESOURCE)
        .map_err(|e| format!("sandbox: cannot drop CAP_SYS_RESOURCE: {e}"))
}

/// Empties the bounding set and the inheritable and ambient sets of the
/// calling process (PID 1 keeps its effective capabilities to run the
/// launcher): a root command then execs with no capability at all.
fn drop_every_capability() -> io::Result<()> {
    for cap in 0..64 {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    sys::clear_ambient_capabilities()?;
    sys::update_capabilities(|data| {
        for d in data.iter_mut() {
            d.inheritable = 0;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_ids_are_stable_and_in_range() {
        let a = outside_id("local-1");
        assert_eq!(a, outside_id("local-1"));
        assert!((SANDBOX_ID_BASE..SANDBOX_ID_BASE + SANDBOX_ID_SPAN).contains(&a));
        assert_ne!(a, outside_id("local-2"));
    }
}
