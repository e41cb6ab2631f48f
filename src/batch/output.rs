//! What a batch writes: a result line per task ([`TaskReport`]), written
//! and flushed as each task completes, and the closing [`BatchSummary`]
//! with its latency percentiles.

use std::fmt;
use std::io::Write;

use serde::Serialize;

use crate::tool::ToolResult;

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
    /// How the task's spec was applied, once per instance it got (a
    /// replacement instance adds one with `reapplied: true`). A failed
    /// setup also makes every command's result a `setup_failed` error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<crate::spec::SetupReport>,
    /// The task's downloads and where they were written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downloads: Vec<super::download::Downloaded>,
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

/// Writes one JSON line and flushes it, so a reader sees each result as
/// soon as it exists.
pub(super) fn write_line(sink: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    sink.write_all(&line)?;
    sink.flush()
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
}
