//! A batch task's `download`: files fetched from the task's environment
//! after its commands, before it is released, and written under
//! `--out-dir/<task>/`. Each file travels through the task's own exec path
//! (`base64` of it, decoded here), so it works on every backend; it is
//! bounded by the runtime's capture limit (`Config::capture_bytes`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::runtime::{ExecRequest, Runtime};

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
async fn download_one(
    rt: &Runtime,
    task: &str,
    spec: Option<&std::sync::Arc<crate::spec::TaskSpec>>,
    path: &str,
    task_dir: &Path,
) -> std::result::Result<(PathBuf, u64), (String, bool)> {
    let quoted = crate::spec::sh_quote(path);
    let command = format!(
        "f={quoted}; if [ ! -f \"$f\" ]; then echo \"$f: not a regular file\" >&2; exit 2; fi; \
         base64 -w0 -- \"$f\""
    );
    // Not through the persistent shell: relative paths start at the
    // working directory, whatever the agent's last `cd` was.
    let mut request = ExecRequest::new(command).persistent_shell(false);
    request.spec = spec.cloned();
    let outcome = rt
        .exec(task, request)
        .await
        .map_err(|e| (format!("the download did not run: {e}"), true))?;
    if outcome.exit_code != 0 {
        return Err((
            format!(
                "exit {}: {}",
                outcome.exit_code,
                crate::spec::short(outcome.stderr.to_text().trim(), 500)
            ),
            false,
        ));
    }
    if outcome.stdout.is_truncated() {
        return Err((
            format!(
                "the file is larger than a download can carry (about {} bytes)",
                rt.config().capture_bytes / 4 * 3
            ),
            false,
        ));
    }
    let bytes = decode_base64(outcome.stdout.head.trim())
        .ok_or_else(|| ("the file's encoding came back damaged".to_string(), false))?;
    let target = task_dir.join(path.trim_start_matches('/'));
    let write = || -> std::io::Result<()> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &bytes)
    };
    write().map_err(|e| (format!("writing {}: {e}", target.display()), false))?;
    Ok((target, bytes.len() as u64))
}

/// Decodes standard base64 (with padding); `None` when it is not.
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, chunk) in text.chunks(4).enumerate() {
        let last = i + 1 == text.len() / 4;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for c in &chunk[..4 - pad] {
            n = (n << 6) | value(*c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_what_coreutils_writes() {
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("aGV5").as_deref(), Some(&b"hey"[..]));
        assert_eq!(decode_base64("AP8=").as_deref(), Some(&[0u8, 255][..]));
        assert!(decode_base64("aG=k").is_none());
        assert!(decode_base64("a!==").is_none());
    }

    #[test]
    fn task_dir_names_are_safe_and_distinct() {
        assert_eq!(task_dir_name("t-1_a.b"), "t-1_a.b");
        assert_eq!(task_dir_name(".."), "%2E.");
        assert_eq!(task_dir_name("a/b"), "a%2Fb");
        assert_ne!(task_dir_name("a/b"), task_dir_name("a%2Fb"));
    }
}
