//! The LLM-facing `terminal` tool: it owns the contract an agent sees —
//! parsing and checking the call's arguments ([`ToolArgs`]), turning a
//! command's outcome or a failure into the result JSON ([`ToolResult`],
//! [`render`], [`error_result`]), cutting long output to a character budget
//! while keeping its beginning and end ([`truncate_middle`]), and the tool's
//! description and JSON schema ([`description`], [`schema`]). [`terminal`]
//! and [`terminal_json`] put these together over a [`Runtime`].
//!
//! # Which task a call runs in
//!
//! `task_id` selects the environment a command runs in, so whoever writes
//! the arguments can run commands in (read and change the files of) any
//! task of the runtime. With [`terminal_json`] that is the model. When
//! several agents share a runtime, bind each agent's tool to its task with
//! [`terminal_json_pinned`] / [`terminal_pinned`] and give the model the
//! pinned schema ([`SchemaOptions::pinned`], `hecate tool-schema
//! --pinned`), which has no `task_id`: a call naming another task is then
//! refused with an `invalid_input` error result.
//!
//! The result keeps the seed tool's fields (`output`, `exit_code`, `error`,
//! `status`) and meaning: a command that exits non-zero is a normal result
//! with `error: null`; `error` is set only when the tool itself failed.
//!
//! # Layout
//!
//! - `tool/args.rs`: the arguments and their checks.
//! - `tool/result.rs`: the result JSON and its notices.
//! - `tool/truncate.rs`: cutting output to a character budget.
//! - `tool/schema.rs`: the description and the function-calling schemas.
//! - `tool/stream.rs`: the call with its output streamed ([`terminal_stream`]).

mod args;
mod jobs;
mod result;
mod schema;
mod stream;
mod truncate;

use std::time::Duration;

// The batch runner reads its task lines with the tool's own checks.
#[cfg(feature = "cli")]
pub(crate) use args::{check_known_fields, parse_json_strict};
pub use args::{check_timeout_secs, ToolArgs};
pub use jobs::{
    all_schemas, job_parameters_schema, job_schema, job_tool, job_tool_json, job_tool_json_pinned,
    job_tool_result, JobCall, JobToolResult, JOB_KILL_TOOL, JOB_LIST_TOOL, JOB_OUTPUT_TOOL,
    JOB_TOOLS, MAX_TOOL_WAIT,
};
pub(crate) use result::render_with_timeout;
pub use result::{error_result, render, ToolResult};
pub use schema::{
    anthropic_schema, description, description_with, openai_schema, parameters_schema,
    parameters_schema_with, schema, schema_with, SchemaFormat, SchemaOptions,
};
pub use stream::{terminal_stream, ChunkPrinter};
pub use truncate::truncate_middle;

use crate::error::Error;
use crate::runtime::{validate_task_id, Runtime};

/// The tool's name, as the model calls it.
pub const TOOL_NAME: &str = "terminal";

/// The task a call without `task_id` runs in (the seed's default).
pub const DEFAULT_TASK_ID: &str = "default";

/// The largest `timeout` [`ToolArgs::from_json`] and [`ToolArgs::from_value`]
/// accept (24 h, the default of
/// [`Config::max_command_timeout`](crate::Config::max_command_timeout)).
/// The runtime also enforces its own configured maximum.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

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

/// [`terminal`] bound to one task, for an orchestrator that gives each agent
/// its own tool: the command runs in `task_id`'s environment. A call whose
/// own `task_id` names a different task is refused (an `invalid_input`
/// error result, nothing runs); naming the same task is allowed.
pub async fn terminal_pinned(rt: &Runtime, task_id: &str, mut args: ToolArgs) -> ToolResult {
    if let Err(err) = pin(task_id, &mut args) {
        log::warn!("task={task_id} terminal: refused: {err}");
        return error_result(&err);
    }
    terminal(rt, args).await
}

/// [`terminal_json`] bound to one task; see [`terminal_pinned`]. Give the
/// model the pinned schema (`schema_with(format,
/// &SchemaOptions::for_config(config).pinned(true))`).
pub async fn terminal_json_pinned(rt: &Runtime, task_id: &str, args_json: &str) -> String {
    match ToolArgs::from_json_with_max(args_json, rt.config().max_command_timeout) {
        Ok(args) => terminal_pinned(rt, task_id, args).await.to_json(),
        Err(err) => {
            log::debug!("task={task_id} terminal: rejected arguments: {err}");
            error_result(&err).to_json()
        }
    }
}

/// Binds `args` to `task_id`, refusing another task.
fn pin(task_id: &str, args: &mut ToolArgs) -> crate::error::Result<()> {
    pin_task(task_id, &mut args.task_id)
}

/// Binds a call's `task_id` to `task_id`, refusing another task.
pub(crate) fn pin_task(task_id: &str, asked: &mut Option<String>) -> crate::error::Result<()> {
    validate_task_id(task_id)?;
    match asked {
        Some(asked) if asked != task_id => Err(Error::invalid_input(
            "task_id is not accepted here: this tool runs commands only in its own task's \
             environment; leave task_id out",
        )),
        _ => {
            *asked = Some(task_id.to_string());
            Ok(())
        }
    }
}
