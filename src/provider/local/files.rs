//! Uploads and downloads of a local (or sandbox) instance: the transfer
//! runs on a blocking thread against the instance's work directory as a
//! [`Root`], so every path is confined to it (see [`crate::files`]). On
//! the sandbox backend what is written is owned by the sandbox's outside
//! id, so the task's commands (root inside) can change it.

use std::path::PathBuf;

use super::Inner;
use crate::error::{Error, ErrorKind, Result};
use crate::files::confined::Root;
use crate::files::{ops, DownloadSpec, Transferred, UploadSpec};
use crate::launcher::sandbox::Isolation;

impl Inner {
    pub(super) async fn upload(&self, spec: UploadSpec) -> Result<Transferred> {
        let target = self.transfer_target(&spec.path)?;
        run_blocking(move || {
            let root = Root::open(&target.dir, target.owner, target.shown)?;
            ops::upload(&root, &target.rel, spec)
        })
        .await
    }

    pub(super) async fn download(&self, spec: DownloadSpec) -> Result<Transferred> {
        let target = self.transfer_target(&spec.path)?;
        run_blocking(move || {
            let root = Root::open(&target.dir, target.owner, target.shown)?;
            ops::download(&root, &target.rel, spec)
        })
        .await
    }

    /// Where a transfer of `path` goes.
    fn transfer_target(&self, path: &str) -> Result<Target> {
        if self.state.borrow().stopped || !self.host_work.is_dir() {
            return Err(Error::new(
                ErrorKind::InstanceGone,
                format!("local instance {} was stopped", self.id),
            ));
        }
        let rel = ops::task_relative(path, &self.work)?;
        let owner = match self.launcher.sandbox().map(|s| &s.isolation) {
            Some(Isolation::UserNamespace { uid, gid }) => Some((*uid, *gid)),
            _ => None,
        };
        let shown = format!("the task's directory {}", self.work);
        Ok(Target {
            dir: self.host_work.clone(),
            rel,
            owner,
            shown,
        })
    }
}

/// Where a transfer goes: the work directory on the host, the path
/// relative to it, the owner of what is created, and how the directory is
/// shown in errors.
struct Target {
    dir: PathBuf,
    rel: PathBuf,
    owner: Option<(u32, u32)>,
    shown: String,
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("the file transfer thread failed: {e}")))?
}
