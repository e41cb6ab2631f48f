//! The batch runner behind `hecate batch FILE.jsonl`: it owns reading a
//! JSON-lines file of tasks ([`parse_tasks`]), running the tasks
//! concurrently on a [`Runtime`] — each task's commands in order in the
//! task's own environment, which is evicted when the task is done —
//! writing one result line per task as it completes ([`run_tasks`]), the
//! progress display on stderr, and the closing [`BatchSummary`].
//!
//! An input line is one task:
//!
//! ```json
//! {"task_id": "t1", "commands": ["echo hi", {"command": "make test", "timeout": 600},
//!   {"command": "python3 -m http.server 8000", "background": true}]}
//! ```
//!
//! A command is a string or an object with the `terminal` tool's arguments
//! (without `task_id`). Blank lines and lines starting with `#` are skipped.
//! A line that cannot be used gives the output line
//! `{"line": N, "error": "..."}` and the other tasks still run. Each task
//! gives `{"task_id", "ok", "results": [ToolResult, ...], "duration_ms"}`,
//! where `ok` means no command hit an infrastructure error. The runner never
//! shuts the runtime down; its caller does.
//!
//! # Layout
//!
//! - `batch/input.rs`: parsing the JSON lines into tasks.
//! - `batch/run.rs`: running the tasks on a runtime.
//! - `batch/output.rs`: the result lines and the summary.
//! - `batch/progress.rs`: the progress display.
//!
//! This file holds the `hecate batch` front end ([`BatchArgs`], [`run`]).

mod input;
mod output;
mod progress;
mod run;

use std::path::PathBuf;

pub use input::{parse_line, parse_tasks, LineError, TaskSpec};
pub use output::{percentile, BatchSummary, TaskReport};
pub use progress::ProgressMode;
pub use run::run_tasks;

use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// Command-line arguments of `hecate batch`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct BatchArgs {
    /// The JSON-lines file of tasks (`-` reads standard input).
    pub file: PathBuf,
    /// How many tasks run at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Write the result lines to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar; print plain progress lines to stderr instead.
    #[arg(long)]
    pub no_progress: bool,
    /// Seconds the caller's runtime shutdown gives running commands after
    /// the batch (or on interrupt) before stopping every instance.
    #[arg(long, default_value = "30")]
    pub shutdown_grace_secs: u64,
}

/// Runs `hecate batch`: reads `args.file`, runs its tasks on `rt` with
/// [`run_tasks`], writes results to `args.out` or stdout, shows progress on
/// stderr. An unreadable input or unwritable output is an error; command
/// failures and bad lines are in the summary. Does not shut `rt` down.
pub async fn run(args: &BatchArgs, rt: &Runtime) -> Result<BatchSummary> {
    if args.concurrency == 0 {
        return Err(Error::invalid_input("--concurrency must be at least 1"));
    }
    let max_timeout = rt.config().max_command_timeout;
    let tasks = if args.file.as_os_str() == "-" {
        parse_tasks(std::io::stdin().lock(), max_timeout)
    } else {
        let bytes = tokio::fs::read(&args.file).await.map_err(|e| {
            Error::invalid_input(format!("cannot read {}: {e}", args.file.display()))
        })?;
        parse_tasks(bytes.as_slice(), max_timeout)
    }
    .map_err(|e| Error::internal(format!("reading {}: {e}", args.file.display())))?;
    log::info!(
        "batch: {} entries from {} (concurrency {})",
        tasks.len(),
        args.file.display(),
        args.concurrency
    );
    let progress = ProgressMode::for_stderr(args.no_progress);
    let summary = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| {
                Error::invalid_input(format!("cannot create {}: {e}", path.display()))
            })?;
            let sink = std::io::BufWriter::new(file);
            run_tasks(rt, tasks, args.concurrency, sink, progress).await
        }
        None => run_tasks(rt, tasks, args.concurrency, std::io::stdout(), progress).await,
    };
    if let Some(err) = &summary.output_error {
        return Err(Error::internal(format!("writing results failed: {err}")));
    }
    Ok(summary)
}
