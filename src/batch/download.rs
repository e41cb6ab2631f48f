//! A batch task's `download`: files fetched from the task's environment
//! after its commands, before it is released, and written under
//! `--out-dir/<task>/`. Each file travels through the task's file transfer
//! ([`Runtime::download`]), in order with its commands, on every backend.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::ErrorKind;
use crate::files::{DownloadSpec, DownloadTarget};
use crate::runtime::Runtime;

/// Most paths one task may download.
pub const MAX_DOWNLOADS: usize = 100;

/// Where one downloaded file went, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Downloaded {
    /// The path as the task gave it (relative paths start at the task's
    /// working directory).
    pub path: String,
    /// Where it was written on this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_to: Option<String>,
    /// Its size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Why it was not downloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Checks a download path: not empty, no control character, no `..`.
pub(super) fn check_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() || path.len() > 4096 {
        return Err("a download path must be 1 to 4096 bytes long".into());
    }
    if path.chars().any(char::is_control) {
        return Err(format!(
            "download path {path:?} contains a control character"
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("download path {path:?} must not contain `..`"));
    }
    Ok(())
}

/// A directory name for a task id: letters, digits, `-`, `_` and `.` as
/// they are, every other byte as `%XX` (so distinct ids stay distinct);
/// never `.` or `..`.
pub fn task_dir_name(task_id: &str) -> String {
    let mut out = String::new();
    for b in task_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !out.is_empty()) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Downloads `paths` of `task` into `out_dir/<task>/`; `ok` is false when
/// the runtime failed to run a download.
pub(super) async fn download_all(
    rt: &Runtime,
    task: &str,
    spec: Option<&std::sync::Arc<crate::spec::TaskSpec>>,
    paths: &[String],
    out_dir: Option<&Path>,
) -> (Vec<Downloaded>, bool) {
    let mut ok = true;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let result = match out_dir {
            None => Err("no --out-dir was given to write downloads to".to_string()),
            Some(dir) => download_one(rt, task, spec, path, &dir.join(task_dir_name(task)))
                .await
                .map_err(|(why, infra)| {
                    ok &= !infra;
                    why
                }),
        };
        out.push(match result {
            Ok((written, bytes)) => Downloaded {
                path: path.clone(),
                written_to: Some(written.display().to_string()),
                bytes: Some(bytes),
                error: None,
            },
            Err(error) => Downloaded {
                path: path.clone(),
                written_to: None,
                bytes: None,
                error: Some(error),
            },
        });
    }
    (out, ok)
}

/// One file: `(where, bytes)`, or why not and whether the runtime failed.
/// It goes through the task's confined file transfer
/// ([`Runtime::download`]): atomic on this machine, and on MorphCloud in
/// checked chunks, so its size is bounded by `HECATE_FILES_MAX_BYTES`,
/// not by the output capture. A relative path starts at the spec's working
/// directory when the spec names one.
async fn download_one(
    rt: &Runtime,
    task: &str,
    spec: Option<&std::sync::Arc<crate::spec::TaskSpec>>,
    path: &str,
    task_dir: &Path,
) -> std::result::Result<(PathBuf, u64), (String, bool)> {
    let in_task = match spec.and_then(|s| s.workdir.as_deref()) {
        Some(dir) if !path.starts_with('/') => format!("{}/{path}", dir.trim_end_matches('/')),
        _ => path.to_string(),
    };
    let target = task_dir.join(path.trim_start_matches('/'));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| (format!("creating {}: {e}", parent.display()), false))?;
    }
    let outcome = rt
        .download(
            task,
            DownloadSpec::new(in_task, DownloadTarget::File(target.clone())),
        )
        .await
        .map_err(|e| {
            // A path that is missing, not a file or over a limit is the
            // task's; anything else is the runtime's failure.
            let infra = !matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Rejected);
            (format!("{e}"), infra)
        })?;
    Ok((target, outcome.transferred.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_dir_names_are_safe_and_distinct() {
        assert_eq!(task_dir_name("t-1_a.b"), "t-1_a.b");
        assert_eq!(task_dir_name(".."), "%2E.");
        assert_eq!(task_dir_name("a/b"), "a%2Fb");
        assert_ne!(task_dir_name("a/b"), task_dir_name("a%2Fb"));
    }
}
