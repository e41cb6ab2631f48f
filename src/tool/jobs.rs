//! The three job tools an agent gets beside `terminal`: `job_output`
//! (read a background job's output from an offset, optionally waiting for
//! more), `job_kill` (end a job and everything it started) and `job_list`
//! (the task's jobs). Arguments are checked like `terminal`'s (unknown
//! fields, wrong types and bad values are `invalid_input` error results
//! naming the field); failures have `terminal`'s error shape
//! ([`error_result`]); and they bind to a task the same way (pinned or
//! not).

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::args::{check_known_fields, parse_json_strict};
use super::{error_result, pin_task, SchemaFormat, SchemaOptions, DEFAULT_TASK_ID};
use crate::error::{Error, Result};
use crate::jobs::{JobRecord, JobState};
use crate::json::type_name;
use crate::runtime::{validate_task_id, Runtime};

/// The name of the tool that reads a job's output.
pub const JOB_OUTPUT_TOOL: &str = "job_output";
/// The name of the tool that kills a job.
pub const JOB_KILL_TOOL: &str = "job_kill";
/// The name of the tool that lists a task's jobs.
pub const JOB_LIST_TOOL: &str = "job_list";
/// The job tools' names.
pub const JOB_TOOLS: [&str; 3] = [JOB_OUTPUT_TOOL, JOB_KILL_TOOL, JOB_LIST_TOOL];

/// The longest `wait` a `job_output` call may ask for.
pub const MAX_TOOL_WAIT: Duration = Duration::from_secs(600);

/// One job tool call, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum JobCall {
    /// `job_output`.
    Output {
        /// The job.
        job_id: u64,
        /// Where to read from (0: the beginning).
        offset: u64,
        /// Wait up to this long for new output or the job's end.
        wait: Option<Duration>,
        /// The task; `None`: [`DEFAULT_TASK_ID`].
        task_id: Option<String>,
    },
    /// `job_kill`.
    Kill {
        /// The job.
        job_id: u64,
        /// The task; `None`: [`DEFAULT_TASK_ID`].
        task_id: Option<String>,
    },
    /// `job_list`.
    List {
        /// The task; `None`: [`DEFAULT_TASK_ID`].
        task_id: Option<String>,
    },
}

impl JobCall {
    /// Parses the JSON arguments a model produced for tool `tool` (one of
    /// [`JOB_TOOLS`]). Any problem is an
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error
    /// naming the field.
    pub fn from_json(tool: &str, text: &str) -> Result<JobCall> {
        let value = parse_json_strict(text)
            .map_err(|e| Error::invalid_input(format!("arguments are not valid JSON: {e}")))?;
        Self::from_value(tool, &value)
    }

    /// Parses already-decoded arguments; see [`from_json`](Self::from_json).
    pub fn from_value(tool: &str, value: &Value) -> Result<JobCall> {
        let Value::Object(map) = value else {
            return Err(Error::invalid_input(format!(
                "arguments must be a JSON object like {{\"job_id\": 1}}, not {}",
                type_name(value)
            )));
        };
        let task_id = task_field(map)?;
        match tool {
            JOB_OUTPUT_TOOL => {
                check_known_fields(map, &["job_id", "offset", "wait", "task_id"])?;
                let wait = match map.get("wait") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(wait_field(v)?),
                };
                Ok(JobCall::Output {
                    job_id: id_field(map)?,
                    offset: count_field(map, "offset")?.unwrap_or(0),
                    wait,
                    task_id,
                })
            }
            JOB_KILL_TOOL => {
                check_known_fields(map, &["job_id", "task_id"])?;
                Ok(JobCall::Kill {
                    job_id: id_field(map)?,
                    task_id,
                })
            }
            JOB_LIST_TOOL => {
                check_known_fields(map, &["task_id"])?;
                Ok(JobCall::List { task_id })
            }
            other => Err(Error::invalid_input(format!(
                "unknown tool {:?} (expected job_output, job_kill or job_list)",
                super::args::clip(other, 40)
            ))),
        }
    }

    /// Binds the call to `task_id`, as [`job_tool_json_pinned`] does: a
    /// call naming another task is refused (an `invalid_input` error).
    pub fn pin_to(&mut self, task_id: &str) -> Result<()> {
        pin_task(task_id, self.task_id_mut())
    }

    fn task_id_mut(&mut self) -> &mut Option<String> {
        match self {
            JobCall::Output { task_id, .. }
            | JobCall::Kill { task_id, .. }
            | JobCall::List { task_id } => task_id,
        }
    }
}

/// A whole number ≥ 0 (models often quote numbers: numeric text is fine).
fn count_field(map: &Map<String, Value>, name: &str) -> Result<Option<u64>> {
    let bad = |v: &Value| {
        Error::invalid_input(format!(
            "{name} must be a whole number of at least 0, not {}",
            match v {
                Value::Number(n) => n.to_string(),
                other => type_name(other).to_string(),
            }
        ))
    };
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| bad(v)),
        Some(other) => Err(bad(other)),
    }
}

fn id_field(map: &Map<String, Value>) -> Result<u64> {
    match count_field(map, "job_id")? {
        Some(0) => Err(Error::invalid_input("job_id must be at least 1")),
        Some(id) => Ok(id),
        None => Err(Error::invalid_input(
            "job_id is missing: give the job's id (as the background call or job_list said)",
        )),
    }
}

fn wait_field(value: &Value) -> Result<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if (0.0..=MAX_TOOL_WAIT.as_secs_f64()).contains(&s) => {
            Ok(Duration::from_secs_f64(s))
        }
        _ => Err(Error::invalid_input(format!(
            "wait must be a number of seconds from 0 to {}",
            MAX_TOOL_WAIT.as_secs()
        ))),
    }
}

fn task_field(map: &Map<String, Value>) -> Result<Option<String>> {
    match map.get("task_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            validate_task_id(s)?;
            Ok(Some(s.clone()))
        }
        Some(other) => Err(Error::invalid_input(format!(
            "task_id must be a string, not {}",
            type_name(other)
        ))),
    }
}

/// The result of a job tool call (on success; failures are
/// [`error_result`]s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobToolResult {
    /// `job_output`: the output read; `job_kill`, `job_list`: a summary.
    pub output: String,
    /// The job's exit code once it exited; `null` otherwise (and for
    /// `job_list`).
    pub exit_code: Option<i32>,
    /// Always `null` here (set only in error results).
    pub error: Option<String>,
    /// `job_output`: the offset `output` starts at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// `job_output`: the offset to pass next time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
    /// `job_output`: bytes before `offset` that the output cap dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed_bytes: Option<u64>,
    /// `job_output`: more output is already there past `next_offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more: Option<bool>,
    /// The job (`job_output`, `job_kill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRecord>,
    /// The task's jobs (`job_list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<JobRecord>>,
}

impl JobToolResult {
    fn new(output: String) -> Self {
        JobToolResult {
            output,
            exit_code: None,
            error: None,
            offset: None,
            next_offset: None,
            missed_bytes: None,
            more: None,
            job: None,
            jobs: None,
        }
    }

    /// The result as a JSON string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            json!({"output": "", "exit_code": -1,
                   "error": format!("result could not be serialized: {e}"),
                   "status": "error"})
            .to_string()
        })
    }
}

fn state_line(job: &JobRecord) -> String {
    let state = match job.state {
        JobState::Running => "running".to_string(),
        JobState::Exited => format!("exited with code {}", job.exit_code.unwrap_or(-1)),
        JobState::Killed => "killed".to_string(),
        JobState::Lost => "lost".to_string(),
    };
    let why = job
        .end_reason
        .as_deref()
        .map_or_else(String::new, |r| format!(" ({r})"));
    format!("[job {} {state}{why}]", job.id)
}

/// Runs one checked job tool call. Never fails: a failure is an error
/// result in `terminal`'s shape.
pub async fn job_tool(rt: &Runtime, call: JobCall) -> String {
    let result = run(rt, call).await;
    match result {
        Ok(result) => result.to_json(),
        Err(err) => error_result(&err).to_json(),
    }
}

/// Runs one checked job tool call, giving its result or the failure
/// ([`job_tool`] renders a failure with [`error_result`]).
pub async fn job_tool_result(rt: &Runtime, call: JobCall) -> Result<JobToolResult> {
    run(rt, call).await
}

async fn run(rt: &Runtime, call: JobCall) -> Result<JobToolResult> {
    let max_chars = rt.config().max_output_chars.max(1);
    match call {
        JobCall::Output {
            job_id,
            offset,
            wait,
            task_id,
        } => {
            let task_id = task_id.unwrap_or_else(|| DEFAULT_TASK_ID.to_string());
            // Bytes ≥ characters, so the text fits the character budget
            // uncut and the offsets stay exact.
            let max = max_chars.min(crate::runtime::MAX_READ_BYTES);
            let read = rt.job_output(&task_id, job_id, offset, max, wait).await?;
            let mut text = read.text;
            if read.missed_bytes > 0 {
                text = format!(
                    "[{} earlier bytes were dropped by the output cap]\n{text}",
                    read.missed_bytes
                );
            }
            if read.more {
                text.push_str(&format!(
                    "\n[more output: call again with offset {}]",
                    read.next_offset
                ));
            } else if read.job.state.is_ended() {
                text.push('\n');
                text.push_str(&state_line(&read.job));
            }
            let mut result = JobToolResult::new(text);
            result.exit_code = read.job.exit_code;
            result.offset = Some(read.offset);
            result.next_offset = Some(read.next_offset);
            result.missed_bytes = Some(read.missed_bytes);
            result.more = Some(read.more);
            result.job = Some(read.job);
            Ok(result)
        }
        JobCall::Kill { job_id, task_id } => {
            let task_id = task_id.unwrap_or_else(|| DEFAULT_TASK_ID.to_string());
            let job = rt.kill_job(&task_id, job_id).await?;
            let mut result = JobToolResult::new(state_line(&job));
            result.exit_code = job.exit_code;
            result.job = Some(job);
            Ok(result)
        }
        JobCall::List { task_id } => {
            let task_id = task_id.unwrap_or_else(|| DEFAULT_TASK_ID.to_string());
            let jobs = rt.jobs(&task_id)?;
            let lines: Vec<String> = jobs
                .iter()
                .map(|j| format!("{} {}", state_line(j), super::args::clip(&j.command, 80)))
                .collect();
            let text = if lines.is_empty() {
                "no jobs".to_string()
            } else {
                lines.join("\n")
            };
            let mut result = JobToolResult::new(text);
            result.jobs = Some(jobs);
            Ok(result)
        }
    }
}

/// Runs job tool `tool` from the JSON arguments a model produced,
/// answering the result JSON. Bad arguments give an error result.
pub async fn job_tool_json(rt: &Runtime, tool: &str, args_json: &str) -> String {
    match JobCall::from_json(tool, args_json) {
        Ok(call) => job_tool(rt, call).await,
        Err(err) => error_result(&err).to_json(),
    }
}

/// [`job_tool_json`] bound to one task, like
/// [`terminal_json_pinned`](super::terminal_json_pinned): a call naming
/// another task is refused.
pub async fn job_tool_json_pinned(
    rt: &Runtime,
    task_id: &str,
    tool: &str,
    args_json: &str,
) -> String {
    let mut call = match JobCall::from_json(tool, args_json) {
        Ok(call) => call,
        Err(err) => return error_result(&err).to_json(),
    };
    if let Err(err) = pin_task(task_id, call.task_id_mut()) {
        return error_result(&err).to_json();
    }
    job_tool(rt, call).await
}

const OUTPUT_DESCRIPTION: &str = "Read the output of a background job (started by terminal with \
background: true, or a command that ran past the yield window) from a byte offset. Start at \
offset 0 and pass next_offset back each time: no byte is repeated or skipped. Only the newest \
output is kept (a cap); missed_bytes says how much was dropped before what you get. With wait, \
the call waits up to that many seconds for new output or the job's end, and returns as soon as \
either comes (use it instead of sleep). The result's job says whether it is running, exited \
(with its exit_code), killed or lost (its environment ended).";

const KILL_DESCRIPTION: &str = "Stop a background job and every process it started (SIGTERM, a \
short grace, then SIGKILL). Killing an ended job changes nothing.";

const LIST_DESCRIPTION: &str = "List the task's background jobs (running and recently ended): \
id, command, state, exit code, start and end times, bytes of output.";

/// The JSON schema of job tool `tool`'s arguments.
pub fn job_parameters_schema(tool: &str, opts: &SchemaOptions) -> Result<Value> {
    let job_id = json!({"type": "integer", "minimum": 1, "description": "The job's id."});
    let mut props = match tool {
        JOB_OUTPUT_TOOL => json!({
            "job_id": job_id,
            "offset": {"type": "integer", "minimum": 0, "default": 0,
                       "description": "Byte offset to read from: 0, then the last next_offset."},
            "wait": {"type": "number", "minimum": 0, "maximum": MAX_TOOL_WAIT.as_secs(),
                     "description": "Seconds to wait for new output or the job's end (default: do not wait)."}
        }),
        JOB_KILL_TOOL => json!({ "job_id": job_id }),
        JOB_LIST_TOOL => json!({}),
        other => {
            return Err(Error::invalid_input(format!(
                "unknown tool {:?}",
                super::args::clip(other, 40)
            )))
        }
    };
    if !opts.pinned {
        props["task_id"] = json!({"type": "string",
            "description": "Which task's jobs (default \"default\")."});
    }
    let required: Vec<&str> = if tool == JOB_LIST_TOOL {
        vec![]
    } else {
        vec!["job_id"]
    };
    Ok(json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false
    }))
}

/// Job tool `tool`'s definition in `format`.
pub fn job_schema(tool: &str, format: SchemaFormat, opts: &SchemaOptions) -> Result<Value> {
    let description = match tool {
        JOB_OUTPUT_TOOL => OUTPUT_DESCRIPTION,
        JOB_KILL_TOOL => KILL_DESCRIPTION,
        _ => LIST_DESCRIPTION,
    };
    let parameters = job_parameters_schema(tool, opts)?;
    Ok(match format {
        SchemaFormat::OpenAi => json!({
            "type": "function",
            "function": {"name": tool, "description": description, "parameters": parameters}
        }),
        SchemaFormat::Anthropic => json!({
            "name": tool, "description": description, "input_schema": parameters
        }),
    })
}

/// Every tool's definition (`terminal` and the three job tools) in
/// `format`, as a JSON array.
pub fn all_schemas(format: SchemaFormat, opts: &SchemaOptions) -> Value {
    let mut all = vec![super::schema_with(format, opts)];
    for tool in JOB_TOOLS {
        if let Ok(schema) = job_schema(tool, format, opts) {
            all.push(schema);
        }
    }
    Value::Array(all)
}
