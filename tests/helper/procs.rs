//! Process and memory inspection for the tests, through `hecate::unix`
//! (the same /proc code the backends use). Pids are `u32` here, as
//! `std::process` and `JobInfo` give them.

use hecate::unix;

fn to_pid(pid: u32) -> i32 {
    // No real pid is above i32::MAX; 0 names no process to these helpers.
    i32::try_from(pid).unwrap_or(0)
}

fn to_u32(pids: Vec<i32>) -> Vec<u32> {
    pids.into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    unix::is_alive(to_pid(pid))
}

/// When `pid` started (clock ticks since boot), to tell a process from a
/// later one that reuses its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // Fields after the name start at the state (field 3); starttime is 22.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that started at `started` with this `pid` is still
/// alive (a pid reused since, under a busy test run, does not count).
pub fn same_process_alive(pid: u32, started: u64) -> bool {
    pid_alive(pid) && start_time(pid) == Some(started)
}

/// Whether `pid` exists at all, a zombie included (it has not been reaped).
pub fn pid_exists(pid: u32) -> bool {
    unix::process_exists(to_pid(pid))
}

/// The process group of `pid`, if it exists.
pub fn pgid_of(pid: u32) -> Option<u32> {
    unix::pgid_of(to_pid(pid)).and_then(|g| u32::try_from(g).ok())
}

/// Live (not zombie) processes, other than this one, whose environment has
/// an entry for which `wanted` holds.
pub fn processes_where_env(wanted: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    to_u32(unix::processes_where_env(wanted))
}

/// Live processes carrying the environment entry `NAME=value` exactly.
pub fn processes_with_env(entry: &str) -> Vec<u32> {
    to_u32(unix::processes_with_env(entry.as_bytes()))
}

/// Live processes in process group `pgid`.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    to_u32(unix::processes_in_group(to_pid(pgid)))
}

/// Live processes, other than this one, whose command line (arguments
/// joined by spaces) contains `needle`.
pub fn processes_with_cmdline(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(pids) = unix::pids() else {
        return Vec::new();
    };
    pids.filter_map(|p| u32::try_from(p).ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            unix::cmdline(to_pid(pid)).is_some_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .filter(|&pid| pid_alive(pid))
        .collect()
}

/// Whether the environment of `pid` contains `needle` anywhere (in any
/// entry, name or value).
pub fn environ_contains(pid: u32, needle: &str) -> bool {
    unix::environ(to_pid(pid)).is_some_and(|e| String::from_utf8_lossy(&e).contains(needle))
}

/// This process's resident set size in KiB (`VmRSS`), 0 if unknown.
pub fn rss_kib() -> u64 {
    unix::self_status_kib("VmRSS").unwrap_or(0)
}
