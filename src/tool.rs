//! The LLM-facing `terminal` tool: it owns the contract an agent sees —
//! parsing and checking the call's arguments ([`ToolArgs`]), turning a
//! command's outcome or a failure into the result JSON ([`ToolResult`],
//! [`render`], [`error_result`]), cutting long output to a character budget
//! while keeping its beginning and end ([`truncate_middle`]), and the tool's
//! description and JSON schema ([`description`], [`schema`]). [`terminal`]
//! and [`terminal_json`] put these together over a [`Runtime`].
//!
//! The result keeps the seed tool's fields (`output`, `exit_code`, `error`,
//! `status`) and meaning: a command that exits non-zero is a normal result
//! with `error: null`; `error` is set only when the tool itself failed.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::json::type_name;
use crate::provider::JobInfo;
use crate::runtime::{validate_task_id, ExecOutcome, ExecRequest, Runtime};

/// The tool's name, as the model calls it.
pub const TOOL_NAME: &str = "terminal";

/// The task a call without `task_id` runs in (the seed's default).
pub const DEFAULT_TASK_ID: &str = "default";

/// The largest `timeout` [`ToolArgs::from_json`] and [`ToolArgs::from_value`]
/// accept (24 h, the default of
/// [`Config::max_command_timeout`](crate::Config::max_command_timeout)).
/// The runtime also enforces its own configured maximum.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The argument names the tool accepts.
const FIELDS: [&str; 4] = ["command", "background", "timeout", "task_id"];

/// The arguments of one `terminal` call, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolArgs {
    /// The shell command (not empty).
    pub command: String,
    /// Run in the background and return at once with the job's details.
    pub background: bool,
    /// Kill the command after this long; `None`: the runtime's default.
    pub timeout: Option<Duration>,
    /// The task whose environment runs the command; `None`:
    /// [`DEFAULT_TASK_ID`].
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
    /// is an [`ErrorKind::InvalidInput`] error that names the field.
    pub fn from_json(text: &str) -> Result<ToolArgs> {
        Self::from_json_with_max(text, DEFAULT_MAX_TIMEOUT)
    }

    /// Like [`from_json`](Self::from_json), accepting timeouts up to
    /// `max_timeout`.
    pub fn from_json_with_max(text: &str, max_timeout: Duration) -> Result<ToolArgs> {
        let value: Value = serde_json::from_str(text)
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
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn parse_timeout(value: &Value, max: Duration) -> Result<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64(),
        // Models often quote numbers; accept plain numeric text only.
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => {
            return Err(Error::invalid_input(format!(
                "timeout must be a number of seconds (like 30), not {}",
                type_name(value)
            )))
        }
    };
    let Some(secs) = secs.filter(|f| f.is_finite()) else {
        let shown = match value {
            Value::String(s) => format!("{:?}", clip(s, 40)),
            other => other.to_string(),
        };
        return Err(Error::invalid_input(format!(
            "timeout must be a number of seconds (like 30), not {shown}"
        )));
    };
    if secs <= 0.0 {
        return Err(Error::invalid_input(format!(
            "timeout must be greater than 0 seconds (got {secs})"
        )));
    }
    if secs > max.as_secs_f64() {
        return Err(Error::invalid_input(format!(
            "timeout of {secs} s exceeds the maximum of {} s",
            max.as_secs()
        )));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d >= Duration::from_millis(1) => Ok(d),
        _ => Err(Error::invalid_input(format!(
            "timeout must be at least 0.001 seconds (got {secs})"
        ))),
    }
}

/// The JSON result of one `terminal` call. Fields serialize in this order;
/// the first three are always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolResult {
    /// What the command printed: stdout, then stderr (separated by a newline
    /// when both have text), then notices (timeout, reset environment,
    /// background job) on their own lines. Trailing whitespace is trimmed;
    /// a long output keeps its head and tail (see [`truncate_middle`]).
    pub output: String,
    /// The command's exit code: 124 when it timed out; -1 when the tool
    /// failed (`error` set).
    pub exit_code: i32,
    /// Set only when the tool itself failed (bad arguments, backend failure);
    /// `null` for any command that ran, whatever its exit code.
    pub error: Option<String>,
    /// `"error"` or `"disabled"` (configuration missing) when `error` is set,
    /// as in the seed tool; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// The failure's kind (`transient`, `instance_gone`, `invalid_input`, …)
    /// when `error` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// The command ran into its timeout and was killed.
    pub timed_out: bool,
    /// Some output was left out (by the capture limit or the character
    /// limit); a marker in `output` shows where.
    pub truncated: bool,
    /// The command ran in a fresh environment because the task's previous
    /// one ended: files and background processes from earlier calls are gone.
    pub instance_restarted: bool,
    /// Time of the call in milliseconds, including waiting for the
    /// environment to start; 0 when the tool failed.
    pub duration_ms: u64,
    /// The part of `duration_ms` spent before the command began: waiting
    /// behind the task's earlier commands, for an instance slot
    /// (`max_instances`), and for the instance to start.
    pub queued_ms: u64,
    /// The job a background command started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobInfo>,
}

impl ToolResult {
    /// The result as a JSON string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Serializing plain strings and numbers cannot fail; keep the
            // contract (always valid JSON) even if it somehow did.
            json!({"output": "", "exit_code": -1,
                   "error": format!("result could not be serialized: {e}"),
                   "status": "error"})
            .to_string()
        })
    }

    /// Whether the tool failed (as opposed to the command exiting non-zero).
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

/// The result of a tool failure: `exit_code` -1, empty output, the error's
/// message, `status` `"disabled"` for a configuration error (like the seed's
/// missing API key) and `"error"` otherwise.
pub fn error_result(err: &Error) -> ToolResult {
    let status = if err.kind() == ErrorKind::Config {
        "disabled"
    } else {
        "error"
    };
    ToolResult {
        output: String::new(),
        exit_code: -1,
        error: Some(err.message().to_string()),
        status: Some(status),
        error_kind: Some(err.kind()),
        timed_out: false,
        truncated: false,
        instance_restarted: false,
        duration_ms: 0,
        queued_ms: 0,
        job: None,
    }
}

/// Turns a command's outcome (or the failure to run it) into the tool's
/// result, with `output` at most `max_chars` characters. The timeout notice
/// states the command's measured run time; [`terminal`] states the timeout
/// it asked for instead. For a started background job the backend's
/// launcher stdout is replaced by the job's description (the command's own
/// output goes to the job log); stderr is kept.
pub fn render(result: Result<ExecOutcome>, max_chars: usize) -> ToolResult {
    render_with_timeout(result, max_chars, None)
}

/// [`render`], with the timeout the command ran under when known.
pub(crate) fn render_with_timeout(
    result: Result<ExecOutcome>,
    max_chars: usize,
    timeout: Option<Duration>,
) -> ToolResult {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => return error_result(&err),
    };
    // A background start's stdout is the backend launcher's own report
    // (pid, log path; the command's output goes to the job log), which
    // the job text below states uniformly for every backend.
    let mut body = if outcome.job.is_some() {
        String::new()
    } else {
        outcome.stdout.to_text()
    };
    let stderr = outcome.stderr.to_text();
    if !stderr.is_empty() {
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        body.push_str(&stderr);
    }
    // Like the seed's `.strip()`, but only at the end: leading indentation
    // of the first line can matter.
    body.truncate(body.trim_end().len());

    let mut notices: Vec<String> = Vec::new();
    if outcome.timed_out {
        let after = timeout.unwrap_or(outcome.duration);
        notices.push(format!(
            "[command timed out after {} and was killed; exit code {}]",
            format_secs(after),
            outcome.exit_code
        ));
    }
    if let Some(job) = &outcome.job {
        notices.push(job_text(job));
    }
    if let Some(reason) = outcome.instance_restarted {
        notices.push(format!(
            "[the environment was reset before this command: {}; files and background \
             processes from earlier calls are gone]",
            reason.notice()
        ));
    }

    let (output, cut) = assemble(&body, &notices, max_chars);
    ToolResult {
        output,
        exit_code: outcome.exit_code,
        error: None,
        status: None,
        error_kind: None,
        timed_out: outcome.timed_out,
        truncated: cut || outcome.stdout.is_truncated() || outcome.stderr.is_truncated(),
        instance_restarted: outcome.instance_restarted.is_some(),
        duration_ms: u64::try_from((outcome.queued + outcome.duration).as_millis())
            .unwrap_or(u64::MAX),
        queued_ms: u64::try_from(outcome.queued.as_millis()).unwrap_or(u64::MAX),
        job: outcome.job,
    }
}

/// Body plus notices within `max_chars`: the body is cut first so that the
/// notices survive; only when they alone do not fit is the whole cut.
fn assemble(body: &str, notices: &[String], max_chars: usize) -> (String, bool) {
    let notes = notices.join("\n");
    if notes.is_empty() {
        return truncate_middle(body, max_chars);
    }
    if body.is_empty() {
        return truncate_middle(&notes, max_chars);
    }
    let reserve = notes.chars().count() + 1;
    if reserve < max_chars {
        let (body, cut) = truncate_middle(body, max_chars - reserve);
        let body = body.trim_end();
        let text = if body.is_empty() {
            notes
        } else {
            format!("{body}\n{notes}")
        };
        return (text, cut);
    }
    truncate_middle(&format!("{body}\n{notes}"), max_chars)
}

/// The lines telling the agent about a background job and how to handle it.
fn job_text(job: &JobInfo) -> String {
    let log = quote(&job.log_file);
    let exit = quote(&job.exit_file);
    let pid = job
        .pid
        .map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
    let mut text = format!(
        "Background job {} started ({pid}). Log: {}. Exit code file: {} (written when the job ends).\n\
         Read its output: tail -n 50 {log}\n\
         Check whether it ended: test -f {exit} && cat {exit} || echo running",
        job.id, job.log_file, job.exit_file
    );
    if let Some(pid) = job.pid {
        let _ = write!(text, "\nStop it: kill -- -{pid}");
    }
    text
}

/// `path` quoted for a shell command line when it needs quoting.
fn quote(path: &str) -> String {
    match shlex::try_quote(path) {
        Ok(q) => q.into_owned(),
        Err(_) => path.to_string(),
    }
}

/// `2 s`, `2.5 s`: seconds to one decimal, without a needless `.0`.
fn format_secs(d: Duration) -> String {
    let tenths = (d.as_secs_f64() * 10.0).round() as u64;
    if tenths % 10 == 0 {
        format!("{} s", tenths / 10)
    } else {
        format!("{}.{} s", tenths / 10, tenths % 10)
    }
}

/// Cuts `text` to at most `max_chars` characters by removing its middle and
/// putting a notice of how many characters were removed in their place;
/// returns the text and whether anything was cut. Counts and cuts in
/// characters, so no UTF-8 character is split. Text that fits is returned
/// unchanged. The kept head is about as long as the kept tail (the head gets
/// the odd character). When `max_chars` is too small for the notice, the
/// result is just the first `max_chars` characters.
pub fn truncate_middle(text: &str, max_chars: usize) -> (String, bool) {
    let total = text.chars().count();
    if total <= max_chars {
        return (text.to_string(), false);
    }
    // The notice's length depends on the number it states, which depends on
    // the notice's length: iterate to the fixed point (two rounds at most
    // in practice, since the digit count moves by at most one).
    let mut notice = cut_notice(total);
    let mut keep = 0;
    for _ in 0..4 {
        let len = notice.chars().count();
        if len >= max_chars {
            let head: String = text.chars().take(max_chars).collect();
            return (head, true);
        }
        keep = max_chars - len;
        let next = cut_notice(total - keep);
        if next == notice {
            break;
        }
        notice = next;
    }
    if notice.chars().count() + keep > max_chars {
        // The fixed point was not reached; keep less rather than overflow.
        keep = max_chars.saturating_sub(notice.chars().count());
        notice = cut_notice(total - keep);
        if notice.chars().count() + keep > max_chars {
            let head: String = text.chars().take(max_chars).collect();
            return (head, true);
        }
    }
    let tail_len = keep / 2;
    let head_len = keep - tail_len;
    let head_end = byte_offset(text, head_len);
    let tail_start = byte_offset(text, total - tail_len);
    let mut out = String::with_capacity(head_end + notice.len() + (text.len() - tail_start));
    out.push_str(&text[..head_end]);
    out.push_str(&notice);
    out.push_str(&text[tail_start..]);
    (out, true)
}

fn cut_notice(cut: usize) -> String {
    format!("\n\n... [{cut} characters cut from the middle of the output] ...\n\n")
}

/// The byte offset of character number `chars` in `text` (or its length).
fn byte_offset(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

/// Runs one `terminal` call: the command in the task's environment
/// (`task_id` or [`DEFAULT_TASK_ID`]), rendered with the runtime's
/// `max_output_chars`. Never fails: a failure is a result with `error` set.
pub async fn terminal(rt: &Runtime, args: ToolArgs) -> ToolResult {
    let task_id = args
        .task_id
        .clone()
        .unwrap_or_else(|| DEFAULT_TASK_ID.to_string());
    let config = rt.config();
    let timeout = args.timeout.unwrap_or(config.command_timeout);
    let max_chars = config.max_output_chars;
    let result = rt.exec(task_id.as_str(), args.to_request()).await;
    match &result {
        Ok(o) => log::debug!(
            "task={task_id} vm={} terminal: exit {}{}",
            o.instance_id,
            o.exit_code,
            if o.timed_out { " (timed out)" } else { "" }
        ),
        Err(e) => log::warn!("task={task_id} terminal failed ({}): {e}", e.kind()),
    }
    render_with_timeout(result, max_chars, Some(timeout))
}

/// [`terminal`] from the JSON arguments a model produced, answering the
/// result JSON. Bad arguments give an error result, never a panic.
pub async fn terminal_json(rt: &Runtime, args_json: &str) -> String {
    match ToolArgs::from_json_with_max(args_json, rt.config().max_command_timeout) {
        Ok(args) => terminal(rt, args).await.to_json(),
        Err(err) => {
            log::debug!("terminal: rejected arguments: {err}");
            error_result(&err).to_json()
        }
    }
}

const DESCRIPTION: &str = "\
Run a shell command in this task's own isolated Linux environment and get its output.

Environment:
- Each task has its own environment (a cloud VM or a private sandbox directory), created on \
first use and kept for all calls of the task.
- Files persist between calls of a task; shell state does not. Each call is a fresh `bash -c` \
started in the task's working directory, so `cd`, exported variables, activated virtualenvs and \
shell functions from earlier calls are gone. Chain steps in one command (`cd app && make test`) \
or put them in a script file.
- The environment may be reset after a period of inactivity or when it reaches its maximum \
lifetime. The result then says so (`instance_restarted: true` and a notice in the output): files \
and background processes from earlier calls are gone; recreate what you need.
- Do not count on internet access or on root/sudo.

Arguments:
- command (required): the shell command to run.
- timeout: seconds before the command and all its child processes are killed (default 120). On \
timeout you get the output so far, exit code 124 and `timed_out: true`.
- background: true for servers and other long-running processes. The call returns at once with \
the job's id, pid, log file (stdout and stderr) and exit file (written when the job ends). Read \
its output with `tail -n 50 LOG` or `cat LOG`; check whether it ended with \
`test -f EXIT && cat EXIT`; stop it with `kill -- -PID` (its whole process group). Use this \
instead of ending a command with `&`.
- task_id: which task's environment to use (normally set for you; default \"default\").

Result (JSON): `output` (stdout, then stderr, then notices), `exit_code`, `error` (set only when \
the tool itself failed, never just because your command exited non-zero), `timed_out`, \
`truncated`, `instance_restarted`, `duration_ms`, `queued_ms` (time waiting before the command \
began), and `job` for background commands. Output \
longer than the limit (50,000 characters by default) keeps its beginning and end, with a notice \
of how many characters were cut from the middle: for big output, write it to a file and use \
grep, head or tail.

Avoid interactive programs (vim, nano, less, top, tmux, a python or node REPL, `git commit` \
without -m): there is no terminal, so they wait for input until the timeout. Stop pagers by \
piping to cat (`git log | cat`) or with `git --no-pager`.";

/// The tool description for the model: what the environment is, what
/// persists, timeouts, output limits, background jobs and what to avoid.
pub fn description() -> &'static str {
    DESCRIPTION
}

/// The JSON schema of the tool's arguments.
pub fn parameters_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "description": "The shell command to run (with bash -c, in the task's working directory)."
            },
            "background": {
                "type": "boolean",
                "description": "Run in the background and return at once with the job's id, pid, log file and exit file (for servers and long-running processes).",
                "default": false
            },
            "timeout": {
                "type": "integer",
                "minimum": 1,
                "description": "Seconds before the command is killed (default 120). Exit code 124 on timeout."
            },
            "task_id": {
                "type": "string",
                "description": "Which task's environment runs the command (default \"default\")."
            }
        },
        "required": ["command"],
        "additionalProperties": false
    })
}

/// Which tool-definition format [`schema`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaFormat {
    /// OpenAI function calling: `{"type": "function", "function": {...}}`.
    OpenAi,
    /// Anthropic tool use: `{"name", "description", "input_schema"}`.
    Anthropic,
}

impl FromStr for SchemaFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(SchemaFormat::OpenAi),
            "anthropic" => Ok(SchemaFormat::Anthropic),
            other => Err(Error::invalid_input(format!(
                "unknown schema format {:?} (expected \"openai\" or \"anthropic\")",
                clip(other, 40)
            ))),
        }
    }
}

/// The tool definition in OpenAI's function-calling format.
pub fn openai_schema() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": description(),
            "parameters": parameters_schema(),
        }
    })
}

/// The tool definition in Anthropic's tool-use format.
pub fn anthropic_schema() -> Value {
    json!({
        "name": TOOL_NAME,
        "description": description(),
        "input_schema": parameters_schema(),
    })
}

/// The tool definition in the given format.
pub fn schema(format: SchemaFormat) -> Value {
    match format {
        SchemaFormat::OpenAi => openai_schema(),
        SchemaFormat::Anthropic => anthropic_schema(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_secs_drops_needless_decimals() {
        assert_eq!(format_secs(Duration::from_secs(2)), "2 s");
        assert_eq!(format_secs(Duration::from_millis(2_013)), "2 s");
        assert_eq!(format_secs(Duration::from_millis(2_500)), "2.5 s");
        assert_eq!(format_secs(Duration::from_millis(120_000)), "120 s");
    }

    #[test]
    fn truncate_notice_states_the_exact_cut() {
        let text = "x".repeat(10_000);
        let (out, cut) = truncate_middle(&text, 1_000);
        assert!(cut);
        assert_eq!(out.chars().count(), 1_000);
        let kept = out.chars().filter(|c| *c == 'x').count();
        assert!(out.contains(&format!("[{} characters cut", 10_000 - kept)));
    }

    #[test]
    fn notices_survive_a_cut_body() {
        let notes = vec!["[notice]".to_string()];
        let (out, cut) = assemble(&"y".repeat(500), &notes, 200);
        assert!(cut);
        assert!(out.ends_with("\n[notice]"), "{out}");
        assert!(out.chars().count() <= 200);
    }
}
