//! The Unix process layer under the backends: reading `/proc` (listing
//! processes, a process's state, process group, environment and command
//! line, and which processes carry a marker entry in their environment),
//! sending signals to a process or a process group, killing a process tree
//! in rounds ([`kill_tree`], [`kill_now`]), and decoding a wait status into
//! a shell-style exit code ([`exit_code`]).
//!
//! Both the local backend and the simulator start every command in its own
//! process group with a marker variable in its environment (for example
//! `HECATE_INSTANCE_ID=<id>`); this module finds and kills such processes,
//! including those that left their group (`setsid`, double fork). It is
//! Linux-specific (`/proc`) and public so that the integration tests check
//! processes with the same code. Pids are `i32` (`pid_t`) throughout. The
//! scans never report this process itself, and pids 0 and 1 (our own
//! group, init) are never signalled.

mod kill;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

pub use kill::{kill_now, kill_tree, scan, verified_groups, ProcEntry};

/// This process's pid.
fn own_pid() -> i32 {
    // A pid is a positive `pid_t`; `i32::MAX` matches no process.
    i32::try_from(std::process::id()).unwrap_or(i32::MAX)
}

/// The pids listed in `/proc` right now (this process's included). Fails
/// only if `/proc` cannot be read at all.
pub fn pids() -> std::io::Result<impl Iterator<Item = i32>> {
    let dir = std::fs::read_dir("/proc")?;
    Ok(dir
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok()))
}

/// The fields of `/proc/<pid>/stat` this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (`R`, `S`, `D`, `T`, `Z`, `X`, ...).
    pub state: u8,
    /// The parent's pid.
    pub ppid: i32,
    /// The process group id.
    pub pgid: i32,
}

impl Stat {
    /// Whether the process has exited (a zombie waiting to be reaped, or
    /// dead): it runs nothing and holds no environment any more.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid, pgid })
}

/// The stat of `pid`, or `None` if there is no such process (it may exit
/// at any moment, so `None` is an ordinary answer).
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` exists and has not exited (is not a zombie).
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !s.is_dead())
}

/// The process group of `pid`, if the process exists (a zombie's too).
pub fn pgid_of(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.pgid)
}

/// The NUL-separated environment block of `pid`; `None` if the process is
/// gone or not ours to read. It is empty for a zombie, and for an instant
/// while the process is inside `execve`.
pub fn environ(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The NUL-separated command line of `pid`; `None` if the process is gone.
pub fn cmdline(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

/// The environment entry `NAME=value` as it appears in an environment
/// block: the form [`has_env_entry`] and the scans look for.
pub fn env_entry(name: &str, value: &str) -> Vec<u8> {
    format!("{name}={value}").into_bytes()
}

/// Whether a NUL-separated environment block has exactly the entry `entry`
/// (a whole entry: `A=1` does not match `A=10`).
pub fn has_env_entry(environ: &[u8], entry: &[u8]) -> bool {
    environ.split(|&b| b == 0).any(|e| e == entry)
}

/// Live processes, other than this one, whose environment has an entry for
/// which `wanted` holds. Processes of other users (unreadable environment)
/// are skipped.
pub fn processes_where_env(wanted: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    let own = own_pid();
    let Ok(pids) = pids() else {
        return Vec::new();
    };
    pids.filter(|&pid| pid != own)
        .filter(|&pid| environ(pid).is_some_and(|env| env.split(|&b| b == 0).any(&wanted)))
        .filter(|&pid| is_alive(pid))
        .collect()
}

/// Live processes, other than this one, carrying the environment entry
/// `entry` (`NAME=value`) exactly.
pub fn processes_with_env(entry: &[u8]) -> Vec<i32> {
    processes_where_env(|e| e == entry)
}

/// Live processes, other than this one, in process group `pgid`.
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    let own = own_pid();
    let Ok(pids) = pids() else {
        return Vec::new();
    };
    pids.filter(|&pid| pid != own)
        .filter(|&pid| stat(pid).is_some_and(|s| !s.is_dead() && s.pgid == pgid))
        .collect()
}

/// A field of `/proc/self/status` given in kB (`VmRSS`, `VmHWM`), in KiB;
/// `None` where the file or the field is missing.
pub fn self_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Whether a process with this pid exists, zombies included (`EPERM`
/// counts: it exists but is not ours).
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks for
    // existence and permission, and has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether process group `pgid` still has members (zombies included) that
/// we may signal. Groups 0 and 1 (ours, and init's) never count.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; no memory-safety
    // preconditions.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Sends `signal` to process `pid`; returns whether it was sent. Pids 0
/// and 1 (our own group, init) are never signalled.
pub fn signal_pid(pid: i32, signal: libc::c_int) -> bool {
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Sends `signal` to every process of group `pgid`; returns whether it was
/// sent. Groups 0 and 1 (our own, init's) are never signalled. Signal a
/// group only while it is known to be yours: see [`kill_tree`].
pub fn signal_group(pgid: i32, signal: libc::c_int) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// The exit code of a finished process as a shell reports it: its own, or
/// 128+N if signal N killed it (-1 for a status that is neither, which
/// `wait` does not produce).
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_and_spaces_in_the_name_parses() {
        let stat = b"4242 (we(ird) name)) S 1 4240 4240 0 -1 4194560 100 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                state: b'S',
                ppid: 1,
                pgid: 4240
            })
        );
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"1 (x) R"), None);
        assert_eq!(parse_stat(b"1 (x) R 1"), None);
    }

    #[test]
    fn zombies_and_dead_processes_are_dead() {
        let stat = |state| Stat {
            state,
            ppid: 1,
            pgid: 1,
        };
        assert!(stat(b'Z').is_dead());
        assert!(stat(b'X').is_dead());
        assert!(!stat(b'S').is_dead());
        assert!(!stat(b'T').is_dead());
    }

    #[test]
    fn env_entry_must_match_a_whole_entry() {
        let env = b"A=1\0HECATE_EXEC_ID=local-1-10\0B=2\0";
        assert!(has_env_entry(
            env,
            &env_entry("HECATE_EXEC_ID", "local-1-10")
        ));
        assert!(!has_env_entry(env, b"HECATE_EXEC_ID=local-1-1"));
        assert!(!has_env_entry(env, b"HECATE_EXEC_ID=local-1-100"));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }

    #[test]
    fn this_process_is_alive_and_never_listed() {
        let own = own_pid();
        assert!(is_alive(own));
        assert!(process_exists(own));
        let group = pgid_of(own).expect("own stat");
        assert!(!processes_in_group(group).contains(&own));
        assert!(!processes_where_env(|_| true).contains(&own));
        assert!(self_status_kib("VmRSS").is_some_and(|kib| kib > 0));
    }

    #[test]
    fn init_and_our_own_group_are_never_signalled() {
        assert!(!signal_pid(0, 0));
        assert!(!signal_pid(1, 0));
        assert!(!signal_group(0, 0));
        assert!(!signal_group(1, 0));
        assert!(!group_alive(0));
        assert!(!process_exists(0));
    }
}
