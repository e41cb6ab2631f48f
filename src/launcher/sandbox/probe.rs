//! [`super::probe`]: can a sandbox be made here, and if not, why and how
//! to fix it.

use std::io;
use std::path::Path;

use super::ns::{errno, namespace_flags, wait_code};
use super::NetworkMode;

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// See [`super::probe`].
pub(super) fn probe() -> Result<(), String> {
    if !Path::new("/proc/self/ns/user").exists() {
        return Err(
            "no /proc/self/ns/user: the kernel lacks namespaces (CONFIG_USER_NS, \
                    CONFIG_PID_NS, ...) or /proc is not mounted; use the local backend"
                .into(),
        );
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let userns_cause = if read_trimmed("/proc/sys/user/max_user_namespaces").as_deref() == Some("0")
    {
        Some("user namespaces are disabled (user.max_user_namespaces = 0); fix: sysctl -w user.max_user_namespaces=15000")
    } else if !root
        && read_trimmed("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0")
    {
        Some("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); fix: sysctl -w kernel.unprivileged_userns_clone=1")
    } else if !root
        && read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref()
            == Some("1")
    {
        Some("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1); fix: an AppArmor profile allowing `userns` for the hecate binary, or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    } else {
        None
    };
    let all = namespace_flags(NetworkMode::Isolated);
    let tried = try_unshare(libc::CLONE_NEWUSER | all);
    match (tried, userns_cause) {
        (Ok(()), _) => Ok(()),
        (Err(_), _) if root && try_unshare(all).is_ok() => Ok(()),
        (Err(_), Some(cause)) => Err(format!("sandbox unavailable: {cause}")),
        (Err(e), None) => Err(format!(
            "sandbox unavailable: cannot create user, mount, PID and network namespaces \
             ({}); a container runtime's seccomp or AppArmor profile may forbid unshare: \
             run with a profile that allows it (e.g. docker --security-opt seccomp=unconfined \
             --security-opt apparmor=unconfined), or as root",
            io::Error::from_raw_os_error(e)
        )),
    }
}

/// Forks a child that tries `unshare(flags)` and exits; the errno if it
/// failed.
fn try_unshare(flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: the child makes two system calls and _exits: nothing it
    // inherits from other threads (locks, allocator state) is touched.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno());
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let code = if libc::unshare(flags) == 0 {
                0
            } else {
                *libc::__errno_location() & 0xff
            };
            libc::_exit(code);
        }
    }
    match wait_code(pid) {
        0 => Ok(()),
        e => Err(e),
    }
}
