//! Finding and killing the processes of a local instance: its process
//! groups, and a `/proc` sweep for the marker variables
//! (`HECATE_INSTANCE_ID`, `HECATE_EXEC_ID`) every command is started with.
//!
//! A process group is signalled only while it is known to be ours: Linux
//! does not hand out a pid again while a process group of that id still has
//! members, so a group that was ours when we last saw it non-empty is still
//! ours. A process that left its group (`setsid`, double fork) is found by
//! its marker and signalled on its own; its group is never signalled, as it
//! might have joined a group that is not ours.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

/// How often the grace period checks whether everything has exited.
const POLL: Duration = Duration::from_millis(20);
/// How many SIGKILL rounds are tried against processes that keep forking.
const KILL_ROUNDS: usize = 50;
/// How long after an empty scan a second one confirms it.
const CONFIRM: Duration = Duration::from_millis(5);

/// A live (not zombie) process that is marked or in a group of interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcEntry {
    /// Its pid.
    pub pid: i32,
    /// Its process group id.
    pub pgid: i32,
    /// Whether its environment has the marker entry.
    pub marked: bool,
}

/// The marker entry `NAME=value` as it appears in `/proc/<pid>/environ`.
pub(crate) fn marker(name: &str, value: &str) -> Vec<u8> {
    format!("{name}={value}").into_bytes()
}

/// Live processes whose environment has the entry `marker` exactly, or
/// whose process group is in `groups`. Processes of other users (unreadable
/// environment) and this process itself are skipped.
pub(crate) fn scan(marker: &[u8], groups: &BTreeSet<i32>) -> Vec<ProcEntry> {
    let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let dir = match std::fs::read_dir("/proc") {
        Ok(dir) => dir,
        Err(err) => {
            log::warn!("local: cannot read /proc ({err}); escaped processes cannot be found");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        // A process may exit between the listing and these reads: skip it.
        let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((state, pgid)) = parse_stat(&stat) else {
            continue;
        };
        if matches!(state, b'Z' | b'X' | b'x') {
            continue;
        }
        let marked = std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| has_entry(&env, marker))
            .unwrap_or(false);
        if marked || groups.contains(&pgid) {
            found.push(ProcEntry { pid, pgid, marked });
        }
    }
    found
}

/// The state letter and process group id from the text of `/proc/<pid>/stat`.
/// The command name may contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub(crate) fn parse_stat(stat: &[u8]) -> Option<(u8, i32)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    let _ppid = fields.next()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, pgid))
}

/// Whether a NUL-separated environment block has exactly the entry `marker`.
pub(crate) fn has_entry(environ: &[u8], marker: &[u8]) -> bool {
    environ.split(|&b| b == 0).any(|entry| entry == marker)
}

/// The groups among `groups` that have a live member carrying the marker:
/// these are certainly ours, whatever happened to their pids since.
pub(crate) fn verified_groups(groups: &BTreeSet<i32>, live: &[ProcEntry]) -> BTreeSet<i32> {
    groups
        .iter()
        .copied()
        .filter(|g| live.iter().any(|p| p.pgid == *g && p.marked))
        .collect()
}

fn signal_group(pgid: i32, signal: libc::c_int) {
    // 0 and 1 would mean our own group and init's: never ours to signal.
    if pgid > 1 {
        // SAFETY: killpg has no memory-safety preconditions.
        unsafe { libc::killpg(pgid, signal) };
    }
}

fn signal_pid(pid: i32, signal: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Sends `signal` to every group in `groups` and to every marked process
/// outside them. Stopped processes also get SIGCONT so that they can act on
/// a SIGTERM.
fn signal_all(groups: &BTreeSet<i32>, live: &[ProcEntry], signal: libc::c_int) {
    for &g in groups {
        signal_group(g, signal);
        if signal != libc::SIGKILL {
            signal_group(g, libc::SIGCONT);
        }
    }
    for p in live
        .iter()
        .filter(|p| p.marked && !groups.contains(&p.pgid))
    {
        signal_pid(p.pid, signal);
        if signal != libc::SIGKILL {
            signal_pid(p.pid, libc::SIGCONT);
        }
    }
}

/// Forgets the groups that have no live member any more: their ids may be
/// reused from now on.
fn retain_live_groups(groups: &mut BTreeSet<i32>, live: &[ProcEntry]) {
    groups.retain(|g| live.iter().any(|p| p.pgid == *g));
}

/// Kills a process tree: SIGTERM to `groups` (which the caller knows to be
/// ours) and to every process marked with `marker`, then SIGKILL after
/// `grace` to whatever is left, repeated while processes keep appearing.
/// Returns how many processes were still alive at the end (0 normally; a
/// process stuck in the kernel can outlive SIGKILL for a while).
pub(crate) async fn kill_tree(mut groups: BTreeSet<i32>, marker: &[u8], grace: Duration) -> usize {
    let live = scan_confirmed(marker, &mut groups).await;
    if live.is_empty() {
        return 0;
    }
    signal_all(&groups, &live, libc::SIGTERM);
    let deadline = Instant::now().checked_add(grace);
    loop {
        tokio::time::sleep(POLL).await;
        if scan_confirmed(marker, &mut groups).await.is_empty() {
            return 0;
        }
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    let mut left = 0;
    for _ in 0..KILL_ROUNDS {
        let live = scan_confirmed(marker, &mut groups).await;
        if live.is_empty() {
            return 0;
        }
        signal_all(&groups, &live, libc::SIGKILL);
        left = live.len();
        // SIGKILL is delivered asynchronously; give the kernel a moment
        // before looking again.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    left
}

/// Scans, forgetting groups that emptied; an empty answer is checked once
/// more a moment later, because a process caught inside `execve` shows no
/// environment (and so no marker) for an instant.
async fn scan_confirmed(marker: &[u8], groups: &mut BTreeSet<i32>) -> Vec<ProcEntry> {
    let live = scan(marker, groups);
    retain_live_groups(groups, &live);
    if !live.is_empty() {
        return live;
    }
    tokio::time::sleep(CONFIRM).await;
    let live = scan(marker, groups);
    retain_live_groups(groups, &live);
    live
}

/// Best-effort synchronous SIGKILL of `groups` and of marked processes, for
/// `Drop`, where nothing can be awaited.
pub(crate) fn kill_now(mut groups: BTreeSet<i32>, marker: &[u8]) {
    for _ in 0..3 {
        let live = scan(marker, &groups);
        retain_live_groups(&mut groups, &live);
        if live.is_empty() {
            return;
        }
        signal_all(&groups, &live, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_and_spaces_in_the_name_parses() {
        let stat = b"4242 (we(ird) name)) S 1 4240 4240 0 -1 4194560 100 0";
        assert_eq!(parse_stat(stat), Some((b'S', 4240)));
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"1 (x) R"), None);
    }

    #[test]
    fn marker_must_match_a_whole_entry() {
        let env = b"A=1\0HECATE_EXEC_ID=local-1-10\0B=2\0";
        assert!(has_entry(env, b"HECATE_EXEC_ID=local-1-10"));
        assert!(!has_entry(env, b"HECATE_EXEC_ID=local-1-1"));
        assert!(!has_entry(env, b"HECATE_EXEC_ID=local-1-100"));
    }

    #[test]
    fn only_groups_with_a_marked_member_are_verified() {
        let groups: BTreeSet<i32> = [10, 20, 30].into();
        let live = [
            ProcEntry {
                pid: 11,
                pgid: 10,
                marked: true,
            },
            ProcEntry {
                pid: 21,
                pgid: 20,
                marked: false,
            },
        ];
        assert_eq!(verified_groups(&groups, &live), [10].into());
    }

    #[test]
    fn scan_finds_a_marked_child() {
        let value = format!("scan-test-{}", fastrand::u64(..));
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .env("HECATE_SCAN_TEST", &value)
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).expect("pid fits");
        // Right after spawn the child may still be inside execve, with its
        // new environment not set up yet: look until it shows.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = scan(&marker("HECATE_SCAN_TEST", &value), &BTreeSet::new());
            if !found.is_empty() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::yield_now();
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, pid);
        assert!(found[0].marked);
    }
}
