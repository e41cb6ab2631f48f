//! Killing a process tree: the process groups a caller started and every
//! process carrying its marker entry, in rounds until none is left.
//!
//! A process group is signalled only while it is known to be the caller's:
//! Linux does not hand out a pid again while a process group of that id
//! still has members, so a group that was ours when we last saw it
//! non-empty is still ours. A process that left its group (`setsid`, double
//! fork) is found by its marker and signalled on its own; its group is
//! never signalled, as it might have joined a group that is not ours.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::{has_env_entry, own_pid, signal_group, signal_pid};

/// How often the grace period checks whether everything has exited.
const POLL: Duration = Duration::from_millis(20);
/// How many SIGKILL rounds are tried against processes that keep forking.
const KILL_ROUNDS: usize = 50;
/// How long after an empty scan a second one confirms it.
const CONFIRM: Duration = Duration::from_millis(5);

/// A live (not zombie) process found by [`scan`]: marked, or in a group of
/// interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEntry {
    /// Its pid.
    pub pid: i32,
    /// Its process group id.
    pub pgid: i32,
    /// Whether its environment has the marker entry.
    pub marked: bool,
}

/// Live processes whose environment has the entry `marker` exactly (see
/// [`env_entry`](super::env_entry)), or whose process group is in
/// `groups`. Processes of other users (unreadable environment) and this
/// process itself are skipped.
pub fn scan(marker: &[u8], groups: &BTreeSet<i32>) -> Vec<ProcEntry> {
    let own = own_pid();
    let pids = match super::pids() {
        Ok(pids) => pids,
        Err(err) => {
            log::warn!("cannot read /proc ({err}); escaped processes cannot be found");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for pid in pids {
        if pid == own {
            continue;
        }
        // A process may exit between the listing and these reads: skip it.
        let Some(stat) = super::stat(pid) else {
            continue;
        };
        if stat.is_dead() {
            continue;
        }
        let marked = super::environ(pid).is_some_and(|env| has_env_entry(&env, marker));
        if marked || groups.contains(&stat.pgid) {
            found.push(ProcEntry {
                pid,
                pgid: stat.pgid,
                marked,
            });
        }
    }
    found
}

/// The groups among `groups` that have a live member carrying the marker:
/// these are certainly the caller's, whatever happened to their pids since.
pub fn verified_groups(groups: &BTreeSet<i32>, live: &[ProcEntry]) -> BTreeSet<i32> {
    groups
        .iter()
        .copied()
        .filter(|g| live.iter().any(|p| p.pgid == *g && p.marked))
        .collect()
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
/// its own) and to every process marked with `marker`, then SIGKILL after
/// `grace` to whatever is left, repeated while processes keep appearing.
/// Returns how many processes were still alive at the end (0 normally; a
/// process stuck in the kernel can outlive SIGKILL for a while). Timers go
/// through tokio.
pub async fn kill_tree(mut groups: BTreeSet<i32>, marker: &[u8], grace: Duration) -> usize {
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

/// Synchronous SIGKILL of `groups` (which the caller knows to be its own)
/// and of marked processes, in at most `rounds` scans (a process may fork
/// between a scan and its death), for places where nothing can be awaited
/// (`Drop`, a cleanup under no runtime). Only groups with a live member are
/// signalled. Returns how many processes the scans found in all.
pub fn kill_now(mut groups: BTreeSet<i32>, marker: &[u8], rounds: usize) -> usize {
    let mut found = 0;
    for _ in 0..rounds {
        let live = scan(marker, &groups);
        retain_live_groups(&mut groups, &live);
        if live.is_empty() {
            break;
        }
        signal_all(&groups, &live, libc::SIGKILL);
        found += live.len();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unix::env_entry;

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

    /// Spawns `/bin/sleep 30` marked with a fresh entry and waits until a
    /// scan sees it (right after spawn the child may still be inside
    /// execve, with its new environment not set up yet).
    fn marked_sleep() -> (std::process::Child, Vec<u8>, Vec<ProcEntry>) {
        let value = format!("scan-test-{}", fastrand::u64(..));
        let child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .env("HECATE_SCAN_TEST", &value)
            .spawn()
            .expect("spawn sleep");
        let marker = env_entry("HECATE_SCAN_TEST", &value);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = scan(&marker, &BTreeSet::new());
            if !found.is_empty() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::yield_now();
        };
        (child, marker, found)
    }

    #[test]
    fn scan_finds_a_marked_child() {
        let (mut child, marker, found) = marked_sleep();
        let pid = i32::try_from(child.id()).expect("pid fits");
        assert_eq!(super::super::processes_with_env(&marker), vec![pid]);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, pid);
        assert!(found[0].marked);
    }

    #[test]
    fn kill_now_kills_a_marked_child() {
        let (mut child, marker, found) = marked_sleep();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(kill_now(BTreeSet::new(), &marker, 3) >= 1);
        let status = child.wait().expect("wait");
        assert_eq!(crate::unix::exit_code(status), 128 + libc::SIGKILL);
    }
}
