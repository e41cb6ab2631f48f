//! Instances no live `LocalInstance` owns: finding the instance
//! directories under the root (by runtime tag for
//! [`Provider::sweep_orphans`](crate::provider::Provider::sweep_orphans), or
//! by a dead runtime process for `hecate gc`), killing their processes by
//! the instance marker, and removing their directories.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::{remove_dir, LocalProvider, INSTANCE_MARKER, META_FILE};
use crate::error::{Error, Result};
use crate::provider::{tags, BoxFuture};
use crate::unix;

/// An instance directory whose runtime process is gone (crashed or killed
/// before it could stop its instances), as `hecate gc` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// The instance id (its directory name).
    pub id: String,
    /// The task it served.
    pub task_id: Option<String>,
    /// The `hecate_runtime_id` of the runtime that started it.
    pub runtime_id: Option<String>,
    /// When it was created, Unix seconds (0 if unknown).
    pub created: i64,
}

impl LocalProvider {
    /// Instances under the root whose runtime process no longer exists. An
    /// instance whose recorded pid is alive (even if the pid was reused) is
    /// left alone.
    pub fn abandoned(&self) -> Vec<Abandoned> {
        let mut found = Vec::new();
        for (name, path, meta) in self.instance_dirs() {
            let pid = meta
                .as_ref()
                .and_then(|m| m.get("runtime_pid"))
                .and_then(serde_json::Value::as_u64)
                .and_then(|p| i32::try_from(p).ok());
            if pid.is_some_and(unix::process_exists) {
                continue;
            }
            let created = std::fs::metadata(&path)
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

    /// Kills every process of an abandoned instance and removes its
    /// directory. The id must name a directory directly under the root.
    pub async fn remove_abandoned(&self, id: &str) -> Result<()> {
        if !id.starts_with("local-") || id.contains('/') || id.contains("..") {
            return Err(Error::invalid_input(format!(
                "{id:?} is not a local instance id"
            )));
        }
        kill_and_remove(id, self.root.join(id), self.kill_grace).await
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

    /// Every instance directory under the root, with its metadata file
    /// parsed where it could be.
    fn instance_dirs(&self) -> Vec<(String, PathBuf, Option<serde_json::Value>)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_owned();
                if !name.starts_with("local-") {
                    return None;
                }
                let meta = std::fs::read(entry.path().join(META_FILE))
                    .ok()
                    .and_then(|text| serde_json::from_slice(&text).ok());
                Some((name, entry.path(), meta))
            })
            .collect()
    }
}

/// Kills every process carrying an instance's marker and removes its
/// directory: the cleanup of an instance no live `LocalInstance` owns.
async fn kill_and_remove(id: &str, dir: PathBuf, grace: Duration) -> Result<()> {
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::provider::{Provider, StartSlot, StartSpec};

    fn tag(runtime_id: &str) -> BTreeMap<String, String> {
        [(tags::RUNTIME_ID.to_string(), runtime_id.to_string())].into()
    }

    #[actix_rt::test]
    async fn sweep_orphans_stops_only_instances_of_that_runtime() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = crate::Config::default().with_local_root(tmp.path());
        let provider = LocalProvider::new(&config).expect("provider");
        let start = |runtime: &str| StartSpec {
            task_id: "t".into(),
            ttl: None,
            metadata: tag(runtime),
            create_slot: StartSlot::detached(),
        };
        let mine = provider.start(start("rt-1")).await.expect("start");
        let other = provider.start(start("rt-2")).await.expect("start");
        let swept = provider.sweep_orphans("rt-1").await.expect("sweep");
        assert_eq!(swept, vec![mine.id().to_string()]);
        assert!(!provider.root().join(mine.id()).exists());
        assert!(provider.root().join(other.id()).exists());
        other.stop().await.expect("stop");
    }
}
