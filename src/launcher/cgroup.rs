//! The instance's cgroups: finding a hierarchy we may write, one cgroup per
//! instance (`<mount>/hecate/<instance id>`, the launcher itself in its
//! `launcher` child) and one per command (`<instance dir>/<command id>`),
//! killing everything in a command's cgroup, removing the directories, and
//! removing what a dead launcher left behind.
//!
//! With cgroup v2 a command is killed with `cgroup.kill` (atomic, the
//! kernel's own fork-safe walk). With v1 the `freezer` controller stops the
//! cgroup, every pid in it gets SIGKILL, it is thawed so the signals land,
//! and that repeats until it is empty; the v1 `pids` hierarchy alone (no
//! freezer) is killed in rounds without freezing.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CgroupMode;

/// The directory under a hierarchy's root that holds every instance.
pub const BASE_DIR: &str = "hecate";
/// The child of an instance cgroup the launcher itself lives in; empty
/// means the launcher is gone.
pub const LAUNCHER_DIR: &str = "launcher";
/// How many kill rounds run before giving up on a cgroup.
const KILL_ROUNDS: usize = 400;
/// The pause between rounds while killed processes finish exiting.
const ROUND_PAUSE: Duration = Duration::from_micros(500);
/// How many times the v1 freezer state is read before killing anyway.
const FREEZE_POLLS: usize = 200;

/// Which kind of hierarchy a directory lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The unified hierarchy (`cgroup.kill`, `cgroup.events`).
    V2,
    /// The v1 freezer controller.
    V1Freezer,
    /// The v1 pids controller.
    V1Pids,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::V2 => "v2",
            Kind::V1Freezer => "v1-freezer",
            Kind::V1Pids => "v1-pids",
        }
    }
}

/// One hierarchy the instance uses.
#[derive(Debug, Clone)]
struct Hierarchy {
    kind: Kind,
    /// `<base>/<instance id>`.
    instance: PathBuf,
    /// The launcher's cgroup before it moved in (it moves back at stop so
    /// the directory can be removed).
    origin: PathBuf,
}

/// The cgroups of one instance (possibly none: then commands are tracked
/// by descent and markers only).
#[derive(Debug, Clone, Default)]
pub struct InstanceCgroups {
    hierarchies: Vec<Hierarchy>,
}

/// A cgroup file system mounted at its root (`cgroup` v1 or `cgroup2`), as
/// `/proc/self/mountinfo` lists it: where, which type, its super options
/// (the v1 controllers). A bind mount of a sub-tree (a container's view)
/// does not show where `hecate/` at the real root would be: it is left out.
pub(super) struct CgroupMount {
    pub(super) point: PathBuf,
    pub(super) fstype: String,
    opts: String,
}

impl CgroupMount {
    pub(super) fn all() -> Vec<CgroupMount> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter_map(|line| {
                let (pre, post) = line.split_once(" - ")?;
                let pre: Vec<&str> = pre.split(' ').collect();
                let post: Vec<&str> = post.split(' ').collect();
                let (root, point, fstype, opts) =
                    (pre.get(3)?, pre.get(4)?, post.first()?, post.get(2)?);
                (*root == "/" && (*fstype == "cgroup" || *fstype == "cgroup2")).then(|| {
                    CgroupMount {
                        point: PathBuf::from(point),
                        fstype: (*fstype).to_string(),
                        opts: (*opts).to_string(),
                    }
                })
            })
            .collect()
    }

    pub(super) fn has(&self, option: &str) -> bool {
        self.opts.split(',').any(|o| o == option)
    }
}

/// This process's cgroup (relative to the mount) in the v1 hierarchy of
/// `controller`, or in the v2 hierarchy for `""`.
pub(super) fn own_cgroup(controller: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| PathBuf::from(path.trim_start_matches('/')))
    })
}

/// A mounted cgroup hierarchy: its kind, mount point, and this process's
/// cgroup in it (relative to the mount).
fn mounts() -> Vec<(Kind, PathBuf, PathBuf)> {
    let own_path = |wanted: &str| own_cgroup(wanted).unwrap_or_default();
    let mut found = Vec::new();
    for m in CgroupMount::all() {
        if m.fstype == "cgroup2" {
            found.push((Kind::V2, m.point, own_path("")));
        } else {
            for (ctrl, kind) in [("freezer", Kind::V1Freezer), ("pids", Kind::V1Pids)] {
                if m.has(ctrl) {
                    found.push((kind, m.point.clone(), own_path(ctrl)));
                }
            }
        }
    }
    found
}

/// Makes `<base>/<instance>/launcher` and moves this process into it.
fn try_hierarchy(kind: Kind, base: PathBuf, origin: PathBuf, instance: &str) -> Option<Hierarchy> {
    let dir = base.join(instance);
    let launcher = dir.join(LAUNCHER_DIR);
    std::fs::create_dir_all(&launcher).ok()?;
    if kind == Kind::V2 && !dir.join("cgroup.kill").exists() {
        // Before Linux 5.14 there is no atomic kill: v1 does better.
        let _ = std::fs::remove_dir(&launcher);
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    if let Err(err) = std::fs::write(launcher.join("cgroup.procs"), "0") {
        eprintln!(
            "hecate-launcher: cannot join {} ({err})",
            launcher.display()
        );
        let _ = std::fs::remove_dir(&launcher);
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(Hierarchy {
        kind,
        instance: dir,
        origin,
    })
}

impl InstanceCgroups {
    /// Creates the instance's cgroups as `mode` asks and the machine
    /// allows, moving the calling process (the launcher) into them. Each
    /// hierarchy is tried at its root's `hecate/` (where `hecate gc` looks)
    /// and then under this process's own cgroup (a delegated v2 subtree).
    pub fn setup(mode: CgroupMode, instance: &str) -> InstanceCgroups {
        let wanted = |kind: Kind| match mode {
            CgroupMode::Off => false,
            CgroupMode::V2 => kind == Kind::V2,
            CgroupMode::V1 => kind != Kind::V2,
            CgroupMode::Auto => true,
        };
        let mut hierarchies = Vec::new();
        for (kind, point, own) in mounts() {
            if !wanted(kind) || hierarchies.iter().any(|h: &Hierarchy| h.kind == kind) {
                continue;
            }
            if mode == CgroupMode::Auto
                && kind != Kind::V2
                && hierarchies.iter().any(|h: &Hierarchy| h.kind == Kind::V2)
            {
                continue;
            }
            let origin = point.join(&own);
            let mut bases = vec![point.join(BASE_DIR)];
            if !own.as_os_str().is_empty() {
                bases.push(origin.join(BASE_DIR));
            }
            if let Some(h) = bases
                .into_iter()
                .find_map(|base| try_hierarchy(kind, base, origin.clone(), instance))
            {
                hierarchies.push(h);
            }
        }
        // Auto prefers v2: if it came after v1 in the mount table, drop v1.
        if mode == CgroupMode::Auto && hierarchies.iter().any(|h| h.kind == Kind::V2) {
            let (keep, drop): (Vec<_>, Vec<_>) =
                hierarchies.into_iter().partition(|h| h.kind == Kind::V2);
            let dropped = InstanceCgroups { hierarchies: drop };
            dropped.remove_instance();
            hierarchies = keep;
        }
        InstanceCgroups { hierarchies }
    }

    /// `kind:dir` for each hierarchy in use.
    pub fn labels(&self) -> Vec<String> {
        self.hierarchies
            .iter()
            .map(|h| format!("{}:{}", h.kind.label(), h.instance.display()))
            .collect()
    }

    /// Whether commands are tracked by any cgroup.
    pub fn is_empty(&self) -> bool {
        self.hierarchies.is_empty()
    }

    /// Creates the command's cgroup in every hierarchy and returns the
    /// `cgroup.procs` files its process must write itself into.
    pub fn create_command(&self, id: u64) -> io::Result<Vec<PathBuf>> {
        let mut joins = Vec::new();
        for h in &self.hierarchies {
            let dir = h.instance.join(id.to_string());
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    self.remove_command(id);
                    return Err(e);
                }
            }
            joins.push(dir.join("cgroup.procs"));
        }
        Ok(joins)
    }

    /// Pids in the command's cgroups (and any sub-cgroups it made).
    pub fn command_procs(&self, id: u64) -> Vec<i32> {
        let mut all = Vec::new();
        for h in &self.hierarchies {
            collect_procs(&h.instance.join(id.to_string()), &mut all);
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Sends `signal` to everything in the command's cgroups; for SIGKILL
    /// repeats until they are empty, calling `reap` between rounds (the
    /// launcher reaps its dead children there). Returns the pids left.
    pub fn kill_command(
        &self,
        id: u64,
        signal: i32,
        signalled: &mut BTreeSet<i32>,
        reap: &mut dyn FnMut(),
    ) -> Vec<i32> {
        let dirs: Vec<(Kind, PathBuf)> = self
            .hierarchies
            .iter()
            .map(|h| (h.kind, h.instance.join(id.to_string())))
            .collect();
        kill_dirs(&dirs, signal, signalled, reap)
    }

    /// Removes the command's cgroup directories; false if one is still busy.
    pub fn remove_command(&self, id: u64) -> bool {
        let mut all = true;
        for h in &self.hierarchies {
            all &= remove_tree(&h.instance.join(id.to_string()));
        }
        all
    }

    /// Kills everything in every command cgroup of the instance (not the
    /// launcher's own). Returns the pids left.
    pub fn kill_all(
        &self,
        signal: i32,
        signalled: &mut BTreeSet<i32>,
        reap: &mut dyn FnMut(),
    ) -> Vec<i32> {
        let dirs: Vec<(Kind, PathBuf)> = self
            .hierarchies
            .iter()
            .flat_map(|h| command_dirs(&h.instance).into_iter().map(|d| (h.kind, d)))
            .collect();
        kill_dirs(&dirs, signal, signalled, reap)
    }

    /// Moves the launcher back to where it came from and removes the
    /// instance's directories (the shared `hecate/` stays).
    pub fn remove_instance(&self) -> bool {
        let mut all = true;
        for h in &self.hierarchies {
            if let Err(err) = std::fs::write(h.origin.join("cgroup.procs"), "0") {
                eprintln!(
                    "hecate-launcher: cannot leave {} ({err})",
                    h.instance.display()
                );
            }
            all &= remove_tree(&h.instance);
        }
        all
    }
}

/// A command cgroup's directory names under an instance directory.
fn command_dirs(instance: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(instance) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != LAUNCHER_DIR)
        .map(|e| e.path())
        .collect()
}

/// Appends the pids of `dir` and every cgroup below it.
fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

/// Whether a v2 cgroup (with its subtree) has no process left.
fn v2_unpopulated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(events) => events.lines().any(|l| l.trim() == "populated 0"),
        // Gone already.
        Err(_) => true,
    }
}

/// Freezes (v1) every freezer directory in `dirs`, waiting until the
/// kernel reports them frozen or the polls run out.
fn freeze(dirs: &[&PathBuf], state: &str) {
    for d in dirs {
        let _ = std::fs::write(d.join("freezer.state"), state);
    }
    if state != "FROZEN" {
        return;
    }
    for _ in 0..FREEZE_POLLS {
        let frozen = dirs.iter().all(|d| {
            std::fs::read_to_string(d.join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(true)
        });
        if frozen {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The kill loop shared by one command and the whole instance.
/// Every pid sent a signal is added to `signalled`.
fn kill_dirs(
    dirs: &[(Kind, PathBuf)],
    signal: i32,
    signalled: &mut BTreeSet<i32>,
    reap: &mut dyn FnMut(),
) -> Vec<i32> {
    let procs = || {
        let mut all = Vec::new();
        for (_, d) in dirs {
            collect_procs(d, &mut all);
        }
        all.sort_unstable();
        all.dedup();
        all
    };
    let send = |pids: &[i32], signal: i32| {
        for pid in pids {
            // SAFETY: kill(2) has no memory effects. The pid is in our
            // cgroup, so it is one of ours.
            unsafe { libc::kill(*pid, signal) };
        }
    };
    if signal != libc::SIGKILL {
        let pids = procs();
        send(&pids, signal);
        signalled.extend(pids.iter().copied());
        return pids;
    }
    let v2: Vec<&PathBuf> = dirs
        .iter()
        .filter(|(k, _)| *k == Kind::V2)
        .map(|(_, d)| d)
        .collect();
    let freezers: Vec<&PathBuf> = dirs
        .iter()
        .filter(|(k, _)| *k == Kind::V1Freezer)
        .map(|(_, d)| d)
        .collect();
    for _ in 0..KILL_ROUNDS {
        for d in &v2 {
            let _ = std::fs::write(d.join("cgroup.kill"), "1");
        }
        if !freezers.is_empty() {
            freeze(&freezers, "FROZEN");
        }
        let pids = procs();
        send(&pids, libc::SIGKILL);
        signalled.extend(pids.iter().copied());
        if !freezers.is_empty() {
            freeze(&freezers, "THAWED");
        }
        reap();
        if procs().is_empty() && v2.iter().all(|d| v2_unpopulated(d)) {
            return Vec::new();
        }
        std::thread::sleep(ROUND_PAUSE);
        reap();
    }
    procs()
}

/// Removes a cgroup directory and its sub-cgroups, deepest first.
fn remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// [`remove_tree`], tried again until `limit`: a cgroup stays busy for a
/// moment after its last process left it (the kernel releases it once
/// that process has finished exiting).
fn remove_tree_within(dir: &Path, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if remove_tree(dir) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long [`remove_leftover_cgroups`] waits for the processes it killed
/// to finish exiting.
const LEFTOVER_DEATH_LIMIT: Duration = Duration::from_secs(5);

/// What [`remove_leftover_cgroups`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftoverReport {
    /// Instance cgroup directories whose launcher was gone and that were
    /// emptied and removed.
    pub removed: Vec<PathBuf>,
    /// Such directories that could not be removed (processes survived or
    /// the directory is busy), with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// Finds instance cgroups under every hierarchy's `hecate/` whose launcher
/// is gone (its `launcher` cgroup is empty or missing), kills whatever is
/// left in them and removes them. Instances with a live launcher are not
/// touched. Cgroups made under a delegated subtree (not at a hierarchy's
/// root) are not searched. Needs the rights that made them (root, usually).
/// With `dry_run` nothing is killed or removed; `removed` lists what would be.
pub fn remove_leftover_cgroups(dry_run: bool) -> LeftoverReport {
    let mut report = LeftoverReport::default();
    let mut seen = std::collections::BTreeSet::new();
    for (kind, point, _) in mounts() {
        let base = point.join(BASE_DIR);
        if !seen.insert(base.clone()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for e in entries.flatten() {
            let dir = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let mut launcher = Vec::new();
            collect_procs(&dir.join(LAUNCHER_DIR), &mut launcher);
            // A launcher that is still setting up has made its directory
            // but not joined it yet: its command line says it is alive.
            let name = e.file_name();
            let running = || name.to_str().is_some_and(launcher_running);
            if !launcher.is_empty() && !running() {
                // A launcher just ended (gc ends leftover launchers first;
                // a sandbox's init goes with it) may still be exiting, no
                // longer a launcher by its command line but still listed:
                // wait for it, bounded.
                let deadline = std::time::Instant::now() + LEFTOVER_DEATH_LIMIT;
                while !launcher.is_empty() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                    launcher.clear();
                    collect_procs(&dir.join(LAUNCHER_DIR), &mut launcher);
                }
            }
            if !launcher.is_empty() || running() {
                continue;
            }
            if dry_run {
                report.removed.push(dir);
                continue;
            }
            let dirs: Vec<(Kind, PathBuf)> =
                command_dirs(&dir).into_iter().map(|d| (kind, d)).collect();
            // Not our children: init reaps them. A killed process leaves
            // the cgroup before it has finished exiting: wait (bounded)
            // until each is dead, so that "removed" means "nothing runs".
            let mut signalled = BTreeSet::new();
            let mut left = kill_dirs(&dirs, libc::SIGKILL, &mut signalled, &mut || {});
            let deadline = std::time::Instant::now() + LEFTOVER_DEATH_LIMIT;
            loop {
                signalled.retain(|p| super::procs::alive(*p));
                if signalled.is_empty() || std::time::Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            left.extend(signalled);
            if !left.is_empty() {
                report
                    .failed
                    .push((dir, format!("{} processes survived", left.len())));
            } else if remove_tree_within(&dir, LEFTOVER_DEATH_LIMIT) {
                report.removed.push(dir);
            } else {
                report.failed.push((dir, "directory busy".into()));
            }
        }
    }
    remove_leftover_limit_cgroups(dry_run, &mut report);
    report
}

/// The v1 `memory` (and `cpu`) cgroups a sandbox's limits made
/// (`<mount>/hecate/<instance>`, without a `launcher` child) whose launcher
/// is gone: what is still in them is killed and they are removed. Run
/// after the tracking hierarchies were emptied, so they are usually empty.
fn remove_leftover_limit_cgroups(dry_run: bool, report: &mut LeftoverReport) {
    let bases: BTreeSet<PathBuf> = CgroupMount::all()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" && m.has("memory") && !(m.has("freezer") || m.has("pids")))
        .map(|m| m.point.join(BASE_DIR))
        .collect();
    for base in bases {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for e in entries.flatten() {
            let dir = e.path();
            let name = e.file_name();
            if !e.file_type().is_ok_and(|t| t.is_dir())
                || name.to_str().is_none_or(launcher_running)
            {
                continue;
            }
            if dry_run {
                report.removed.push(dir);
                continue;
            }
            let mut pids = Vec::new();
            collect_procs(&dir, &mut pids);
            for pid in &pids {
                // SAFETY: a plain system call; the pids are in a cgroup
                // no live launcher owns.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if remove_tree_within(&dir, LEFTOVER_DEATH_LIMIT) {
                report.removed.push(dir);
            } else {
                report.failed.push((dir, "directory busy".into()));
            }
        }
    }
}

/// Whether a launcher process for `instance` runs (its command line is
/// `<exe> __launcher <instance> ...`).
fn launcher_running(instance: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|cmdline| {
            let mut args = cmdline.split(|b| *b == 0).skip(1);
            args.next() == Some(super::LAUNCHER_ARG.as_bytes())
                && args.next() == Some(instance.as_bytes())
        })
    })
}
