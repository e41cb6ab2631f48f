//! The sandbox's memory and process limits: written by the outer launcher
//! (in the host's namespaces) to the instance's cgroup before it forks, so
//! the launcher and every command are under them; rlimits set by PID 1
//! where no cgroup could be written. Also reads the OOM-kill count.

use std::path::{Path, PathBuf};

use super::super::cgroup::{own_cgroup, CgroupMount, InstanceCgroups, BASE_DIR};
use super::{LimitMode, LimitsReport, SandboxSpec};

/// A v1 cgroup made for the instance's limits: the instance's tracking
/// cgroups may be v2 (then v1 hierarchies are not used) or lack the
/// controller, and a controller bound to v1 is missing from v2.
#[derive(Debug, Clone)]
struct OwnCgroup {
    dir: PathBuf,
    /// Where the outer launcher was before joining, to go back at the end.
    origin: PathBuf,
}

/// What [`apply`] did, for PID 1 and for the clean-up.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub(super) report: LimitsReport,
    own: Vec<OwnCgroup>,
}

/// The directory of the instance cgroup with label kind `kind` (`v2`,
/// `v1-pids`).
fn dir_of(cgroups: &InstanceCgroups, kind: &str) -> Option<PathBuf> {
    cgroups.labels().iter().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| *k == kind)
            .map(|(_, d)| PathBuf::from(d))
    })
}

/// Writes `file` = `value` in v2 cgroup `dir` after delegating
/// `controller` down to it (`<root>/hecate/<instance>`: the root and
/// `hecate/` must both enable it). False when the controller is not in
/// the v2 hierarchy (bound to v1) or the write fails.
fn v2_limit(dir: &Path, controller: &str, file: &str, value: &str) -> bool {
    let base = dir.parent();
    for d in [base.and_then(Path::parent), base].into_iter().flatten() {
        let _ = std::fs::write(d.join("cgroup.subtree_control"), format!("+{controller}"));
    }
    std::fs::write(dir.join(file), value).is_ok()
}

/// The v1 hierarchy of `controller`: its mount point and this process's
/// cgroup in it.
fn v1_mount(controller: &str) -> Option<(PathBuf, PathBuf)> {
    let own = own_cgroup(controller)?;
    CgroupMount::all()
        .into_iter()
        .find(|m| m.fstype == "cgroup" && m.has(controller))
        .map(|m| (m.point, own))
}

/// Makes `<controller mount>/hecate/<instance>` (at the hierarchy's root,
/// else under this process's own cgroup), writes `writes` in order, and
/// moves this process in. An optional file (`?` prefix) may be missing.
fn v1_cgroup(controller: &str, instance: &str, writes: &[(&str, String)]) -> Option<OwnCgroup> {
    let (point, own) = v1_mount(controller)?;
    let origin = point.join(&own);
    let mut bases = vec![point.join(BASE_DIR)];
    if !own.as_os_str().is_empty() {
        bases.push(origin.join(BASE_DIR));
    }
    bases.into_iter().find_map(|base| {
        let dir = base.join(instance);
        std::fs::create_dir_all(&dir).ok()?;
        let ok = writes
            .iter()
            .all(|(file, value)| match file.strip_prefix('?') {
                Some(f) => !dir.join(f).exists() || std::fs::write(dir.join(f), value).is_ok(),
                None => std::fs::write(dir.join(file), value).is_ok(),
            })
            && std::fs::write(dir.join("cgroup.procs"), "0").is_ok();
        if ok {
            Some(OwnCgroup {
                dir,
                origin: origin.clone(),
            })
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    })
}

/// Writes the limits `spec` asks for to the instance's cgroups (made by
/// `cgroups`, which the outer launcher already joined), or to v1 cgroups
/// of its own, before the sandbox is forked.
pub(super) fn apply(spec: &SandboxSpec, instance: &str, cgroups: &InstanceCgroups) -> Limits {
    let v2 = dir_of(cgroups, "v2");
    let mut own = Vec::new();
    let pids = match spec.pids_limit {
        None => LimitMode::Unlimited,
        Some(n) => {
            let n = n.to_string();
            let in_v2 = v2
                .as_deref()
                .is_some_and(|d| v2_limit(d, "pids", "pids.max", &n));
            let mut in_v1 = || match dir_of(cgroups, "v1-pids") {
                Some(d) => std::fs::write(d.join("pids.max"), &n).is_ok(),
                None => v1_cgroup("pids", instance, &[("pids.max", n.clone())])
                    .map(|c| own.push(c))
                    .is_some(),
            };
            if in_v2 || in_v1() {
                LimitMode::Cgroup
            } else {
                LimitMode::Rlimit
            }
        }
    };
    let mut oom_events = None;
    let memory = match spec.memory_limit {
        None => LimitMode::Unlimited,
        Some(bytes) => {
            let bytes = bytes.to_string();
            if let Some(dir) = v2
                .as_deref()
                .filter(|d| v2_limit(d, "memory", "memory.max", &bytes))
            {
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                oom_events = Some(dir.join("memory.events"));
            } else if let Some(c) = v1_cgroup(
                "memory",
                instance,
                // Without swap accounting memsw is missing: the limit then
                // covers memory only and a swapping command is slowed, not
                // killed. memsw must not be below the memory limit: second.
                &[
                    ("memory.limit_in_bytes", bytes.clone()),
                    ("?memory.memsw.limit_in_bytes", bytes.clone()),
                ],
            ) {
                oom_events = Some(c.dir.join("memory.oom_control"));
                own.push(c);
            }
            if oom_events.is_some() {
                LimitMode::Cgroup
            } else {
                LimitMode::Rlimit
            }
        }
    };
    Limits {
        report: LimitsReport {
            memory,
            pids,
            oom_events,
        },
        own,
    }
}

impl Limits {
    /// PID 1: the rlimits standing in for cgroup limits that could not be
    /// written (inherited by every command).
    pub(super) fn apply_rlimits(&self, spec: &SandboxSpec) -> Result<(), String> {
        let set = |resource, value: u64, what: &str| {
            let lim = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: a live rlimit.
            if unsafe { libc::setrlimit(resource, &lim) } != 0 {
                return Err(format!(
                    "sandbox: cannot set the {what} rlimit: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        };
        if let (LimitMode::Rlimit, Some(bytes)) = (self.report.memory, spec.memory_limit) {
            set(libc::RLIMIT_AS, bytes, "memory")?;
        }
        if let (LimitMode::Rlimit, Some(n)) = (self.report.pids, spec.pids_limit) {
            set(libc::RLIMIT_NPROC, n, "process")?;
        }
        Ok(())
    }

    /// The outer launcher, after the sandbox ended: leaves and removes the
    /// v1 cgroups it made for the limits (limits in the instance's own
    /// cgroups go with them).
    pub(super) fn remove(&self) {
        for c in &self.own {
            let _ = std::fs::write(c.origin.join("cgroup.procs"), "0");
            if let Err(err) = std::fs::remove_dir(&c.dir) {
                eprintln!("hecate-launcher: cannot remove {} ({err})", c.dir.display());
            }
        }
    }
}

/// The `oom_kill <n>` count of a v1 `memory.oom_control` or v2
/// `memory.events` file.
pub(super) fn read_oom_kills(file: &Path) -> Option<u64> {
    parse_oom_kills(&std::fs::read_to_string(file).ok()?)
}

fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix("oom_kill ")
            .and_then(|n| n.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_count_is_read_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kills(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v2), Some(2));
        assert_eq!(parse_oom_kills("oom 1\n"), None);
    }
}
