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
//!
//! # Layout
//!
//! - `tool/args.rs`: the arguments and their checks.
//! - `tool/result.rs`: the result JSON and its notices.
//! - `tool/truncate.rs`: cutting output to a character budget.
//! - `tool/schema.rs`: the description and the function-calling schemas.

mod args;
mod result;
mod schema;
mod truncate;

use std::time::Duration;

// The batch runner reads its task lines with the tool's own field check.
#[cfg(feature = "cli")]
pub(crate) use args::check_known_fields;
pub use args::ToolArgs;
pub(crate) use result::render_with_timeout;
pub use result::{error_result, render, ToolResult};
pub use schema::{
    anthropic_schema, description, openai_schema, parameters_schema, schema, SchemaFormat,
};
pub use truncate::truncate_middle;

use crate::runtime::Runtime;

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
