//! Running a batch: tasks concurrently on a [`Runtime`], each task's
//! commands in order in its own environment, which is evicted when the task
//! is done, each starting as soon as its input line has arrived; duplicate
//! task ids are bad lines; a failed write stops new tasks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use tokio::time::Instant;

use super::output::write_line;
use super::progress::Progress;
use super::{percentile, BatchSummary, LineError, ProgressMode, TaskReport, TaskSpec};
use crate::runtime::Runtime;
use crate::tool::render_with_timeout;

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
            setup: Vec::new(),
            downloads: Vec::new(),
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
        let mut request = args.to_request();
        request.spec = spec.env_spec.clone();
        let result = rt.exec(task.as_str(), request).await;
        run.latencies_ms.push(millis(t0.elapsed()));
        match &result {
            Ok(o) => {
                run.report.setup.extend(o.setup.clone());
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
    if !spec.download.is_empty() {
        let (downloads, ok) = super::download::download_all(
            rt,
            &task,
            spec.env_spec.as_ref(),
            &spec.download,
            spec.out_dir.as_deref(),
        )
        .await;
        run.report.downloads = downloads;
        run.report.ok &= ok;
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

/// Runs parsed tasks on `rt`; see [`run_task_stream`].
pub async fn run_tasks(
    rt: &Runtime,
    tasks: Vec<std::result::Result<TaskSpec, LineError>>,
    concurrency: usize,
    sink: impl Write,
    progress: ProgressMode,
) -> BatchSummary {
    run_task_stream(rt, stream::iter(tasks), concurrency, sink, progress).await
}

/// What one input entry gave: a bad line, or a task's run (`None`: skipped
/// after a failed write).
enum Done {
    Bad(LineError),
    Ran(Option<TaskRun>),
}

/// Runs tasks on `rt` as `tasks` yields them (a task starts as soon as its
/// line has arrived and a slot is free), at most `concurrency` at once (at
/// least 1), writing one line per entry to `sink` in completion order: a
/// bad entry's `{"line", "error"}` line, or the task's report. A later task
/// with an id used before is a bad line. Each task's commands run in order
/// in its own environment, which is evicted after its last command. If
/// writing to `sink` fails, tasks not yet started are skipped (the others
/// finish and are released) and the error is in
/// [`BatchSummary::output_error`]. Does not shut the runtime down.
pub async fn run_task_stream(
    rt: &Runtime,
    tasks: impl Stream<Item = std::result::Result<TaskSpec, LineError>>,
    concurrency: usize,
    mut sink: impl Write,
    progress: ProgressMode,
) -> BatchSummary {
    let started = Instant::now();
    let mut summary = BatchSummary::default();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let progress = RefCell::new(Progress::new(progress, 0));
    let abort = Cell::new(false);
    let record_write = |summary: &mut BatchSummary, result: std::io::Result<()>| {
        if let Err(e) = result {
            log::error!("batch: writing a result line failed: {e}");
            summary.output_error.get_or_insert_with(|| e.to_string());
            abort.set(true);
        }
    };

    let mut latencies = Vec::new();
    let abort_ref = &abort;
    let progress_ref = &progress;
    let runs = tasks
        .map(move |entry| {
            let checked = entry.and_then(|spec| match first_line.get(&spec.task_id) {
                Some(first) => Err(LineError {
                    line: spec.line,
                    error: format!(
                        "duplicate task_id {:?} (first used on line {first})",
                        spec.task_id
                    ),
                }),
                None => {
                    first_line.insert(spec.task_id.clone(), spec.line);
                    Ok(spec)
                }
            });
            async move {
                match checked {
                    Ok(spec) => {
                        progress_ref.borrow_mut().task_added();
                        Done::Ran(run_task(rt, spec, abort_ref).await)
                    }
                    Err(bad) => Done::Bad(bad),
                }
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut runs = std::pin::pin!(runs);
    while let Some(done) = runs.next().await {
        let run = match done {
            Done::Bad(e) => {
                summary.bad_lines += 1;
                progress
                    .borrow()
                    .note(&format!("hecate batch: skipping {e}"));
                if summary.output_error.is_none() {
                    let result = write_line(&mut sink, &e);
                    record_write(&mut summary, result);
                }
                continue;
            }
            Done::Ran(None) => {
                summary.skipped += 1;
                continue;
            }
            Done::Ran(Some(run)) => run,
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
        progress.borrow_mut().task_done(&summary);
    }
    summary.p50_ms = percentile(&latencies, 50.0);
    summary.p99_ms = percentile(&latencies, 99.0);
    summary.wall_ms = millis(started.elapsed());
    progress.borrow().finish(&summary);
    summary
}
