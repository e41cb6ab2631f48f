//! The sandbox's network: loopback up in its own namespace, and for
//! [`NetworkMode::Outbound`](super::NetworkMode::Outbound) a user-mode
//! network stack (`slirp4netns`) that the outer launcher attaches to the
//! namespace: a `tap0` device with `10.0.2.100/24`, a default route through
//! `10.0.2.2` and a resolver at `10.0.2.3`. Connections leave through
//! ordinary sockets of the slirp4netns process on the host, so the task
//! reaches what the host reaches, but nothing reaches the task (no port of
//! the host is taken) and `--disable-host-loopback` keeps the host's
//! loopback out of reach. slirp4netns runs in its own sandbox and seccomp
//! filter, and exits when the outer launcher does (`--exit-fd`).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::super::sys;

/// The address slirp4netns's resolver has inside the namespace.
pub(super) const RESOLVER: &str = "10.0.2.3";

/// The name of the device inside.
const TAP: &str = "tap0";

/// A running slirp4netns, killed and reaped when dropped.
pub(super) struct Slirp {
    child: Child,
    /// Its `--exit-fd` pipe's write end: closing it (the launcher's exit)
    /// tells slirp4netns to exit.
    _exit: OwnedFd,
}

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn inheritable(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An anonymous in-memory file for slirp4netns's diagnostics.
fn memfd() -> io::Result<std::fs::File> {
    // SAFETY: a valid C string; the call returns a descriptor we own or -1.
    let fd = unsafe { libc::memfd_create(c"slirp4netns".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, ours alone.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Starts `program` (slirp4netns) on the network namespace of process
/// `pid` and waits until it has configured `tap0`. `userns`: join the
/// process's user namespace too (an unprivileged launcher). Only the outer
/// launcher calls it (single-threaded, in the host's namespaces).
pub(super) fn attach_slirp(
    program: &Path,
    pid: libc::pid_t,
    userns: bool,
) -> Result<Slirp, String> {
    let fail = |what: &str, e: io::Error| format!("sandbox: outbound network: {what}: {e}");
    let (mut ready_r, ready_w) = sys::pipe()
        .map(|(r, w)| (std::fs::File::from(r), w))
        .map_err(|e| fail("pipe", e))?;
    let (exit_r, exit_w) = sys::pipe().map_err(|e| fail("pipe", e))?;
    inheritable(&ready_w).map_err(|e| fail("fcntl", e))?;
    inheritable(&exit_r).map_err(|e| fail("fcntl", e))?;
    let mut log = memfd().map_err(|e| fail("memfd", e))?;
    let mut cmd = Command::new(program);
    cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"])
        .args(["--enable-sandbox", "--enable-seccomp"])
        .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
        .arg(format!("--exit-fd={}", exit_r.as_raw_fd()));
    if userns {
        cmd.arg(format!("--userns-path=/proc/{pid}/ns/user"));
    }
    cmd.arg(pid.to_string())
        .arg(TAP)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().map_err(|e| fail("dup", e))?))
        .stderr(Stdio::from(log.try_clone().map_err(|e| fail("dup", e))?));
    let child = cmd
        .spawn()
        .map_err(|e| fail(&format!("cannot run {}", program.display()), e))?;
    drop(ready_w);
    drop(exit_r);
    let slirp = Slirp {
        child,
        _exit: exit_w,
    };
    let mut byte = [0u8; 1];
    // slirp4netns writes "1" once tap0 is up and configured; it closes the
    // pipe (by exiting) if it cannot.
    if matches!(ready_r.read(&mut byte), Ok(1)) {
        return Ok(slirp);
    }
    drop(slirp);
    let mut said = String::new();
    use std::io::Seek;
    let _ = log.seek(io::SeekFrom::Start(0));
    let _ = log.take(4096).read_to_string(&mut said);
    let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
    Err(format!(
        "sandbox: outbound network: slirp4netns could not attach to the namespace: {said}"
    ))
}

/// Sets `IFF_UP` on `lo` in the current network namespace.
pub(super) fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) returns a descriptor we own or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq; the union
    // member used is the flags one both calls use.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
