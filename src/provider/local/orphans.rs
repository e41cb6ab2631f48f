//! Instances no live `LocalInstance` owns: finding the instance
//! directories under the root (by runtime tag for
//! [`Provider::sweep_orphans`](crate::provider::Provider::sweep_orphans), or
//! by a dead runtime process for `hecate gc`), ending their launchers,
//! killing their processes by the instance marker, and removing their
//! directories; and removing half-made instance directories.
//!
//! Everything inside an instance directory, `instance.json` included, is
//! writable by the instance's commands: it is read for display only. What
//! gc acts on comes from the directory's own name (`local-<runtime pid>-…`)
//! and the kernel: which directory is removed, whose marker is swept, which
//! launcher is ended, whether the runtime is alive.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{fsutil, remove_dir, LocalProvider, ID_PREFIX, LOCK_SUFFIX, META_FILE, PARTIAL_PREFIX};
use crate::error::{Error, Result};
use crate::launcher::{INSTANCE_MARKER, LAUNCHER_ARG};
use crate::provider::{tags, BoxFuture};
use crate::unix;

/// How long ending a leftover launcher may take before gc goes on without
/// waiting for it (polled; a SIGKILLed process normally goes at once).
const LAUNCHER_EXIT_LIMIT: Duration = Duration::from_secs(10);

/// An instance directory whose runtime process is gone (crashed or killed
/// before it could stop its instances), as `hecate gc` lists it. The task
/// and runtime ids come from the instance's `instance.json`, which its
/// commands can rewrite: show them escaped, never act on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// The instance id (its directory name).
    pub id: String,
    /// The task it served (as recorded; untrusted).
    pub task_id: Option<String>,
    /// The `hecate_runtime_id` of the runtime that started it (as
    /// recorded; untrusted).
    pub runtime_id: Option<String>,
    /// When it was created, Unix seconds (0 if unknown).
    pub created: i64,
}

/// The runtime pid an instance id names (`local-<pid>-<n>-<random>`).
fn runtime_pid_of(id: &str) -> Option<i32> {
    id.strip_prefix(ID_PREFIX)?.split('-').next()?.parse().ok()
}

/// Whether `id` is a name an instance directory can have: the prefix, then
/// only characters of a generated id (so it is one path component, and a
/// valid launcher instance id).
fn is_instance_id(id: &str) -> bool {
    id.starts_with(ID_PREFIX)
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl LocalProvider {
    /// Instances under the root whose runtime process (the pid in the
    /// directory's name) no longer exists. An instance whose runtime pid is
    /// alive (even if the pid was reused) is left alone.
    pub fn abandoned(&self) -> Vec<Abandoned> {
        let mut found = Vec::new();
        for (name, path, meta) in self.instance_dirs() {
            if runtime_pid_of(&name).is_some_and(unix::process_exists) {
                continue;
            }
            let created = std::fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            let text = |key: &str| {
                meta.as_ref()
                    .and_then(|m| m.get(key).or_else(|| m.get("metadata")?.get(key)))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            found.push(Abandoned {
                task_id: text("task_id"),
                runtime_id: text(tags::RUNTIME_ID),
                created,
                id: name,
            });
        }
        found
    }

    /// Ends the launcher of an abandoned instance if one still runs (its
    /// runtime died while it was stuck, say), so that its cgroups count as
    /// leftovers. Returns how many launcher processes were killed.
    pub async fn end_launcher(&self, id: &str) -> Result<usize> {
        check_id(id)?;
        Ok(end_launchers(id).await)
    }

    /// Kills every process of an abandoned instance (its launcher, then
    /// whatever carries its marker) and removes its directory. The id must
    /// name a directory directly under the root. Call
    /// [`remove_leftover_cgroups`](crate::launcher::remove_leftover_cgroups)
    /// between [`LocalProvider::end_launcher`] and this to empty its
    /// cgroups too (`hecate gc` does).
    pub async fn remove_abandoned(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let dir = self.root.join(id);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if !m.file_type().is_dir() => {
                return Err(Error::invalid_input(format!(
                    "{id:?} is not an instance directory"
                )))
            }
            _ => {}
        }
        kill_and_remove(id, dir, self.kill_grace).await
    }

    /// Stops the instances under the root whose metadata carries
    /// `hecate_runtime_id = runtime_id`: kills their processes and removes
    /// their directories. Returns their ids.
    pub(super) fn sweep_tagged(&self, runtime_id: &str) -> BoxFuture<Result<Vec<String>>> {
        let found = self.tagged_instances(runtime_id);
        let grace = self.kill_grace;
        Box::pin(async move {
            let mut stopped = Vec::new();
            for (id, dir) in found {
                kill_and_remove(&id, dir, grace).await?;
                stopped.push(id);
            }
            Ok(stopped)
        })
    }

    /// Removes the half-made instance directories of this process (see the
    /// module docs of the backend) whose builder is done: their lock file is
    /// gone, or free. Returns how many were removed.
    pub(super) fn sweep_partial(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        let ours = format!("{PARTIAL_PREFIX}{ID_PREFIX}{}-", std::process::id());
        let mut removed = 0;
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !name.starts_with(&ours)
                || name.ends_with(LOCK_SUFFIX)
                || !entry.file_type().is_ok_and(|t| t.is_dir())
            {
                continue;
            }
            let lock_path = self.root.join(format!("{name}{LOCK_SUFFIX}"));
            // The lock file is made before the directory and removed after
            // it: no lock file means the builder is done (or died).
            let lock = match fsutil::try_lock(&lock_path) {
                Ok(Some(lock)) => Some(lock),
                Ok(None) => continue, // still being built
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    log::debug!("local: {name}: lock: {e}");
                    continue;
                }
            };
            match fsutil::remove_tree(&entry.path()) {
                Ok(()) => {
                    removed += 1;
                    log::info!("local: half-made instance directory {name} removed");
                }
                Err(e) => log::warn!("local: half-made instance {name} not removed: {e}"),
            }
            if lock.is_some() {
                let _ = std::fs::remove_file(&lock_path);
            }
        }
        removed
    }

    /// Instance directories under the root tagged with `runtime_id`.
    fn tagged_instances(&self, runtime_id: &str) -> Vec<(String, PathBuf)> {
        self.instance_dirs()
            .into_iter()
            .filter(|(_, _, meta)| {
                meta.as_ref()
                    .and_then(|m| m.get("metadata"))
                    .and_then(|m| m.get(tags::RUNTIME_ID))
                    .and_then(|v| v.as_str())
                    == Some(runtime_id)
            })
            .map(|(name, path, _)| (name, path))
            .collect()
    }

    /// Every instance directory under the root (real directories, not
    /// symlinks, with an instance id for a name), with its metadata file
    /// parsed where it could be.
    fn instance_dirs(&self) -> Vec<(String, PathBuf, Option<serde_json::Value>)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_owned();
                if !is_instance_id(&name) || !entry.file_type().ok()?.is_dir() {
                    return None;
                }
                let meta = read_meta(&entry.path().join(META_FILE));
                Some((name, entry.path(), meta))
            })
            .collect()
    }
}

/// Reads an `instance.json` (a command may have replaced it by anything:
/// a symlink is not followed, and at most 1 MiB is read).
fn read_meta(path: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    file.take(1 << 20).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

fn check_id(id: &str) -> Result<()> {
    if is_instance_id(id) {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "{id:?} is not a local instance id"
        )))
    }
}

/// Kills every launcher process of instance `id` (found by its command
/// line, `<exe> __launcher <id> ...`) and waits, bounded, until they are
/// gone. Returns how many were killed.
async fn end_launchers(id: &str) -> usize {
    let pids = launcher_pids(id);
    for pid in &pids {
        unix::signal_pid(*pid, libc::SIGKILL);
    }
    let deadline = tokio::time::Instant::now() + LAUNCHER_EXIT_LIMIT;
    while pids.iter().any(|p| unix::is_alive(*p)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !pids.is_empty() {
        log::info!("vm={id} ended {} leftover launcher(s)", pids.len());
    }
    pids.len()
}

/// Live launcher processes of instance `id`.
fn launcher_pids(id: &str) -> BTreeSet<i32> {
    let Ok(pids) = unix::pids() else {
        return BTreeSet::new();
    };
    let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    pids.filter(|&p| p != own && p > 1)
        .filter(|&p| {
            unix::cmdline(p).is_some_and(|c| {
                let mut args = c.split(|b| *b == 0).skip(1);
                args.next() == Some(LAUNCHER_ARG.as_bytes()) && args.next() == Some(id.as_bytes())
            })
        })
        .filter(|&p| unix::is_alive(p))
        .collect()
}

/// Ends the launcher of an instance no live `LocalInstance` owns, kills
/// every process carrying its marker and removes its directory.
async fn kill_and_remove(id: &str, dir: PathBuf, grace: Duration) -> Result<()> {
    end_launchers(id).await;
    let marker = unix::env_entry(INSTANCE_MARKER, id);
    let left = unix::kill_tree(BTreeSet::new(), &marker, grace).await;
    if left > 0 {
        log::warn!("vm={id} {left} processes survived SIGKILL");
    }
    remove_dir(dir).await?;
    log::info!("vm={id} orphaned local instance removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_names_are_instance_ids() {
        assert!(is_instance_id("local-12-3-0badcafe"));
        assert_eq!(runtime_pid_of("local-12-3-0badcafe"), Some(12));
        for bad in [
            "local-../x",
            "local-a/b",
            "other-1",
            ".partial-local-1",
            "local-\u{1b}",
        ] {
            assert!(!is_instance_id(bad), "{bad:?}");
        }
    }
}
