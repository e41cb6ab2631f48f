//! The load every scenario runs: N tasks × M commands at a concurrency,
//! what it saw ([`Observed`]), the report's common part, and the shutdown
//! that ends a run.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::args::Plan;
use super::env::Env;
use super::{peak_rss_bytes, Answers, BenchArgs, BenchReport, Percentiles};
use crate::config::Config;
use crate::error::Result;
use crate::runtime::{ExecRequest, Runtime};

/// What a load run saw.
#[derive(Default)]
pub(super) struct Observed {
    pub(super) answers: Answers,
    pub(super) latencies: Vec<Duration>,
    pub(super) warm_latencies: Vec<Duration>,
    pub(super) starts: u64,
    /// Per task that got one: when its first command was answered as run.
    pub(super) ready_at: Vec<Duration>,
    /// Per command (task × M + index): answered as run.
    pub(super) ran_ok: Vec<bool>,
    pub(super) wall: Duration,
}

/// The unique part of a command's text, for counting its runs.
pub(super) fn needle(task: usize, index: usize) -> String {
    format!("hb:t{task}:c{index};")
}

fn progress(args: &BenchArgs, total: u64) -> indicatif::ProgressBar {
    if args.json || args.no_progress || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} commands ({per_sec})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(total).with_style(style)
}

/// Runs N tasks × M commands, `concurrency` tasks at a time, each task's
/// commands one after another. `record` keeps per-command figures (off
/// where their memory would distort a memory measurement).
pub(super) async fn drive(
    rt: &Runtime,
    args: &BenchArgs,
    plan: &Plan,
    prefix: &str,
    record: bool,
) -> Observed {
    let total = (plan.tasks * plan.commands) as u64;
    let bar = progress(args, total);
    let seen = RefCell::new(Observed {
        ran_ok: if record {
            vec![false; plan.tasks * plan.commands]
        } else {
            Vec::new()
        },
        ..Observed::default()
    });
    let t0 = Instant::now();
    futures_util::stream::iter(0..plan.tasks)
        .for_each_concurrent(plan.concurrency, |task| {
            let (seen, bar) = (&seen, &bar);
            async move {
                let task_id = format!("{prefix}-{task}");
                let mut ready = false;
                for index in 0..plan.commands {
                    let text = format!("{} # {}", args.command, needle(task, index));
                    let sent = Instant::now();
                    let result = rt.exec(task_id.clone(), ExecRequest::new(text)).await;
                    let took = sent.elapsed();
                    let mut seen = seen.borrow_mut();
                    seen.answers.requests += 1;
                    match result {
                        Ok(out) => {
                            seen.answers.ok += 1;
                            if out.exit_code != 0 {
                                seen.answers.nonzero_exit += 1;
                            }
                            if out.instance_started {
                                seen.starts += 1;
                            }
                            if record {
                                seen.latencies.push(took);
                                if !out.instance_started {
                                    seen.warm_latencies.push(took);
                                }
                                seen.ran_ok[task * plan.commands + index] = true;
                                if !ready {
                                    seen.ready_at.push(t0.elapsed());
                                }
                            }
                            ready = true;
                        }
                        Err(err) => {
                            if record {
                                seen.latencies.push(took);
                            }
                            *seen
                                .answers
                                .errors
                                .entry(err.kind().as_str().to_string())
                                .or_default() += 1;
                            log::debug!("bench: task={task_id} command {index} failed: {err}");
                        }
                    }
                    bar.inc(1);
                }
            }
        })
        .await;
    bar.finish_and_clear();
    let mut seen = seen.into_inner();
    seen.wall = t0.elapsed();
    seen
}

/// The report's common part, from a load run.
pub(super) fn report(
    args: &BenchArgs,
    plan: &Plan,
    env_name: &str,
    config: &Config,
    seen: &Observed,
) -> BenchReport {
    let secs = seen.wall.as_secs_f64().max(1e-9);
    let all_ready = (seen.ready_at.len() == plan.tasks)
        .then(|| seen.ready_at.iter().max().map(Duration::as_secs_f64))
        .flatten();
    BenchReport {
        scenario: args.scenario,
        backend: env_name.to_string(),
        tasks: plan.tasks,
        commands_per_task: plan.commands,
        concurrency: plan.concurrency,
        workers: config.workers,
        max_instances: config.max_instances,
        max_concurrent_starts: config.max_concurrent_starts,
        answers: seen.answers.clone(),
        latency: Percentiles::of(&seen.latencies),
        latency_warm: Percentiles::of(&seen.warm_latencies),
        wall_secs: seen.wall.as_secs_f64(),
        commands_per_sec: seen.answers.answered() as f64 / secs,
        instance_starts: seen.starts,
        instance_starts_per_sec: seen.starts as f64 / secs,
        all_ready_secs: all_ready,
        tasks_ready: seen.ready_at.len() as u64,
        single_boot_secs: None,
        ready_ratio: None,
        peak_rss_bytes: peak_rss_bytes(),
        idle: None,
        eviction_lateness: None,
        faults: None,
        shutdown_clean: false,
        stop_failures: 0,
        swept: 0,
        live_at_end: 0,
    }
}

/// Shuts the runtime down and counts what is left; fills the report's end.
pub(super) async fn finish(
    rt: &Runtime,
    env: Env,
    config: &Config,
    report: &mut BenchReport,
) -> Result<()> {
    let shutdown = rt.shutdown(Duration::from_secs(30)).await?;
    for failure in &shutdown.failed {
        log::warn!(
            "bench: task={} vm={} not stopped: {}",
            failure.task_id.as_deref().unwrap_or("-"),
            failure.instance_id.as_deref().unwrap_or("-"),
            failure.error
        );
    }
    report.shutdown_clean = shutdown.is_clean();
    report.stop_failures = shutdown.failed.len() as u64;
    report.swept = shutdown.swept.len() as u64;
    report.live_at_end = env.live_at_end(config, rt.runtime_id()).await?;
    report.peak_rss_bytes = peak_rss_bytes();
    Ok(())
}
