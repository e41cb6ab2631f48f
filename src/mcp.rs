//! `hecate mcp`: the tool contract served over the Model Context Protocol
//! (feature `mcp`), with the official Rust SDK (`rmcp`) on stdio.
//!
//! One server is one client connection, and one connection is one task
//! environment: by default the server is *pinned* to a task id (generated
//! per connection, or given), its `terminal` tool has the pinned schema (no
//! `task_id`), and a call naming another task is refused. A server built
//! with [`TaskBinding::ClientChooses`] offers the unpinned schema instead,
//! and each call's `task_id` picks its environment.
//!
//! The tools are `terminal` and the three job tools (`job_output`,
//! `job_kill`, `job_list`), with the same JSON schemas as [`crate::tool`]
//! gives function calling (`tool::parameters_schema_with`,
//! `tool::job_parameters_schema`; pinned or not as the binding says). Each
//! answers with the tool's result JSON as text content, `isError` when the
//! result's `error` is set (bad arguments included: they never fail the
//! protocol). A job tool of a pinned server acts on the pinned task's jobs
//! only.
//!
//! A `terminal` call whose request carries a `progressToken` gets a
//! progress notification every [`McpServer::progress_every`] while its
//! command runs (`progress` is the elapsed seconds, `total` the command's
//! timeout); its output is then streamed ([`tool::terminal_stream`]) and
//! each message carries the newest output line (at most
//! `progress::TAIL_CHARS` characters of it) when there is one.
//!
//! Nothing here writes to stdout except the protocol: logs go through the
//! `log` facade (the `hecate` binary's logger writes to stderr).

mod progress;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::stream::StreamOptions;
use crate::tool::{
    self, JobCall, JobToolResult, SchemaFormat, SchemaOptions, ToolArgs, ToolResult,
};
use crate::Runtime;

/// How often a running call reports progress by default.
pub const DEFAULT_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Which task environment a connection's calls run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskBinding {
    /// Every call runs in this task; the schema has no `task_id`.
    Pinned(String),
    /// Each call's `task_id` picks the task (the unpinned schema; `default`
    /// when left out). Only for a client trusted with every task.
    ClientChooses,
}

impl TaskBinding {
    /// A pinned binding to a fresh task id (`mcp-` and 16 hex digits).
    pub fn fresh() -> TaskBinding {
        TaskBinding::Pinned(format!("mcp-{:016x}", fastrand::u64(..)))
    }
}

/// The MCP server of one client connection over a [`Runtime`].
#[derive(Debug, Clone)]
pub struct McpServer {
    rt: Runtime,
    binding: TaskBinding,
    progress_every: Duration,
    tools: Arc<Vec<Tool>>,
}

impl McpServer {
    /// A server whose calls run on `rt` as `binding` says.
    pub fn new(rt: Runtime, binding: TaskBinding) -> Result<McpServer> {
        if let TaskBinding::Pinned(task_id) = &binding {
            crate::runtime::validate_task_id(task_id)?;
        }
        let pinned = matches!(binding, TaskBinding::Pinned(_));
        let opts = SchemaOptions::for_config(rt.config()).pinned(pinned);
        let mut tools = vec![terminal_tool(&opts)?];
        for name in tool::JOB_TOOLS {
            tools.push(job_tool(name, &opts)?);
        }
        let tools = Arc::new(tools);
        Ok(McpServer {
            rt,
            binding,
            progress_every: DEFAULT_PROGRESS_EVERY,
            tools,
        })
    }

    /// Sets how often a running call reports progress (to a client that
    /// asked for it with a `progressToken`).
    #[must_use]
    pub fn progress_every(mut self, every: Duration) -> Self {
        self.progress_every = every.max(Duration::from_millis(10));
        self
    }

    /// The task this server's calls run in, when pinned.
    pub fn pinned_task(&self) -> Option<&str> {
        match &self.binding {
            TaskBinding::Pinned(task_id) => Some(task_id),
            TaskBinding::ClientChooses => None,
        }
    }

    /// The tools offered, as `tools/list` gives them.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Runs the `terminal` tool with `arguments` (a JSON object) and gives
    /// the tool's result; bad arguments give an error result.
    pub async fn call_terminal(&self, arguments: Option<JsonObject>) -> ToolResult {
        match self.terminal_args(arguments) {
            Ok(args) => tool::terminal(&self.rt, args).await,
            Err(err) => tool::error_result(&err),
        }
    }

    /// Runs the `terminal` tool like [`call_terminal`](Self::call_terminal)
    /// with its output streamed: `on_chunk` gets each piece as the command
    /// produces it.
    pub async fn call_terminal_streamed(
        &self,
        arguments: Option<JsonObject>,
        on_chunk: impl FnMut(&crate::stream::Chunk),
    ) -> ToolResult {
        match self.terminal_args(arguments) {
            Ok(args) => {
                let options = StreamOptions {
                    buffer_bytes: progress::STREAM_BUFFER_BYTES,
                };
                tool::terminal_stream(&self.rt, args, options, on_chunk).await
            }
            Err(err) => tool::error_result(&err),
        }
    }

    /// A `terminal` call's arguments, checked and bound to the task; or
    /// why they are refused.
    fn terminal_args(&self, arguments: Option<JsonObject>) -> Result<ToolArgs> {
        let value = Value::Object(arguments.unwrap_or_default());
        let mut args = ToolArgs::from_value_with_max(&value, self.rt.config().max_command_timeout)
            .inspect_err(|err| log::debug!("mcp: terminal: rejected arguments: {err}"))?;
        if let TaskBinding::Pinned(task_id) = &self.binding {
            tool::pin_task(task_id, &mut args.task_id)
                .inspect_err(|err| log::warn!("task={task_id} mcp: terminal: refused: {err}"))?;
        }
        Ok(args)
    }

    /// Runs job tool `name` (one of [`tool::JOB_TOOLS`]) with `arguments`:
    /// its result, or the failure (bad arguments, another task, an unknown
    /// job), which the tool answers as [`tool::error_result`].
    pub async fn call_job_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<JobToolResult> {
        let value = Value::Object(arguments.unwrap_or_default());
        let checked = JobCall::from_value(name, &value).and_then(|mut call| {
            if let TaskBinding::Pinned(task_id) = &self.binding {
                call.pin_to(task_id)?;
            }
            Ok(call)
        });
        let call = checked.inspect_err(|err| {
            log::debug!("mcp: {}: rejected arguments: {err}", clip_name(name));
        })?;
        tool::job_tool_result(&self.rt, call).await
    }

    /// Serves the protocol on stdin and stdout until the client closes
    /// stdin (or the connection fails). The runtime is left running: the
    /// caller shuts it down.
    pub async fn serve_stdio(self) -> Result<()> {
        self.serve_on(rmcp::transport::stdio()).await
    }

    /// Serves the protocol on a reader and a writer (one JSON-RPC message
    /// a line) until the reader ends.
    pub async fn serve_on<R, W>(self, io: (R, W)) -> Result<()>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
        W: tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let running = self
            .serve(io)
            .await
            .map_err(|e| Error::internal(format!("MCP initialization failed: {e}")))?;
        let reason = running
            .waiting()
            .await
            .map_err(|e| Error::internal(format!("the MCP service failed: {e}")))?;
        log::info!("mcp: connection ended ({reason:?})");
        Ok(())
    }
}

/// The `terminal` tool's MCP description, from the function-calling schema.
fn terminal_tool(opts: &SchemaOptions) -> Result<Tool> {
    let Value::Object(schema) = tool::parameters_schema_with(opts) else {
        return Err(Error::internal(
            "the tool's parameter schema is not an object",
        ));
    };
    Ok(Tool::new(
        tool::TOOL_NAME,
        tool::description_with(opts),
        Arc::new(schema),
    ))
}

/// Job tool `name`'s MCP description, from the function-calling schema.
fn job_tool(name: &'static str, opts: &SchemaOptions) -> Result<Tool> {
    let schema = tool::job_schema(name, SchemaFormat::Anthropic, opts)?;
    let description = schema["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(Value::Object(parameters)) = schema.get("input_schema").cloned() else {
        return Err(Error::internal(format!(
            "the parameter schema of {name} is not an object"
        )));
    };
    Ok(Tool::new(name, description, Arc::new(parameters)))
}

/// The MCP answer for a tool result: its JSON as text, `isError` when the
/// tool failed.
fn to_call_result(result: &ToolResult) -> CallToolResult {
    answer(result.to_json(), result.is_error())
}

/// The MCP answer for a job tool's result or error result.
fn job_call_result(result: &Result<JobToolResult>) -> CallToolResult {
    match result {
        Ok(result) => answer(result.to_json(), false),
        Err(err) => to_call_result(&tool::error_result(err)),
    }
}

/// A tool's result JSON as text content, `isError` when `is_error`.
fn answer(json: String, is_error: bool) -> CallToolResult {
    let content = vec![ContentBlock::text(json)];
    if is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let instructions = match &self.binding {
            TaskBinding::Pinned(_) => {
                "Hecate runs shell commands in this session's own isolated environment \
                 (the `terminal` tool); files, the working directory and exported \
                 variables persist between calls."
            }
            TaskBinding::ClientChooses => {
                "Hecate runs shell commands in isolated task environments (the `terminal` \
                 tool); `task_id` picks the environment."
            }
        };
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("hecate", env!("CARGO_PKG_VERSION")))
            .with_instructions(instructions)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResponse, McpError> {
        let name = request.name.as_ref();
        if let Some(job_tool) = tool::JOB_TOOLS.iter().find(|t| **t == name) {
            let result = self.call_job_tool(job_tool, request.arguments).await;
            return Ok(job_call_result(&result).into());
        }
        if name != tool::TOOL_NAME {
            return Err(McpError::invalid_params(
                format!("unknown tool {:?}", clip_name(name)),
                None,
            ));
        }
        let timeout = command_timeout(&request.arguments, self.rt.config());
        let result = match context.meta.get_progress_token() {
            None => self.call_terminal(request.arguments).await,
            Some(token) => {
                let tail = Arc::new(Mutex::new(progress::Tail::default()));
                let call = {
                    let tail = tail.clone();
                    self.call_terminal_streamed(request.arguments, move |chunk| {
                        progress::lock(&tail).push(&chunk.data);
                    })
                };
                let peer = context.peer.clone();
                let every = self.progress_every;
                let report = async move {
                    let started = tokio::time::Instant::now();
                    let mut ticks = tokio::time::interval_at(started + every, every);
                    loop {
                        ticks.tick().await;
                        let elapsed = started.elapsed().as_secs_f64();
                        let message = progress::message(elapsed, &progress::lock(&tail));
                        let param = ProgressNotificationParam::new(token.clone(), elapsed)
                            .with_total(timeout.as_secs_f64())
                            .with_message(message);
                        if let Err(err) = peer.notify_progress(param).await {
                            log::debug!("mcp: progress notification failed: {err}");
                            std::future::pending::<()>().await;
                        }
                    }
                };
                tokio::select! {
                    result = call => result,
                    () = report => unreachable_report(),
                }
            }
        };
        Ok(to_call_result(&result).into())
    }
}

/// The progress loop never ends on its own.
fn unreachable_report() -> ToolResult {
    tool::error_result(&Error::internal("the progress reporter ended"))
}

/// The timeout a call's command gets: its own, or the configured default.
fn command_timeout(arguments: &Option<JsonObject>, config: &crate::Config) -> Duration {
    arguments
        .as_ref()
        .and_then(|args| args.get("timeout"))
        .and_then(|t| match t {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .and_then(|secs| tool::check_timeout_secs(secs, config.max_command_timeout).ok())
        .unwrap_or(config.command_timeout)
}

/// A tool name as quoted in an error: at most 64 characters.
fn clip_name(name: &str) -> String {
    name.chars().take(64).collect()
}
