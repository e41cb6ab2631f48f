//! Process and memory inspection through /proc (reliability tests).

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    !matches!(
        stat[close + 1..].trim_start().chars().next(),
        Some('Z' | 'X') | None
    )
}

/// The process group of `pid`, if it is alive.
pub fn pgid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    // Fields after the command: state, ppid, pgrp, ...
    stat[close + 1..].split_whitespace().nth(2)?.parse().ok()
}

/// Live (not zombie) processes, other than this one, whose environment has
/// an entry for which `wanted` holds.
pub fn processes_where_env(wanted: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(&wanted) {
            found.push(pid);
        }
    }
    found
}

/// Live processes carrying the environment entry `NAME=value` exactly.
pub fn processes_with_env(entry: &str) -> Vec<u32> {
    processes_where_env(|e| e == entry.as_bytes())
}

/// Live processes in process group `pgid`.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid_alive(pid) && pgid_of(pid) == Some(pgid) {
            found.push(pid);
        }
    }
    found
}

/// This process's resident set size in KiB (`VmRSS` in /proc/self/status).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
