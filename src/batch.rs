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

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::json::type_name;
use crate::runtime::{validate_task_id, Runtime};
use crate::tool::{check_known_fields, render_with_timeout, ToolArgs, ToolResult};

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

/// One task of a batch, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The input line it came from (1-based; 0 when built in code).
    pub line: usize,
    /// The task's id; its environment is the runtime's task of this id.
    pub task_id: String,
    /// Its commands, run in this order (none carries a `task_id`).
    pub commands: Vec<ToolArgs>,
}

/// An input line that gives no task; written as `{"line": N, "error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// The line's number (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub error: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

/// The result line of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskReport {
    /// The task's id.
    pub task_id: String,
    /// No command of the task hit an infrastructure error (non-zero exits
    /// and timeouts are fine), and its environment was released.
    pub ok: bool,
    /// One result per command, in the task's order.
    pub results: Vec<ToolResult>,
    /// Time from the task's first command to its eviction, in milliseconds.
    pub duration_ms: u64,
    /// Why releasing the task's environment failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evict_error: Option<String>,
}

/// What a batch did. Printed to stderr at the end and returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    /// Tasks that ran.
    pub tasks: u64,
    /// Commands that were attempted.
    pub commands: u64,
    /// Commands that ran and exited non-zero (timeouts included).
    pub failures: u64,
    /// Commands that did not run, or whose result was lost, because of an
    /// infrastructure error.
    pub infra_errors: u64,
    /// Commands killed at their timeout.
    pub timeouts: u64,
    /// Input lines that gave no task (malformed, duplicate task id).
    pub bad_lines: u64,
    /// Tasks not started because writing results had failed.
    pub skipped: u64,
    /// Wall time of the whole batch, in milliseconds.
    pub wall_ms: u64,
    /// Median command latency (nearest rank), in milliseconds, from the
    /// call to its answer (queueing and environment start included).
    pub p50_ms: Option<u64>,
    /// 99th-percentile command latency (nearest rank), in milliseconds.
    pub p99_ms: Option<u64>,
    /// The first failure to write a result line, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_error: Option<String>,
}

impl BatchSummary {
    /// No infrastructure errors, no bad lines, every result written.
    pub fn is_clean(&self) -> bool {
        self.infra_errors == 0 && self.bad_lines == 0 && self.output_error.is_none()
    }
}

impl fmt::Display for BatchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tasks, {} commands ({} non-zero exits, {} timeouts, {} infra errors), \
             {} bad lines in {:.1} s",
            self.tasks,
            self.commands,
            self.failures,
            self.timeouts,
            self.infra_errors,
            self.bad_lines,
            self.wall_ms as f64 / 1000.0
        )?;
        if let (Some(p50), Some(p99)) = (self.p50_ms, self.p99_ms) {
            write!(f, "; command latency p50 {p50} ms, p99 {p99} ms")?;
        }
        if self.skipped > 0 {
            write!(f, "; {} tasks skipped", self.skipped)?;
        }
        if let Some(err) = &self.output_error {
            write!(f, "; writing results failed: {err}")?;
        }
        Ok(())
    }
}

/// The nearest-rank `p`-th percentile of `values` (which need not be
/// sorted): the smallest value such that at least `p` % of the values are
/// less than or equal to it. `p` is clamped to 0..=100 (0 gives the
/// minimum); `None` for no values or a NaN `p`.
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    if values.is_empty() || p.is_nan() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    // p * n is exact for the usual integer p, so the rank is too.
    let rank = (p.clamp(0.0, 100.0) * n as f64 / 100.0).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Parses one input line (1-based `line`). `None` for a blank line or a
/// `#` comment. Timeouts above `max_timeout` are refused.
pub fn parse_line(
    line: usize,
    text: &str,
    max_timeout: Duration,
) -> Option<std::result::Result<TaskSpec, LineError>> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    Some(parse_task(line, trimmed, max_timeout).map_err(|error| LineError { line, error }))
}

fn parse_task(
    line: usize,
    text: &str,
    max_timeout: Duration,
) -> std::result::Result<TaskSpec, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = &value else {
        return Err(format!(
            "a task must be a JSON object like {{\"task_id\": \"t1\", \"commands\": [\"ls\"]}}, \
             not {}",
            type_name(&value)
        ));
    };
    check_known_fields(map, &["task_id", "commands"]).map_err(|e| e.message().to_string())?;
    let task_id = match map.get("task_id") {
        None | Some(Value::Null) => return Err("task_id is missing".into()),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "task_id must be a string, not {}",
                type_name(other)
            ))
        }
    };
    validate_task_id(&task_id).map_err(|e| e.message().to_string())?;
    let list = match map.get("commands") {
        None | Some(Value::Null) => return Err("commands is missing".into()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(format!(
                "commands must be an array of commands, not {}",
                type_name(other)
            ))
        }
    };
    if list.is_empty() {
        return Err("commands is empty".into());
    }
    let mut commands = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let args = match item {
            Value::String(s) => {
                ToolArgs::from_value_with_max(&json!({ "command": s }), max_timeout)
            }
            Value::Object(obj) if obj.contains_key("task_id") => Err(Error::invalid_input(
                "task_id is not allowed in a command; the task's task_id applies",
            )),
            Value::Object(_) => ToolArgs::from_value_with_max(item, max_timeout),
            other => Err(Error::invalid_input(format!(
                "a command must be a string or an object with the terminal tool's arguments, \
                 not {}",
                type_name(other)
            ))),
        };
        commands.push(args.map_err(|e| format!("commands[{i}]: {}", e.message()))?);
    }
    Ok(TaskSpec {
        line,
        task_id,
        commands,
    })
}

/// Parses a whole JSON-lines input, one entry per non-blank, non-comment
/// line. A line that is not valid UTF-8 is a [`LineError`]; only a read
/// failure is an `Err`.
pub fn parse_tasks(
    mut input: impl BufRead,
    max_timeout: Duration,
) -> std::io::Result<Vec<std::result::Result<TaskSpec, LineError>>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(out);
        }
        line += 1;
        match std::str::from_utf8(&buf) {
            Ok(text) => out.extend(parse_line(line, text, max_timeout)),
            Err(_) => out.push(Err(LineError {
                line,
                error: "the line is not valid UTF-8".into(),
            })),
        }
    }
}

/// How [`run_tasks`] shows progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An updating progress bar (for a terminal).
    Bar,
    /// Plain lines: every task for small batches, every tenth otherwise.
    Lines,
    /// Nothing, not even the summary (for tests and embedding).
    Quiet,
}

impl ProgressMode {
    /// A bar when stderr is a terminal and `no_progress` is not set,
    /// plain lines otherwise.
    pub fn for_stderr(no_progress: bool) -> Self {
        if !no_progress && std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// The progress display: the chosen mode's state.
struct Progress {
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    step: u64,
    started: Instant,
}

impl Progress {
    fn new(mode: ProgressMode, total: u64) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let style = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} tasks {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            indicatif::ProgressBar::new(total).with_style(style)
        });
        Progress {
            mode,
            bar,
            total,
            done: 0,
            step: if total <= 20 { 1 } else { total.div_ceil(10) },
            started: Instant::now(),
        }
    }

    /// A message of its own (a bad line), kept clear of the bar.
    fn note(&self, text: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(text),
            (None, ProgressMode::Lines) => eprintln!("{text}"),
            _ => {}
        }
    }

    fn task_done(&mut self, summary: &BatchSummary) {
        self.done += 1;
        let status = format!(
            "({} non-zero exits, {} infra errors)",
            summary.failures, summary.infra_errors
        );
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_message(status);
                bar.inc(1);
            }
            (None, ProgressMode::Lines)
                if self.done % self.step == 0 || self.done == self.total =>
            {
                eprintln!(
                    "hecate batch: {}/{} tasks done {status} after {:.1} s",
                    self.done,
                    self.total,
                    self.started.elapsed().as_secs_f64()
                );
            }
            _ => {}
        }
    }

    fn finish(&self, summary: &BatchSummary) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.mode != ProgressMode::Quiet {
            eprintln!("hecate batch: {summary}");
        }
    }
}

/// What running one task gave: its report and its numbers.
struct TaskRun {
    report: TaskReport,
    latencies_ms: Vec<u64>,
    failures: u64,
    infra_errors: u64,
    timeouts: u64,
}

async fn run_task(rt: &Runtime, spec: TaskSpec, abort: &Cell<bool>) -> Option<TaskRun> {
    if abort.get() {
        return None;
    }
    let config = rt.config();
    let started = Instant::now();
    let task = spec.task_id;
    let mut run = TaskRun {
        report: TaskReport {
            task_id: task.clone(),
            ok: true,
            results: Vec::with_capacity(spec.commands.len()),
            duration_ms: 0,
            evict_error: None,
        },
        latencies_ms: Vec::with_capacity(spec.commands.len()),
        failures: 0,
        infra_errors: 0,
        timeouts: 0,
    };
    log::debug!(
        "task={task} batch: starting {} commands",
        spec.commands.len()
    );
    for (i, args) in spec.commands.into_iter().enumerate() {
        let timeout = args.timeout.unwrap_or(config.command_timeout);
        let t0 = Instant::now();
        let result = rt.exec(task.as_str(), args.to_request()).await;
        run.latencies_ms.push(millis(t0.elapsed()));
        match &result {
            Ok(o) => {
                if o.exit_code != 0 {
                    run.failures += 1;
                }
                if o.timed_out {
                    run.timeouts += 1;
                }
            }
            // An agent would see the error and go on, so later commands run.
            Err(e) => {
                log::warn!("task={task} batch: command {i} failed ({}): {e}", e.kind());
                run.infra_errors += 1;
                run.report.ok = false;
            }
        }
        run.report.results.push(render_with_timeout(
            result,
            config.max_output_chars,
            Some(timeout),
        ));
    }
    if let Err(e) = rt.evict(task.as_str()).await {
        log::warn!("task={task} batch: releasing the environment failed: {e}");
        run.report.evict_error = Some(e.message().to_string());
        run.report.ok = false;
    }
    run.report.duration_ms = millis(started.elapsed());
    Some(run)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes one JSON line and flushes it, so a reader sees each result as
/// soon as it exists.
fn write_line(sink: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    sink.write_all(&line)?;
    sink.flush()
}

/// Runs parsed tasks on `rt`, at most `concurrency` at once (at least 1),
/// writing a line per bad input entry first and then one per task in
/// completion order to `sink`. A later task with an id used before is a bad
/// line. Each task's commands run in order in its own environment, which is
/// evicted after its last command. If writing to `sink` fails, tasks not yet
/// started are skipped (the others finish and are released) and the error is
/// in [`BatchSummary::output_error`]. Does not shut the runtime down.
pub async fn run_tasks(
    rt: &Runtime,
    tasks: Vec<std::result::Result<TaskSpec, LineError>>,
    concurrency: usize,
    mut sink: impl Write,
    progress: ProgressMode,
) -> BatchSummary {
    let started = Instant::now();
    let mut summary = BatchSummary::default();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for entry in tasks {
        match entry {
            Ok(spec) => match first_line.get(&spec.task_id) {
                Some(first) => bad.push(LineError {
                    line: spec.line,
                    error: format!(
                        "duplicate task_id {:?} (first used on line {first})",
                        spec.task_id
                    ),
                }),
                None => {
                    first_line.insert(spec.task_id.clone(), spec.line);
                    good.push(spec);
                }
            },
            Err(e) => bad.push(e),
        }
    }
    bad.sort_by_key(|e| e.line);

    let mut progress = Progress::new(progress, good.len() as u64);
    let abort = Cell::new(false);
    let record_write = |summary: &mut BatchSummary, result: std::io::Result<()>| {
        if let Err(e) = result {
            log::error!("batch: writing a result line failed: {e}");
            summary.output_error.get_or_insert_with(|| e.to_string());
            abort.set(true);
        }
    };
    summary.bad_lines = bad.len() as u64;
    for e in &bad {
        progress.note(&format!("hecate batch: skipping {e}"));
        let result = write_line(&mut sink, e);
        record_write(&mut summary, result);
    }

    let mut latencies = Vec::new();
    let mut runs = stream::iter(good)
        .map(|spec| run_task(rt, spec, &abort))
        .buffer_unordered(concurrency.max(1));
    while let Some(run) = runs.next().await {
        let Some(run) = run else {
            summary.skipped += 1;
            continue;
        };
        summary.tasks += 1;
        summary.commands += run.report.results.len() as u64;
        summary.failures += run.failures;
        summary.infra_errors += run.infra_errors;
        summary.timeouts += run.timeouts;
        latencies.extend(run.latencies_ms);
        if summary.output_error.is_none() {
            let result = write_line(&mut sink, &run.report);
            record_write(&mut summary, result);
        }
        progress.task_done(&summary);
    }
    drop(runs);
    summary.p50_ms = percentile(&latencies, 50.0);
    summary.p99_ms = percentile(&latencies, 99.0);
    summary.wall_ms = millis(started.elapsed());
    progress.finish(&summary);
    summary
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        // Wikipedia's worked example: 15, 20, 35, 40, 50.
        let w = [50, 15, 40, 20, 35];
        assert_eq!(percentile(&w, 5.0), Some(15));
        assert_eq!(percentile(&w, 30.0), Some(20));
        assert_eq!(percentile(&w, 40.0), Some(20));
        assert_eq!(percentile(&w, 50.0), Some(35));
        assert_eq!(percentile(&w, 100.0), Some(50));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 51.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1], f64::NAN), None);
        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99.0), Some(990));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let max = Duration::from_secs(60);
        assert!(parse_line(1, "", max).is_none());
        assert!(parse_line(1, "   \r", max).is_none());
        assert!(parse_line(1, "# a comment", max).is_none());
    }

    #[test]
    fn command_objects_reuse_the_tool_arguments() {
        let spec = parse_line(
            4,
            r#"{"task_id": "t", "commands": ["ls", {"command": "sleep 1", "timeout": "5"},
               {"command": "srv", "background": true}]}"#,
            Duration::from_secs(60),
        )
        .expect("a task line")
        .expect("valid");
        assert_eq!(spec.line, 4);
        assert_eq!(spec.commands[0], ToolArgs::new("ls"));
        assert_eq!(spec.commands[1].timeout, Some(Duration::from_secs(5)));
        assert!(spec.commands[2].background);
    }
}
