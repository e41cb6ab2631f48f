//! What a task's [`TaskSpec`](crate::spec::TaskSpec) changes in a local or
//! sandbox instance: the sandbox's root filesystem (`image`) and limits.
//! The plain local backend has no images, and its commands run on the
//! host, so it refuses an image and an absolute working directory (which
//! would lie outside the task's directory).

use std::path::Path;

use crate::config::SandboxConfig;
use crate::error::{Error, Result};
use crate::provider::StartSpec;

/// The sandbox settings and shell of one instance: the provider's, with
/// the task spec's image and limits. Errors are invalid input naming the
/// field.
pub(super) fn instance_settings(
    sandbox: Option<&SandboxConfig>,
    shell: &str,
    spec: &StartSpec,
) -> Result<(Option<SandboxConfig>, String)> {
    let Some(task) = spec.task_spec.as_deref() else {
        return Ok((sandbox.cloned(), shell.to_string()));
    };
    let Some(sandbox) = sandbox else {
        if task.image.is_some() {
            return Err(Error::invalid_input(
                "spec image: the plain local backend has no images (use the sandbox backend \
                 with a root filesystem directory, or morph with a snapshot id)",
            ));
        }
        if task.workdir.as_deref().is_some_and(|d| d.starts_with('/')) {
            return Err(Error::invalid_input(
                "spec workdir: the plain local backend takes a directory relative to the \
                 task's directory (an absolute one would lie outside it)",
            ));
        }
        if task.memory_mb.is_some() || task.pids.is_some() {
            return Err(Error::invalid_input(
                "spec memory_mb/pids: limits need the sandbox backend",
            ));
        }
        return Ok((None, shell.to_string()));
    };
    let mut settings = sandbox.clone();
    let mut shell = shell.to_string();
    if let Some(image) = &task.image {
        let dir = Path::new(image);
        if !dir.is_absolute() {
            return Err(Error::invalid_input(format!(
                "spec image: {image:?} must be the absolute path of a root filesystem directory"
            )));
        }
        let canonical = dir.canonicalize().ok().filter(|d| d.is_dir());
        let Some(canonical) = canonical else {
            return Err(Error::invalid_input(format!(
                "spec image: {image:?} is not a directory"
            )));
        };
        shell = super::sandbox_shell(Some(&canonical))
            .map_err(|e| Error::invalid_input(format!("spec image: {}", e.message())))?;
        settings.rootfs = Some(canonical);
    }
    if let Some(mb) = task.memory_mb {
        settings.memory_limit = Some(mb.saturating_mul(1024 * 1024));
    }
    if let Some(pids) = task.pids {
        settings.pids_limit = Some(pids);
    }
    Ok((Some(settings), shell))
}
