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
//! A line may also give the task's environment ([`crate::spec`]): `image`,
//! `env`, `workdir`, `setup`, `setup_timeout`, `files`, `idle_lifetime`,
//! `ttl`, `memory_mb`, `pids`, `persistent_shell`, and `download`, files
//! fetched after the commands into `--out-dir` (`batch/download.rs`).
//!
//! A command is a string or an object with the `terminal` tool's arguments
//! (without `task_id`). Blank lines and lines starting with `#` are skipped.
//! A line that cannot be used gives the output line
//! `{"line": N, "error": "..."}` and the other tasks still run. Each task
//! gives `{"task_id", "ok", "results": [ToolResult, ...], "duration_ms"}`,
//! where `ok` means no command hit an infrastructure error. The runner never
//! shuts the runtime down; its caller does.
//!
//! The input is streamed: a task starts as soon as its line has arrived
//! (so `hecate batch -` can be fed by a program that waits for earlier
//! results), and at most [`MAX_LINE_BYTES`] of a line are held in memory;
//! a longer line is a bad line and the input continues after it.
//!
//! # Layout
//!
//! - `batch/input.rs`: parsing the JSON lines into tasks.
//! - `batch/run.rs`: running the tasks on a runtime.
//! - `batch/output.rs`: the result lines and the summary.
//! - `batch/progress.rs`: the progress display.
//!
//! This file holds the `hecate batch` front end ([`BatchArgs`], [`run`]).

mod download;
mod input;
mod output;
mod progress;
mod run;

use std::path::PathBuf;

pub use download::{task_dir_name, Downloaded};
pub use input::{parse_line, parse_tasks, LineError, TaskSpec, MAX_LINE_BYTES};
pub use output::{percentile, BatchSummary, TaskReport};
pub use progress::ProgressMode;
pub use run::{run_task_stream, run_tasks};

use futures_util::StreamExt;

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
    /// Where tasks' `download` files are written: `DIR/<task>/<path>`
    /// (task ids with characters other than letters, digits, `-`, `_`
    /// and `.` are %-escaped).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Seconds the caller's runtime shutdown gives running commands after
    /// the batch (or on interrupt) before stopping every instance.
    #[arg(long, default_value = "30")]
    pub shutdown_grace_secs: u64,
}

/// Runs `hecate batch`: streams `args.file` (`-`: standard input), runs
/// its tasks on `rt` with [`run_task_stream`] as their lines arrive, writes
/// results to `args.out` or stdout, shows progress on stderr. An unreadable
/// input or unwritable output is an error; command failures and bad lines
/// are in the summary. Does not shut `rt` down.
pub async fn run(args: &BatchArgs, rt: &Runtime) -> Result<BatchSummary> {
    run_until(args, rt, std::future::pending()).await
}

/// [`run`] that stops reading input once `stop` resolves (an interrupt):
/// tasks already started finish (or are answered by the runtime's
/// shutdown), and the summary covers what ran.
pub async fn run_until(
    args: &BatchArgs,
    rt: &Runtime,
    stop: impl std::future::Future<Output = ()>,
) -> Result<BatchSummary> {
    if args.concurrency == 0 {
        return Err(Error::invalid_input("--concurrency must be at least 1"));
    }
    let max_timeout = rt.config().max_command_timeout;
    let input: Box<dyn std::io::BufRead + Send> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.file).map_err(|e| {
            Error::invalid_input(format!("cannot read {}: {e}", args.file.display()))
        })?;
        Box::new(std::io::BufReader::new(file))
    };
    log::info!(
        "batch: reading {} (concurrency {})",
        args.file.display(),
        args.concurrency
    );
    // Reading is blocking (stdin, pipes, files) and must not stall the
    // actors' thread, so a plain thread reads and parses lines and hands
    // them over one by one; the bounded channel stops it from running far
    // ahead of the tasks.
    let (tx, rx) = tokio::sync::mpsc::channel::<Read>(64);
    std::thread::Builder::new()
        .name("hecate-batch-input".into())
        .spawn(move || {
            let result = input::for_each_entry(input, max_timeout, MAX_LINE_BYTES, |entry| {
                tx.blocking_send(Read::Entry(entry)).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Read::Failed(e));
            }
        })
        .map_err(|e| Error::internal(format!("cannot start the input reader: {e}")))?;
    let read_error = std::cell::RefCell::new(None);
    let entries = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|read| (read, rx))
    })
    .take_until(stop)
    .filter_map(|read| {
        let out = match read {
            Read::Entry(entry) => Some(entry.map(|mut task| {
                task.out_dir.clone_from(&args.out_dir);
                task
            })),
            Read::Failed(e) => {
                *read_error.borrow_mut() = Some(e);
                None
            }
        };
        std::future::ready(out)
    });
    let progress = ProgressMode::for_stderr(args.no_progress);
    let summary = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| {
                Error::invalid_input(format!("cannot create {}: {e}", path.display()))
            })?;
            let sink = std::io::BufWriter::new(file);
            run_task_stream(rt, entries, args.concurrency, sink, progress).await
        }
        None => run_task_stream(rt, entries, args.concurrency, std::io::stdout(), progress).await,
    };
    if let Some(err) = read_error.into_inner() {
        return Err(Error::internal(format!(
            "reading {} failed: {err}",
            args.file.display()
        )));
    }
    if let Some(err) = &summary.output_error {
        return Err(Error::internal(format!("writing results failed: {err}")));
    }
    Ok(summary)
}

/// What the input thread hands over: an entry, or the read failure that
/// ended the input.
enum Read {
    Entry(std::result::Result<TaskSpec, LineError>),
    Failed(std::io::Error),
}
