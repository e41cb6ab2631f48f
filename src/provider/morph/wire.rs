//! The JSON shapes of the MorphCloud instance API, parsed leniently.
//!
//! This module owns the translation between wire JSON and the backend's own
//! types. The contract (`shared/reference/morphcloud-api.md`) leaves much
//! unknown, so parsing accepts what it can: unknown fields are ignored,
//! optional fields default, an unknown status is kept as text, and only what
//! the client cannot do without (an instance's `id`, an exec's `exit_code`)
//! is required. Anything else that does not fit is a
//! [`Protocol`](crate::ErrorKind::Protocol) error naming what was wrong.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// The body of `POST /instance`. All three keys are always sent, `null`
/// explicit, like the official SDK does.
#[derive(Debug, Serialize)]
pub(crate) struct StartBody<'a> {
    pub metadata: Option<&'a BTreeMap<String, String>>,
    pub ttl_seconds: Option<u64>,
    pub ttl_action: &'static str,
}

/// The body of `POST /instance/{id}/exec`.
#[derive(Debug, Serialize)]
pub(crate) struct ExecBody<'a> {
    pub command: [&'a str; 1],
}

/// The body of `POST /instance/{id}/ttl`; the action is left as it was.
#[derive(Debug, Serialize)]
pub(crate) struct TtlBody {
    pub ttl_seconds: u64,
}

/// An instance's status. Unknown values are kept, not rejected: the real
/// service may grow new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InstanceStatus {
    Pending,
    Ready,
    Paused,
    Saving,
    Error,
    Other(String),
}

impl InstanceStatus {
    fn parse(text: &str) -> Self {
        match text.trim().to_ascii_lowercase().as_str() {
            "pending" => InstanceStatus::Pending,
            "ready" => InstanceStatus::Ready,
            "paused" => InstanceStatus::Paused,
            "saving" => InstanceStatus::Saving,
            "error" => InstanceStatus::Error,
            _ => InstanceStatus::Other(text.to_string()),
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceStatus::Pending => "pending",
            InstanceStatus::Ready => "ready",
            InstanceStatus::Paused => "paused",
            InstanceStatus::Saving => "saving",
            InstanceStatus::Error => "error",
            InstanceStatus::Other(s) => s,
        })
    }
}

/// The parts of an Instance object this backend uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceInfo {
    pub id: String,
    pub status: InstanceStatus,
    /// Creation time, Unix seconds, when the server said.
    pub created: Option<i64>,
    pub metadata: BTreeMap<String, String>,
}

/// The result of a plain exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecReply {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn protocol(what: &str, problem: impl fmt::Display) -> Error {
    Error::new(ErrorKind::Protocol, format!("{what}: {problem}"))
}

/// Parses a body as JSON, naming the request in the error.
pub(crate) fn parse_json(what: &str, body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| {
        protocol(
            what,
            format!("response is not valid JSON ({e}): {}", excerpt(body)),
        )
        .with_source(e)
    })
}

/// A short, printable excerpt of a body for error messages. Callers that
/// may hold secrets scrub the result (see the API module).
pub(crate) fn excerpt(body: &[u8]) -> String {
    truncate_chars(&String::from_utf8_lossy(body), 200)
}

/// At most `max` characters of `text`, with `…` marking a cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A whole number from an integer, a float (truncated) or a numeric string.
fn lenient_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

/// A string field: strings as they are, other scalars as JSON text,
/// `null`/missing as `None`.
fn lenient_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Parses an Instance object.
pub(crate) fn parse_instance(what: &str, v: &Value) -> Result<InstanceInfo> {
    let obj = v.as_object().ok_or_else(|| {
        protocol(
            what,
            format!("expected an instance object, got {}", kind(v)),
        )
    })?;
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(other) => {
            return Err(protocol(
                what,
                format!("instance \"id\" is not a non-empty string: {other}"),
            ))
        }
        None => return Err(protocol(what, "instance object has no \"id\"")),
    };
    let status = lenient_string(obj.get("status"))
        .map(|s| InstanceStatus::parse(&s))
        .unwrap_or(InstanceStatus::Pending);
    let created = obj.get("created").and_then(lenient_i64);
    let metadata = match obj.get("metadata") {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| lenient_string(Some(v)).map(|v| (k.clone(), v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    Ok(InstanceInfo {
        id,
        status,
        created,
        metadata,
    })
}

/// Parses a list of instances: `{"data": [...]}` as the SDK reads it, and
/// leniently also `{"instances": [...]}` or a bare array. Entries that are
/// not instances are skipped with a warning rather than failing the list.
pub(crate) fn parse_instance_list(what: &str, v: &Value) -> Result<Vec<InstanceInfo>> {
    let items = match v {
        Value::Array(items) => items,
        Value::Object(obj) => match obj.get("data").or_else(|| obj.get("instances")) {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(protocol(
                    what,
                    "expected {\"data\": [instances...]} but found no \"data\" array",
                ))
            }
        },
        other => {
            return Err(protocol(
                what,
                format!("expected a list of instances, got {}", kind(other)),
            ))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match parse_instance(what, item) {
            Ok(info) => out.push(info),
            Err(e) => log::warn!("morph: skipping a listed instance: {e}"),
        }
    }
    Ok(out)
}

/// Parses the answer of a plain exec. `exit_code` is required (without it
/// the result is unknown); missing or `null` output counts as empty.
/// The exec answer as the contract gives it, for the fast path.
#[derive(Deserialize)]
struct StrictExecReply {
    exit_code: i32,
    stdout: String,
    stderr: String,
}

/// Parses an exec answer: straight into its fields when it has the
/// contract's exact shape (no intermediate `Value`, no copies of the
/// output), else leniently through [`parse_exec_reply`], which also names
/// what is wrong.
pub(crate) fn parse_exec_body(what: &str, body: &[u8]) -> Result<ExecReply> {
    if let Ok(reply) = serde_json::from_slice::<StrictExecReply>(body) {
        return Ok(ExecReply {
            exit_code: reply.exit_code,
            stdout: reply.stdout,
            stderr: reply.stderr,
        });
    }
    parse_json(what, body).and_then(|v| parse_exec_reply(what, &v))
}

pub(crate) fn parse_exec_reply(what: &str, v: &Value) -> Result<ExecReply> {
    let obj = v.as_object().ok_or_else(|| {
        protocol(
            what,
            format!("expected an exec result object, got {}", kind(v)),
        )
    })?;
    let exit_code = obj.get("exit_code").and_then(lenient_i64).ok_or_else(|| {
        protocol(
            what,
            format!(
                "exec result has no integer \"exit_code\" (got {})",
                obj.get("exit_code")
                    .map_or("nothing".to_string(), |v| v.to_string())
            ),
        )
    })?;
    let exit_code = i32::try_from(exit_code)
        .map_err(|_| protocol(what, format!("exit_code {exit_code} is out of range")))?;
    let text = |key: &str| -> Result<String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(protocol(
                what,
                format!("exec result \"{key}\" is not a string: {}", kind(other)),
            )),
        }
    };
    Ok(ExecReply {
        exit_code,
        stdout: text("stdout")?,
        stderr: text("stderr")?,
    })
}

/// The server's explanation in an error body: FastAPI's `detail` (a string,
/// or a list of `{loc, msg}`), else the raw text.
pub(crate) fn error_detail(body: &[u8]) -> String {
    let raw = || String::from_utf8_lossy(body).trim().to_string();
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return raw();
    };
    match v.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let msg = item.get("msg").and_then(Value::as_str).unwrap_or_default();
                match item.get("loc") {
                    Some(loc) => format!("{loc}: {msg}"),
                    None if !msg.is_empty() => msg.to_string(),
                    None => item.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => raw(),
    }
}

fn kind(v: &Value) -> &'static str {
    crate::json::type_name(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_body_fast_and_lenient_paths_agree() {
        let exact = br#"{"exit_code": 3, "stdout": "out", "stderr": "err", "extra": 1}"#;
        let lenient = br#"{"exit_code": "3", "stdout": "out", "stderr": "err"}"#;
        let a = parse_exec_body("POST x", exact).expect("exact shape");
        let b = parse_exec_body("POST x", lenient).expect("lenient shape");
        assert_eq!(a, b);
        assert_eq!(a.exit_code, 3);
        let err = parse_exec_body("POST x", br#"{"stdout": ""}"#).expect_err("no exit code");
        assert!(err.message().contains("exit_code"), "{err}");
    }
    use serde_json::json;

    #[test]
    fn start_body_sends_explicit_nulls() {
        let body = StartBody {
            metadata: None,
            ttl_seconds: None,
            ttl_action: "stop",
        };
        assert_eq!(
            serde_json::to_string(&body).expect("serialisable"),
            r#"{"metadata":null,"ttl_seconds":null,"ttl_action":"stop"}"#
        );
    }

    #[test]
    fn instance_parsing_is_lenient() {
        let v = json!({"id": "morphvm_1", "status": "hibernating", "created": "1795796926",
                       "metadata": {"a": "b", "n": 3, "z": null}, "extra": [1, 2]});
        let i = parse_instance("GET", &v).expect("lenient");
        assert_eq!(i.status, InstanceStatus::Other("hibernating".into()));
        assert_eq!(i.created, Some(1_795_796_926));
        assert_eq!(i.metadata.get("a").map(String::as_str), Some("b"));
        assert_eq!(i.metadata.get("n").map(String::as_str), Some("3"));
        assert!(!i.metadata.contains_key("z"));

        let minimal = parse_instance("GET", &json!({"id": "x"})).expect("minimal");
        assert_eq!(minimal.status, InstanceStatus::Pending);
        assert_eq!(minimal.created, None);
    }

    #[test]
    fn instance_without_id_is_a_protocol_error() {
        for v in [json!({"status": "ready"}), json!({"id": 5}), json!([1])] {
            let err = parse_instance("GET /instance/x", &v).expect_err("no id");
            assert_eq!(err.kind(), ErrorKind::Protocol);
            assert!(err.message().starts_with("GET /instance/x"), "{err}");
        }
    }

    #[test]
    fn lists_accept_data_instances_or_bare_arrays() {
        for v in [
            json!({"object": "list", "data": [{"id": "a"}, {"nope": 1}]}),
            json!({"instances": [{"id": "a"}]}),
            json!([{"id": "a"}]),
        ] {
            let list = parse_instance_list("GET /instance", &v).expect("list");
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].id, "a");
        }
        let err = parse_instance_list("GET /instance", &json!({"items": []})).expect_err("bad");
        assert_eq!(err.kind(), ErrorKind::Protocol);
    }

    #[test]
    fn exec_reply_needs_an_exit_code() {
        let r = parse_exec_reply(
            "exec",
            &json!({"exit_code": 3, "stdout": "o", "stderr": null}),
        )
        .expect("ok");
        assert_eq!(
            (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
            (3, "o", "")
        );
        for v in [
            json!({"stdout": ""}),
            json!({"exit_code": "x"}),
            json!({"exit_code": 1, "stdout": 5}),
            json!({"exit_code": 99999999999i64}),
        ] {
            let err = parse_exec_reply("exec", &v).expect_err("bad");
            assert_eq!(err.kind(), ErrorKind::Protocol, "{v}");
        }
    }

    #[test]
    fn error_detail_reads_fastapi_shapes() {
        assert_eq!(
            error_detail(br#"{"detail":"Instance not found"}"#),
            "Instance not found"
        );
        let d = error_detail(br#"{"detail":[{"loc":["body","ttl"],"msg":"bad","type":"t"}]}"#);
        assert_eq!(d, r#"["body","ttl"]: bad"#);
        assert_eq!(error_detail(b" plain text "), "plain text");
    }

    #[test]
    fn truncation_counts_characters() {
        let s = "é".repeat(600);
        let t = truncate_chars(&s, 500);
        assert_eq!(t.chars().count(), 500);
        assert!(t.ends_with('…'));
        assert_eq!(truncate_chars("short", 500), "short");
    }
}
