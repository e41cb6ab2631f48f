//! Reading a batch: one JSON line per task ([`TaskSpec`]), checked with
//! the `terminal` tool's own argument rules; a line that gives no task is a
//! [`LineError`].

use std::fmt;
use std::io::BufRead;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Error;
use crate::json::type_name;
use crate::runtime::validate_task_id;
use crate::tool::{check_known_fields, parse_json_strict, ToolArgs};

/// The longest input line accepted, in bytes (newline excluded). A task's
/// commands are each at most
/// [`MAX_COMMAND_BYTES`](crate::provider::MAX_COMMAND_BYTES); a line
/// beyond this is refused without being held in memory.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// One task of a batch, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The input line it came from (1-based; 0 when built in code).
    pub line: usize,
    /// The task's id; its environment is the runtime's task of this id.
    pub task_id: String,
    /// Its commands, run in this order (none carries a `task_id`).
    pub commands: Vec<ToolArgs>,
    /// The task's environment (`image`, `env`, `workdir`, `setup`,
    /// `files`, …; see [`crate::spec`]), given with its first command.
    pub env_spec: Option<std::sync::Arc<crate::spec::TaskSpec>>,
    /// Files to fetch after the commands (`download`), relative to the
    /// working directory or absolute.
    pub download: Vec<String>,
    /// Where downloads go (`--out-dir`; the runner writes under
    /// `<out_dir>/<task>/`). Set by [`run`](super::run), not by the line.
    pub out_dir: Option<std::path::PathBuf>,
}

/// An input line that gives no task; written as `{"line": N, "error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// The line's number (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub error: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

/// Parses one input line (1-based `line`). `None` for a blank line or a
/// `#` comment. Timeouts above `max_timeout` are refused.
pub fn parse_line(
    line: usize,
    text: &str,
    max_timeout: Duration,
) -> Option<std::result::Result<TaskSpec, LineError>> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    Some(parse_task(line, trimmed, max_timeout).map_err(|error| LineError { line, error }))
}

fn parse_task(
    line: usize,
    text: &str,
    max_timeout: Duration,
) -> std::result::Result<TaskSpec, String> {
    let value: Value = parse_json_strict(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = &value else {
        return Err(format!(
            "a task must be a JSON object like {{\"task_id\": \"t1\", \"commands\": [\"ls\"]}}, \
             not {}",
            type_name(&value)
        ));
    };
    let mut known = vec!["task_id", "commands", "download"];
    known.extend(crate::spec::SPEC_FIELDS);
    check_known_fields(map, &known).map_err(|e| e.message().to_string())?;
    let task_id = match map.get("task_id") {
        None | Some(Value::Null) => return Err("task_id is missing".into()),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "task_id must be a string, not {}",
                type_name(other)
            ))
        }
    };
    validate_task_id(&task_id).map_err(|e| e.message().to_string())?;
    let list = match map.get("commands") {
        None | Some(Value::Null) => return Err("commands is missing".into()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(format!(
                "commands must be an array of commands, not {}",
                type_name(other)
            ))
        }
    };
    if list.is_empty() {
        return Err("commands is empty".into());
    }
    let mut commands = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let args = match item {
            Value::String(s) => {
                ToolArgs::from_value_with_max(&json!({ "command": s }), max_timeout)
            }
            Value::Object(obj) if obj.contains_key("task_id") => Err(Error::invalid_input(
                "task_id is not allowed in a command; the task's task_id applies",
            )),
            Value::Object(_) => ToolArgs::from_value_with_max(item, max_timeout),
            other => Err(Error::invalid_input(format!(
                "a command must be a string or an object with the terminal tool's arguments, \
                 not {}",
                type_name(other)
            ))),
        };
        commands.push(args.map_err(|e| format!("commands[{i}]: {}", e.message()))?);
    }
    // A file's `source` is read relative to the current directory.
    let env_spec =
        crate::spec::parse_spec_fields(map, std::path::Path::new("."))?.map(std::sync::Arc::new);
    let download = match map.get("download") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => {
            if list.len() > super::download::MAX_DOWNLOADS {
                return Err(format!(
                    "download has {} paths; the limit is {}",
                    list.len(),
                    super::download::MAX_DOWNLOADS
                ));
            }
            let mut paths = Vec::with_capacity(list.len());
            for (i, item) in list.iter().enumerate() {
                let Value::String(path) = item else {
                    return Err(format!(
                        "download[{i}] must be a string, not {}",
                        type_name(item)
                    ));
                };
                super::download::check_path(path)?;
                paths.push(path.clone());
            }
            paths
        }
        Some(other) => {
            return Err(format!(
                "download must be a list of paths, not {}",
                type_name(other)
            ))
        }
    };
    Ok(TaskSpec {
        line,
        task_id,
        commands,
        env_spec,
        download,
        out_dir: None,
    })
}

/// Parses a whole JSON-lines input, one entry per non-blank, non-comment
/// line. A line that is not valid UTF-8 or longer than [`MAX_LINE_BYTES`]
/// is a [`LineError`]; only a read failure is an `Err`.
pub fn parse_tasks(
    input: impl BufRead,
    max_timeout: Duration,
) -> std::io::Result<Vec<std::result::Result<TaskSpec, LineError>>> {
    let mut out = Vec::new();
    for_each_entry(input, max_timeout, MAX_LINE_BYTES, |entry| {
        out.push(entry);
        true
    })?;
    Ok(out)
}

/// Reads `input` line by line, at most `max_line` bytes of a line held in
/// memory, and hands each entry to `each` as soon as its line is complete;
/// stops early when `each` returns false. A longer line is an entry
/// `{"line": N, "error": ...}` and the rest of it is skipped unread into
/// memory, so even input without any newline runs in bounded memory.
pub(super) fn for_each_entry(
    mut input: impl BufRead,
    max_timeout: Duration,
    max_line: usize,
    mut each: impl FnMut(std::result::Result<TaskSpec, LineError>) -> bool,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        let (read, complete) = read_line_bounded(&mut input, &mut buf, max_line)?;
        if read == 0 {
            return Ok(());
        }
        line += 1;
        let entry = if !complete {
            let error =
                format!("the line is longer than the limit of {max_line} bytes; it was skipped");
            // Said at once (input without newlines may never end), then the
            // rest of the line is read past, never stored.
            if !each(Err(LineError { line, error })) {
                return Ok(());
            }
            skip_line(&mut input)?;
            None
        } else {
            match std::str::from_utf8(&buf) {
                Ok(text) => parse_line(line, text, max_timeout),
                Err(_) => Some(Err(LineError {
                    line,
                    error: "the line is not valid UTF-8".into(),
                })),
            }
        };
        if let Some(entry) = entry {
            if !each(entry) {
                return Ok(());
            }
        }
    }
}

/// Reads one line (with its newline) into `buf`, stopping after `max`
/// bytes without a newline. Returns the bytes read and whether the line
/// fit (ended with a newline or at the end of the input within `max`).
fn read_line_bounded(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut read = 0;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((read, true));
        }
        let room = max + 1 - buf.len().min(max + 1);
        let window = &available[..available.len().min(room)];
        if let Some(at) = window.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&window[..=at]);
            input.consume(at + 1);
            return Ok((read + at + 1, true));
        }
        let n = window.len();
        buf.extend_from_slice(window);
        input.consume(n);
        read += n;
        if buf.len() > max {
            return Ok((read, false));
        }
    }
}

/// Reads past the rest of the current line without storing it.
fn skip_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = available.len();
                input.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let max = Duration::from_secs(60);
        assert!(parse_line(1, "", max).is_none());
        assert!(parse_line(1, "   \r", max).is_none());
        assert!(parse_line(1, "# a comment", max).is_none());
    }

    #[test]
    fn command_objects_reuse_the_tool_arguments() {
        let spec = parse_line(
            4,
            r#"{"task_id": "t", "commands": ["ls", {"command": "sleep 1", "timeout": "5"},
               {"command": "srv", "background": true}]}"#,
            Duration::from_secs(60),
        )
        .expect("a task line")
        .expect("valid");
        assert_eq!(spec.line, 4);
        assert_eq!(spec.commands[0], ToolArgs::new("ls"));
        assert_eq!(spec.commands[1].timeout, Some(Duration::from_secs(5)));
        assert!(spec.commands[2].background);
    }

    #[test]
    fn an_overlong_line_is_named_and_the_next_line_still_parses() {
        let max = Duration::from_secs(60);
        let long = format!("{}\n", "x".repeat(100));
        let input = format!(
            "{long}{}\n{}",
            r#"{"task_id": "a", "commands": ["ls"]}"#,
            "y".repeat(5_000)
        );
        let mut entries = Vec::new();
        for_each_entry(input.as_bytes(), max, 50, |e| {
            entries.push(e);
            true
        })
        .expect("reads");
        assert_eq!(entries.len(), 3, "{entries:?}");
        let first = entries[0].as_ref().expect_err("too long");
        assert_eq!(first.line, 1);
        assert!(first.error.contains("longer than the limit of 50 bytes"));
        assert_eq!(entries[1].as_ref().expect("valid").task_id, "a");
        assert_eq!(entries[2].as_ref().expect_err("too long").line, 3);
    }

    #[test]
    fn a_line_exactly_at_the_limit_fits() {
        let text = r#"{"task_id": "a", "commands": ["ls"]}"#;
        for tail in ["", "\n"] {
            let input = format!("{text}{tail}");
            let mut entries = Vec::new();
            for_each_entry(input.as_bytes(), Duration::from_secs(9), text.len(), |e| {
                entries.push(e);
                true
            })
            .expect("reads");
            assert!(entries[0].is_ok(), "{entries:?}");
        }
    }

    #[test]
    fn duplicate_keys_in_a_line_are_refused() {
        let max = Duration::from_secs(60);
        let line = r#"{"task_id": "a", "task_id": "b", "commands": ["ls"]}"#;
        let err = parse_line(1, line, max).expect("a line").expect_err("dup");
        assert!(err.error.contains("duplicate key \"task_id\""), "{err}");
        let line = r#"{"task_id": "a", "commands": [{"command": "ls", "command": "rm"}]}"#;
        let err = parse_line(1, line, max).expect("a line").expect_err("dup");
        assert!(err.error.contains("duplicate key \"command\""), "{err}");
    }
}
