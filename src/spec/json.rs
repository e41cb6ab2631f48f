//! A [`TaskSpec`] from the fields of a JSON object (a batch line), checked
//! strictly: wrong types and unknown fields of a file entry are named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{SpecFile, TaskSpec, MAX_FILES, MAX_FILES_BYTES};
use crate::json::type_name;

/// The fields of a JSON object that make up a spec.
pub const SPEC_FIELDS: [&str; 11] = [
    "image",
    "env",
    "workdir",
    "setup",
    "setup_timeout",
    "files",
    "idle_lifetime",
    "ttl",
    "memory_mb",
    "pids",
    "persistent_shell",
];

/// Reads the spec fields ([`SPEC_FIELDS`]) of `map`; `Ok(None)` when it has
/// none. Durations are seconds (fractions allowed). A file is
/// `{"path": P, "content": "text"}` or `{"path": P, "source": HOST_PATH}`
/// (a host file, or a directory whose regular files are placed under `P`,
/// symlinks skipped), with `"executable": true` optional; a relative
/// `source` is taken from `base_dir`. The spec is validated.
pub fn parse_spec_fields(
    map: &Map<String, Value>,
    base_dir: &Path,
) -> std::result::Result<Option<TaskSpec>, String> {
    if !SPEC_FIELDS.iter().any(|f| map.contains_key(*f)) {
        return Ok(None);
    }
    let mut spec = TaskSpec::new();
    spec.image = opt_string(map, "image")?;
    spec.workdir = opt_string(map, "workdir")?;
    if let Some(env) = present(map, "env") {
        let Value::Object(env) = env else {
            return Err(format!("env must be an object, not {}", type_name(env)));
        };
        let mut vars = BTreeMap::new();
        for (name, value) in env {
            let Value::String(value) = value else {
                return Err(format!(
                    "env.{name} must be a string, not {}",
                    type_name(value)
                ));
            };
            vars.insert(name.clone(), value.clone());
        }
        spec.env = vars;
    }
    if let Some(setup) = present(map, "setup") {
        spec.setup = match setup {
            Value::String(one) => vec![one.clone()],
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "setup[{i}] must be a string, not {}",
                        type_name(other)
                    )),
                })
                .collect::<std::result::Result<_, _>>()?,
            other => {
                return Err(format!(
                    "setup must be a string or a list of strings, not {}",
                    type_name(other)
                ))
            }
        };
    }
    spec.setup_timeout = opt_secs(map, "setup_timeout")?;
    spec.idle_lifetime = opt_secs(map, "idle_lifetime")?;
    spec.ttl = opt_secs(map, "ttl")?;
    spec.memory_mb = opt_u64(map, "memory_mb")?;
    spec.pids = opt_u64(map, "pids")?;
    spec.persistent_shell = match present(map, "persistent_shell") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(format!(
                "persistent_shell must be true or false, not {}",
                type_name(other)
            ))
        }
    };
    if let Some(files) = present(map, "files") {
        let Value::Array(files) = files else {
            return Err(format!("files must be a list, not {}", type_name(files)));
        };
        for (i, entry) in files.iter().enumerate() {
            read_file_entry(i, entry, base_dir, &mut spec.files)?;
        }
    }
    spec.validate().map_err(|e| e.message().to_string())?;
    Ok(Some(spec))
}

/// The field's value, `None` when absent or null.
fn present<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

fn opt_string(
    map: &Map<String, Value>,
    field: &str,
) -> std::result::Result<Option<String>, String> {
    match present(map, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "{field} must be a string, not {}",
            type_name(other)
        )),
    }
}

fn opt_secs(
    map: &Map<String, Value>,
    field: &str,
) -> std::result::Result<Option<Duration>, String> {
    match present(map, field) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_f64().unwrap_or(f64::NAN);
            crate::config::duration_from_secs(secs, crate::config::MAX_DURATION)
                .map(Some)
                .map_err(|why| format!("{field}: {why}"))
        }
        Some(other) => Err(format!(
            "{field} must be a number of seconds, not {}",
            type_name(other)
        )),
    }
}

fn opt_u64(map: &Map<String, Value>, field: &str) -> std::result::Result<Option<u64>, String> {
    match present(map, field) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{field} must be a whole number of at least 0")),
        Some(other) => Err(format!(
            "{field} must be a number, not {}",
            type_name(other)
        )),
    }
}

fn read_file_entry(
    i: usize,
    entry: &Value,
    base_dir: &Path,
    out: &mut Vec<SpecFile>,
) -> std::result::Result<(), String> {
    let Value::Object(fields) = entry else {
        return Err(format!(
            "files[{i}] must be an object like {{\"path\": \"a.txt\", \"content\": \"...\"}}, not {}",
            type_name(entry)
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["path", "content", "source", "executable"].contains(&k.as_str()))
    {
        return Err(format!(
            "files[{i}]: unknown field {unknown:?} (known: path, content, source, executable)"
        ));
    }
    let path = match fields.get("path") {
        Some(Value::String(p)) => p.clone(),
        Some(other) => {
            return Err(format!(
                "files[{i}].path must be a string, not {}",
                type_name(other)
            ))
        }
        None => return Err(format!("files[{i}].path is missing")),
    };
    let executable = match fields.get("executable") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "files[{i}].executable must be true or false, not {}",
                type_name(other)
            ))
        }
    };
    match (fields.get("content"), fields.get("source")) {
        (Some(Value::String(text)), None) => out.push(SpecFile {
            path,
            content: text.clone().into_bytes(),
            executable,
        }),
        (None, Some(Value::String(source))) => {
            let source = base_dir.join(source);
            read_source(&source, &path, executable, out)
                .map_err(|why| format!("files[{i}].source {}: {why}", source.display()))?;
        }
        (Some(_), Some(_)) => {
            return Err(format!("files[{i}] has both content and source; give one"))
        }
        (None, None) => return Err(format!("files[{i}] needs content or source")),
        (Some(other), None) | (None, Some(other)) => {
            return Err(format!(
                "files[{i}].content/source must be a string, not {}",
                type_name(other)
            ))
        }
    }
    Ok(())
}

/// Reads a host file, or a directory's regular files (recursively, in name
/// order, symlinks skipped), as spec files under `path`.
fn read_source(
    source: &Path,
    path: &str,
    executable: bool,
    out: &mut Vec<SpecFile>,
) -> std::result::Result<(), String> {
    let meta = std::fs::symlink_metadata(source).map_err(|e| e.to_string())?;
    if meta.is_file() {
        let content = read_bounded(source, out)?;
        out.push(SpecFile {
            path: path.to_string(),
            content,
            executable: executable || is_executable(&meta),
        });
        return Ok(());
    }
    if !meta.is_dir() {
        return Err("is neither a regular file nor a directory".into());
    }
    let mut stack: Vec<(PathBuf, String)> = vec![(source.to_path_buf(), path.to_string())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries.into_iter().rev() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(format!("{}: a name is not UTF-8", dir.display()));
            };
            let meta = entry.metadata().map_err(|e| e.to_string())?;
            let inner = format!("{prefix}/{name}");
            if meta.is_dir() {
                stack.push((entry.path(), inner));
            } else if meta.is_file() {
                let content = read_bounded(&entry.path(), out)?;
                out.push(SpecFile {
                    path: inner,
                    content,
                    executable: is_executable(&meta),
                });
            }
            if out.len() > MAX_FILES {
                return Err(format!("more than {MAX_FILES} files"));
            }
        }
    }
    Ok(())
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

/// A file's bytes, refused when they would take the spec's files past
/// [`MAX_FILES_BYTES`].
fn read_bounded(path: &Path, so_far: &[SpecFile]) -> std::result::Result<Vec<u8>, String> {
    let used: usize = so_far.iter().map(|f| f.content.len()).sum();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if used as u64 + len > MAX_FILES_BYTES as u64 {
        return Err(format!(
            "the files would be more than {MAX_FILES_BYTES} bytes together"
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}
