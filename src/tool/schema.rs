//! What the model is told about the tool: its description and the JSON
//! schema of its arguments, in OpenAI's and Anthropic's formats.

use std::str::FromStr;
use std::time::Duration;

use serde_json::{json, Value};

use super::args::clip;
use super::TOOL_NAME;
use crate::error::{Error, Result};

/// What the description adds on the sandbox backend.
const SANDBOX: &str = "
- This environment is a Linux sandbox (its own namespaces on a shared kernel, not a VM): the \
working directory is /workspace (also HOME), /tmp is private to this task, system directories \
are read-only, and only this task's processes are visible. You are root inside, but cannot \
mount, make devices or change /etc and /usr.";

/// The sandbox's network, `isolated`.
const SANDBOX_ISOLATED: &str = "
- Network: only this task's own loopback. A server you start on 127.0.0.1 is reachable from \
this task's commands and from nothing else; there is no internet access.";

/// The sandbox's network, `outbound`.
const SANDBOX_OUTBOUND: &str = "
- Network: this task's own loopback (a server you start on 127.0.0.1 is reachable from this \
task's commands only) and outbound connections to the internet; nothing outside can connect \
to this task, and the host machine's loopback is out of reach.";

/// The sandbox's network, `host`.
const SANDBOX_HOST: &str = "
- Network: the host machine's network, shared with other tasks (ports can collide).";

/// The description's text before what persists.
const INTRO: &str = "\
Run a shell command in this task's own isolated Linux environment and get its output.

Environment:
- Each task has its own environment (a cloud VM or a private sandbox directory), created on \
first use and kept for all calls of the task.
";

/// What persists without the persistent shell.
const NO_SHELL_STATE: &str = "\
- Files persist between calls of a task; shell state does not. Each call is a fresh `bash -c` \
started in the task's working directory, so `cd`, exported variables, activated virtualenvs and \
shell functions from earlier calls are gone. Chain steps in one command (`cd app && make test`) \
or put them in a script file.
";

/// What persists with the persistent shell, up to the secret patterns.
const SHELL_STATE: &str = "\
- Files persist between calls of a task, and so do the working directory and exported \
variables, as in a terminal: each call is a fresh `bash -c` that starts in the directory and \
with the exported variables the previous call ended with, so `cd`, `export`, `unset` and \
activating a virtualenv carry over to later calls (background jobs start with them too). Shell \
functions, aliases, options (`set -e`) and variables that are not exported do not carry over, \
and a call that timed out changes nothing.";

/// The rest of the description's text before the arguments.
const ENVIRONMENT: &str = "\
- The environment may be reset after a period of inactivity or when it reaches its maximum \
lifetime. The result then says so (`instance_restarted: true` and a notice in the output): files, \
background processes, the working directory and exported variables from earlier calls are gone; \
recreate what you need.
- Do not count on internet access or on root/sudo.

Arguments:
- command (required): the shell command to run.
- timeout: seconds before the command and all its child processes are killed (default ";

/// The description's text from after the default timeout to `task_id`.
const MIDDLE: &str = "\
). On timeout you get the output so far, exit code 124 and `timed_out: true`.
- background: true for servers and other long-running processes. The call returns at once with \
the job's id, pid, log file (stdout and stderr) and exit file (written when the job ends). Read \
its output with `tail -n 50 LOG` or `cat LOG`; check whether it ended with \
`test -f EXIT && cat EXIT`; stop it with `kill -- -PID` (its whole process group). Where the \
job_output, job_kill and job_list tools are offered, follow the job with job_output (from \
offset 0, then each next_offset; its wait returns as soon as there is new output) and stop it \
with job_kill. Use this instead of ending a command with `&`.";

/// The `task_id` argument's line, only in the unpinned description.
const TASK_ID_LINE: &str = "
- task_id: which task's environment to use (normally set for you; default \"default\").";

/// The description's text after the arguments.
const OUTRO: &str = "

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

/// What a schema or description is for: the default timeout it states
/// (the runtime's configured one) and whether the tool is pinned to one
/// task (then `task_id` is not offered; see
/// [`terminal_json_pinned`](super::terminal_json_pinned)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaOptions {
    /// The timeout a call without `timeout` gets
    /// ([`Config::command_timeout`](crate::Config::command_timeout)).
    pub default_timeout: Duration,
    /// Leave `task_id` out: the orchestrator binds each tool instance to
    /// one task and the model cannot name another.
    pub pinned: bool,
    /// The backend is the sandbox, with this network: the description
    /// then says what the model finds there (`/workspace`, a private
    /// `/tmp`, read-only system directories, the network).
    pub sandbox: Option<crate::launcher::sandbox::NetworkMode>,
    /// Whether the working directory and exported variables carry over
    /// between calls ([`ShellConfig::persistent`](crate::shell::ShellConfig::persistent)).
    pub persistent_shell: bool,
    /// Variables whose name contains one of these are not carried over
    /// ([`ShellConfig::secret_patterns`](crate::shell::ShellConfig::secret_patterns)).
    pub secret_patterns: Vec<String>,
}

impl Default for SchemaOptions {
    /// The default configuration's timeout and shell, not pinned (the
    /// original contract).
    fn default() -> Self {
        Self::for_config(&crate::Config::default())
    }
}

impl SchemaOptions {
    /// The options stating `config`'s default timeout and persistent
    /// shell, not pinned, and describing the sandbox when `config` names
    /// the `sandbox` backend (a runtime's [`config`](crate::Runtime::config)
    /// names the backend in use, the default resolved).
    pub fn for_config(config: &crate::Config) -> Self {
        SchemaOptions {
            default_timeout: config.command_timeout,
            pinned: false,
            sandbox: (config.backend == crate::BackendKind::Sandbox)
                .then_some(config.sandbox.network),
            persistent_shell: config.shell.persistent,
            secret_patterns: config.shell.secret_patterns.clone(),
        }
    }

    /// The options for a tool pinned to one task opened with `spec`
    /// ([`Runtime::open_task`](crate::Runtime::open_task)): as
    /// [`SchemaOptions::for_config`], pinned, and stating the task's own
    /// persistent-shell setting where its spec has one, so the model is
    /// told what applies to its task.
    pub fn for_task(config: &crate::Config, spec: &crate::spec::TaskSpec) -> Self {
        let mut opts = Self::for_config(config).pinned(true);
        if let Some(on) = spec.persistent_shell {
            opts.persistent_shell = on;
        }
        opts
    }

    /// The same options, pinned (no `task_id`) or not.
    #[must_use]
    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }
}

/// The tool description for the model: what the environment is, what
/// persists, timeouts, output limits, background jobs and what to avoid,
/// stating the default configuration's timeout.
pub fn description() -> String {
    description_with(&SchemaOptions::default())
}

/// [`description`] for the given options.
pub fn description_with(opts: &SchemaOptions) -> String {
    let mut text = String::with_capacity(4096);
    text.push_str(INTRO);
    if let Some(network) = opts.sandbox {
        // Right after the environment's first line.
        text.pop();
        text.push_str(SANDBOX);
        text.push_str(match network {
            crate::launcher::sandbox::NetworkMode::Isolated => SANDBOX_ISOLATED,
            crate::launcher::sandbox::NetworkMode::Host => SANDBOX_HOST,
            crate::launcher::sandbox::NetworkMode::Outbound => SANDBOX_OUTBOUND,
        });
        text.push('\n');
    }
    if opts.persistent_shell {
        text.push_str(SHELL_STATE);
        match opts.secret_patterns.as_slice() {
            [] => {}
            patterns => {
                text.push_str(" Variables whose names contain ");
                text.push_str(&or_list(patterns));
                text.push_str(
                    " (in any case) are not kept: set them in each command that needs them.",
                );
            }
        }
        text.push('\n');
    } else {
        text.push_str(NO_SHELL_STATE);
    }
    text.push_str(ENVIRONMENT);
    text.push_str(&crate::config::show_secs(
        opts.default_timeout.as_secs_f64(),
    ));
    text.push_str(MIDDLE);
    if !opts.pinned {
        text.push_str(TASK_ID_LINE);
    }
    text.push_str(OUTRO);
    text
}

/// `A`, `A or B`, `A, B or C`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_ascii_uppercase(),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|s| s.to_ascii_uppercase()).collect();
            format!("{} or {}", init.join(", "), last.to_ascii_uppercase())
        }
    }
}

/// The JSON schema of the tool's arguments (with `task_id`, default timeout
/// of the default configuration).
pub fn parameters_schema() -> Value {
    parameters_schema_with(&SchemaOptions::default())
}

/// [`parameters_schema`] for the given options. `timeout` is a number
/// (fractions are accepted) greater than 0.
pub fn parameters_schema_with(opts: &SchemaOptions) -> Value {
    let default = crate::config::show_secs(opts.default_timeout.as_secs_f64());
    let mut schema = json!({
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
                "type": "number",
                "exclusiveMinimum": 0,
                "description": format!(
                    "Seconds before the command is killed (default {default}). Exit code 124 on timeout."
                )
            },
            "task_id": {
                "type": "string",
                "description": "Which task's environment runs the command (default \"default\")."
            }
        },
        "required": ["command"],
        "additionalProperties": false
    });
    if opts.pinned {
        if let Some(props) = schema["properties"].as_object_mut() {
            props.remove("task_id");
        }
    }
    schema
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
    schema_with(SchemaFormat::OpenAi, &SchemaOptions::default())
}

/// The tool definition in Anthropic's tool-use format.
pub fn anthropic_schema() -> Value {
    schema_with(SchemaFormat::Anthropic, &SchemaOptions::default())
}

/// The tool definition in the given format (the original contract, with
/// `task_id`).
pub fn schema(format: SchemaFormat) -> Value {
    schema_with(format, &SchemaOptions::default())
}

/// The tool definition in the given format for the given options; with
/// [`SchemaOptions::pinned`] it has no `task_id`, for multi-agent use.
pub fn schema_with(format: SchemaFormat, opts: &SchemaOptions) -> Value {
    match format {
        SchemaFormat::OpenAi => json!({
            "type": "function",
            "function": {
                "name": TOOL_NAME,
                "description": description_with(opts),
                "parameters": parameters_schema_with(opts),
            }
        }),
        SchemaFormat::Anthropic => json!({
            "name": TOOL_NAME,
            "description": description_with(opts),
            "input_schema": parameters_schema_with(opts),
        }),
    }
}
