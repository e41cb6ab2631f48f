//! The progress display on stderr: an updating bar on a terminal, plain
//! lines otherwise, or nothing.

use std::io::IsTerminal;

use tokio::time::Instant;

use super::BatchSummary;

/// How [`run_tasks`](super::run_tasks) shows progress on stderr.
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
pub(super) struct Progress {
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    step: u64,
    started: Instant,
}

impl Progress {
    pub(super) fn new(mode: ProgressMode, total: u64) -> Self {
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

    /// One more task to run (the input is read while tasks run, so the
    /// total grows as lines arrive).
    pub(super) fn task_added(&mut self) {
        self.total += 1;
        self.step = if self.total <= 20 {
            1
        } else {
            self.total.div_ceil(10)
        };
        if let Some(bar) = &self.bar {
            bar.inc_length(1);
        }
    }

    /// A message of its own (a bad line), kept clear of the bar.
    pub(super) fn note(&self, text: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(text),
            (None, ProgressMode::Lines) => eprintln!("{text}"),
            _ => {}
        }
    }

    pub(super) fn task_done(&mut self, summary: &BatchSummary) {
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

    pub(super) fn finish(&self, summary: &BatchSummary) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.mode != ProgressMode::Quiet {
            eprintln!("hecate batch: {summary}");
        }
    }
}
