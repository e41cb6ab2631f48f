//! The call's arguments: parsing the JSON a model produced into checked
//! [`ToolArgs`], with errors that name the field, and the request they make.

use std::time::Duration;

use serde_json::{Map, Value};

use super::DEFAULT_MAX_TIMEOUT;
use crate::error::{Error, Result};
use crate::json::type_name;
use crate::runtime::{validate_task_id, ExecRequest};

/// The argument names the tool accepts.
const FIELDS: [&str; 4] = ["command", "background", "timeout", "task_id"];

/// The arguments of one `terminal` call, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ToolArgs {
    /// The shell command (not empty).
    pub command: String,
    /// Run in the background and return at once with the job's details.
    #[cfg_attr(feature = "server", schema(required = false, default = false))]
    pub background: bool,
    /// Kill the command after this long; `None`: the runtime's default.
    /// In JSON: seconds, a number (fractions allowed) or a numeric string.
    #[cfg_attr(feature = "server", schema(value_type = Option<f64>))]
    pub timeout: Option<Duration>,
    /// The task whose environment runs the command; `None`:
    /// [`DEFAULT_TASK_ID`](super::DEFAULT_TASK_ID).
    pub task_id: Option<String>,
}

impl ToolArgs {
    /// Arguments for a foreground command with the default timeout.
    pub fn new(command: impl Into<String>) -> Self {
        ToolArgs {
            command: command.into(),
            background: false,
            timeout: None,
            task_id: None,
        }
    }

    /// Parses the arguments from the JSON text a model produced. Any problem
    /// is an [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error that names the field.
    pub fn from_json(text: &str) -> Result<ToolArgs> {
        Self::from_json_with_max(text, DEFAULT_MAX_TIMEOUT)
    }

    /// Like [`from_json`](Self::from_json), accepting timeouts up to
    /// `max_timeout`.
    pub fn from_json_with_max(text: &str, max_timeout: Duration) -> Result<ToolArgs> {
        let value = parse_json_strict(text)
            .map_err(|e| Error::invalid_input(format!("arguments are not valid JSON: {e}")))?;
        Self::from_value_with_max(&value, max_timeout)
    }

    /// Parses already-decoded JSON arguments; see [`from_json`](Self::from_json).
    ///
    /// `command` must be a non-empty string without NUL characters and at
    /// most [`MAX_COMMAND_BYTES`](crate::provider::MAX_COMMAND_BYTES) long; `background` a boolean;
    /// `timeout` a positive number of seconds (an integer, a float, or a
    /// numeric string such as `"30"`, which models often send); `task_id` a
    /// valid task id. `null` counts as absent for the optional fields.
    /// Other fields are an error that names them.
    pub fn from_value(value: &Value) -> Result<ToolArgs> {
        Self::from_value_with_max(value, DEFAULT_MAX_TIMEOUT)
    }

    /// Like [`from_value`](Self::from_value), accepting timeouts up to
    /// `max_timeout`.
    pub fn from_value_with_max(value: &Value, max_timeout: Duration) -> Result<ToolArgs> {
        let Value::Object(map) = value else {
            return Err(Error::invalid_input(format!(
                "arguments must be a JSON object like {{\"command\": \"ls\"}}, not {}",
                type_name(value)
            )));
        };
        check_known_fields(map, &FIELDS)?;
        let command = match map.get("command") {
            None | Some(Value::Null) => {
                return Err(Error::invalid_input(
                    "command is missing: give the shell command to run as a string",
                ))
            }
            Some(Value::String(s)) => {
                crate::provider::check_command(s)?;
                s.clone()
            }
            Some(other) => {
                return Err(Error::invalid_input(format!(
                    "command must be a string, not {}",
                    type_name(other)
                )))
            }
        };
        let background = match map.get("background") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(Error::invalid_input(format!(
                    "background must be true or false, not {}",
                    type_name(other)
                )))
            }
        };
        let timeout = match map.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_timeout(v, max_timeout)?),
        };
        let task_id = match map.get("task_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                validate_task_id(s)?;
                Some(s.clone())
            }
            Some(other) => {
                return Err(Error::invalid_input(format!(
                    "task_id must be a string, not {}",
                    type_name(other)
                )))
            }
        };
        Ok(ToolArgs {
            command,
            background,
            timeout,
            task_id,
        })
    }

    /// The runtime request these arguments make.
    pub fn to_request(&self) -> ExecRequest {
        ExecRequest {
            command: self.command.clone(),
            background: self.background,
            timeout: self.timeout,
            persistent_shell: None,
            spec: None,
            job_lifetime: None,
            yield_after: None,
        }
    }
}

/// Fails naming every key of `map` that is not in `known`.
pub(crate) fn check_known_fields(map: &Map<String, Value>, known: &[&str]) -> Result<()> {
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("{:?}", clip(k, 40)))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let (noun, list) = if unknown.len() == 1 {
        ("field", unknown[0].clone())
    } else {
        ("fields", unknown.join(", "))
    };
    Err(Error::invalid_input(format!(
        "unknown {noun} {list}; the accepted fields are {}",
        known.join(", ")
    )))
}

/// At most `max` characters of `text`, with `…` when cut, so that an error
/// message quoting the model's input stays short.
pub(super) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The one check of a timeout in seconds, for the tool's `timeout`, batch
/// lines and `hecate exec --timeout`: the configuration's duration rule
/// (at least [`MIN_DURATION`](crate::config::MIN_DURATION), at most `max`
/// and [`MAX_DURATION`](crate::config::MAX_DURATION)), so NaN, infinities,
/// zero, negatives and values above `max` are refused. The
/// message starts with `timeout` and quotes the number in bounded form.
pub fn check_timeout_secs(secs: f64, max: Duration) -> Result<Duration> {
    crate::config::duration_from_secs(secs, max)
        .map_err(|why| Error::invalid_input(format!("timeout {why}")))
}

fn parse_timeout(value: &Value, max: Duration) -> Result<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64(),
        // Models often quote numbers; accept plain numeric text only.
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => {
            return Err(Error::invalid_input(format!(
                "timeout must be a number of seconds (like 30), not {}",
                type_name(value)
            )))
        }
    };
    let Some(secs) = secs else {
        let shown = match value {
            Value::String(s) => format!("{:?}", clip(s, 40)),
            other => clip(&other.to_string(), 40),
        };
        return Err(Error::invalid_input(format!(
            "timeout must be a number of seconds (like 30), not {shown}"
        )));
    };
    check_timeout_secs(secs, max)
}

/// Parses JSON text like `serde_json::from_str::<Value>`, but refuses an
/// object with the same key twice (at any depth): serde_json would keep the
/// last one silently, so `{"command": "ls", "command": "rm -rf ~"}` would
/// run something other than what a reviewer reads first.
pub(crate) fn parse_json_strict(text: &str) -> serde_json::Result<Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A [`Value`] seed that fails on a duplicate object key.
struct StrictValue;

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        // JSON text cannot hold a non-finite number; `from` maps it to null.
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {:?}",
                    clip(&key, 40)
                )));
            }
            let value = access.next_value_seed(StrictValue)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}
