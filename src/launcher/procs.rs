//! The launcher's view of `/proc`: a snapshot of live processes (pid,
//! parent, session) to find a command's processes by descent when cgroups
//! are missing or were left, and the marker sweep that is the last resort.
//!
//! Every candidate found by descent is a descendant of the launcher, which
//! is a child subreaper: an orphan of a command comes back to it, so a
//! command's processes cannot leave its tree, and a recycled pid of an
//! unrelated process is never mistaken for one of ours.

use std::collections::{BTreeSet, HashMap};

/// One live (not zombie) process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Its parent.
    pub ppid: i32,
    /// Its session.
    pub sid: i32,
}

/// Parses `/proc/<pid>/stat`: (state, ppid, session).
fn parse_stat(stat: &[u8]) -> Option<(u8, i32, i32)> {
    // The command name may hold spaces and parentheses: cut at the last ')'.
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let _pgrp = fields.next()?;
    let sid = fields.next()?.parse().ok()?;
    Some((state, ppid, sid))
}

/// Pids named in /proc.
fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Live processes now. A process may exit between the listing and the
/// read: it is skipped.
pub fn snapshot() -> Vec<Proc> {
    pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
            let (state, ppid, sid) = parse_stat(&stat)?;
            (!matches!(state, b'Z' | b'X' | b'x')).then_some(Proc { pid, ppid, sid })
        })
        .collect()
}

/// Every descendant of `root` in `procs` (not `root` itself).
pub fn descendants(procs: &[Proc], root: i32) -> BTreeSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if out.insert(*child) {
                stack.push(*child);
            }
        }
    }
    out
}

/// The processes of one command among the launcher's descendants: the
/// tree under its main process while that is still unreaped (its pid is
/// then still ours), and every process of its session (the main process's
/// pid is the session id: it called setsid) with their trees.
pub fn command_tree(procs: &[Proc], launcher: i32, main: Option<i32>, sid: i32) -> BTreeSet<i32> {
    let ours = descendants(procs, launcher);
    let mut out = BTreeSet::new();
    if let Some(main) = main.filter(|m| ours.contains(m)) {
        out.insert(main);
        out.extend(descendants(procs, main));
    }
    for p in procs
        .iter()
        .filter(|p| p.sid == sid && ours.contains(&p.pid))
    {
        out.insert(p.pid);
        out.extend(descendants(procs, p.pid));
    }
    out
}

/// Live processes (other than `except`) whose environment has the entry
/// `marker` (`NAME=value`) exactly. A process whose environment cannot be
/// read (another user's, or not dumpable without CAP_SYS_PTRACE) is not
/// found: this is why the sweep is the last resort.
pub fn with_marker(marker: &[u8], except: i32) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|pid| *pid != except)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|e| e == marker))
                .unwrap_or(false)
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|(state, _, _)| !matches!(state, b'Z' | b'X' | b'x'))
        })
        .collect()
}

/// Whether `pid` is alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .is_some_and(|(state, _, _)| !matches!(state, b'Z' | b'X' | b'x'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_in_the_name_parses() {
        let stat = b"42 (a) b (c)) S 7 42 42 0 -1 4194560";
        assert_eq!(parse_stat(stat), Some((b'S', 7, 42)));
    }

    #[test]
    fn command_tree_keeps_to_the_launchers_descendants() {
        let p = |pid, ppid, sid| Proc { pid, ppid, sid };
        let procs = [
            p(10, 1, 10), // launcher
            p(20, 10, 20),
            p(21, 20, 20),
            p(30, 10, 20), // orphan of the session, reparented to the launcher
            p(31, 30, 31), // its child in a new session
            p(40, 10, 40), // another command
            p(50, 1, 20),  // not ours, same session number (impossible, but safe)
        ];
        let tree = command_tree(&procs, 10, Some(20), 20);
        assert_eq!(tree, BTreeSet::from([20, 21, 30, 31]));
        // Main exited and was reaped; 21 was reparented to the launcher.
        let procs: Vec<Proc> = procs
            .iter()
            .filter(|q| q.pid != 20)
            .map(|q| if q.pid == 21 { p(21, 10, 20) } else { *q })
            .collect();
        let after_exit = command_tree(&procs, 10, None, 20);
        assert_eq!(after_exit, BTreeSet::from([21, 30, 31]));
    }
}
