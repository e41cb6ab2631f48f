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
use crate::tool::{check_known_fields, ToolArgs};

/// One task of a batch, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The input line it came from (1-based; 0 when built in code).
    pub line: usize,
    /// The task's id; its environment is the runtime's task of this id.
    pub task_id: String,
    /// Its commands, run in this order (none carries a `task_id`).
    pub commands: Vec<ToolArgs>,
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
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = &value else {
        return Err(format!(
            "a task must be a JSON object like {{\"task_id\": \"t1\", \"commands\": [\"ls\"]}}, \
             not {}",
            type_name(&value)
        ));
    };
    check_known_fields(map, &["task_id", "commands"]).map_err(|e| e.message().to_string())?;
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
    Ok(TaskSpec {
        line,
        task_id,
        commands,
    })
}

/// Parses a whole JSON-lines input, one entry per non-blank, non-comment
/// line. A line that is not valid UTF-8 is a [`LineError`]; only a read
/// failure is an `Err`.
pub fn parse_tasks(
    mut input: impl BufRead,
    max_timeout: Duration,
) -> std::io::Result<Vec<std::result::Result<TaskSpec, LineError>>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(out);
        }
        line += 1;
        match std::str::from_utf8(&buf) {
            Ok(text) => out.extend(parse_line(line, text, max_timeout)),
            Err(_) => out.push(Err(LineError {
                line,
                error: "the line is not valid UTF-8".into(),
            })),
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
}
