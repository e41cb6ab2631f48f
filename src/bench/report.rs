//! What a run reports ([`BenchReport`] and its parts), the invariants it
//! checks ([`BenchReport::problems`]), and the table `hecate bench` prints.

use std::collections::BTreeMap;
use std::fmt;

use super::{Percentiles, Scenario};

/// Answers by class.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Answers {
    /// Commands sent.
    pub requests: u64,
    /// Commands that ran (any exit code).
    pub ok: u64,
    /// Of those, commands with a non-zero exit code.
    pub nonzero_exit: u64,
    /// Failures by error kind (`transient`, `indeterminate`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl Answers {
    /// Every answer, whatever its class.
    pub fn answered(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// Memory and time of the idle-actors scenario.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IdleReport {
    /// Resident memory before the actors were spawned, in bytes.
    pub rss_before_bytes: u64,
    /// Resident memory with all of them live, in bytes.
    pub rss_after_bytes: u64,
    /// (after − before) / N, in bytes.
    pub bytes_per_actor: f64,
    /// Time to spawn all of them (one command each), in seconds.
    pub spawn_secs: f64,
    /// Time the graceful shutdown of all of them took, in seconds.
    pub shutdown_secs: f64,
}

/// What the faults scenario found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultReport {
    /// Faults the simulator injected, by kind.
    pub injected: BTreeMap<String, u64>,
    /// Commands the simulator ran (including those whose answer was lost).
    pub sim_execs: u64,
    /// Distinct commands that ran more than once (must be 0).
    pub ran_twice: u64,
    /// Commands answered as run that the simulator never ran (must be 0).
    pub ok_but_not_run: u64,
    /// Commands answered with an error that the simulator did run (an
    /// answer lost on the way back; reported, never re-run).
    pub failed_but_ran: u64,
}

/// The result of one `hecate bench` run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// The scenario run.
    pub scenario: Scenario,
    /// The backend: `local`, `morph-sim`, `morph-external` or `noop`.
    pub backend: String,
    /// N.
    pub tasks: usize,
    /// M.
    pub commands_per_task: usize,
    /// Tasks in flight at once.
    pub concurrency: usize,
    /// The runtime's worker arbiters.
    pub workers: usize,
    /// The `max_instances` cap used.
    pub max_instances: usize,
    /// The `max_concurrent_starts` cap used.
    pub max_concurrent_starts: usize,
    /// Answers by class.
    pub answers: Answers,
    /// Latency of every command, from the call to its answer.
    pub latency: Option<Percentiles>,
    /// Latency of the commands that did not start an instance.
    pub latency_warm: Option<Percentiles>,
    /// From the first call to the last answer, in seconds.
    pub wall_secs: f64,
    /// Answers per second of wall time.
    pub commands_per_sec: f64,
    /// Instances started.
    pub instance_starts: u64,
    /// Instances started per second of wall time.
    pub instance_starts_per_sec: f64,
    /// Time until the first command of every task had run, in seconds.
    pub all_ready_secs: Option<f64>,
    /// Tasks whose instance became ready.
    pub tasks_ready: u64,
    /// Boot: one instance's start and first command, alone, in seconds.
    pub single_boot_secs: Option<f64>,
    /// Boot: `all_ready_secs / single_boot_secs`.
    pub ready_ratio: Option<f64>,
    /// Peak resident memory of this process (VmHWM), in bytes. With the
    /// in-process simulator it includes the simulator.
    pub peak_rss_bytes: u64,
    /// Idle-actors figures.
    pub idle: Option<IdleReport>,
    /// Eviction: how long after its idle deadline each eviction fired.
    pub eviction_lateness: Option<Percentiles>,
    /// Faults figures.
    pub faults: Option<FaultReport>,
    /// Whether each task actor stopped its own instance in the graceful
    /// shutdown (`ShutdownReport::is_clean`).
    pub shutdown_clean: bool,
    /// Instances whose stop failed in the shutdown (left to the sweep).
    pub stop_failures: u64,
    /// Instances the shutdown's tag sweep found and stopped.
    pub swept: u64,
    /// Instances still live after the shutdown (must be 0).
    pub live_at_end: u64,
}

impl BenchReport {
    /// The invariants this run broke: unanswered commands, instances left
    /// live, commands run twice, answers that do not match the simulator.
    /// A stop that failed in the shutdown is reported, not counted here, as
    /// long as the sweep caught the instance (`live_at_end` is what counts).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.answers.answered() != self.answers.requests {
            problems.push(format!(
                "{} of {} commands were answered",
                self.answers.answered(),
                self.answers.requests
            ));
        }
        if self.live_at_end != 0 {
            problems.push(format!("{} instance(s) left live", self.live_at_end));
        }
        if let Some(f) = &self.faults {
            if f.ran_twice != 0 {
                problems.push(format!("{} command(s) ran more than once", f.ran_twice));
            }
            if f.ok_but_not_run != 0 {
                problems.push(format!(
                    "{} command(s) answered as run never ran",
                    f.ok_but_not_run
                ));
            }
        }
        for p in [&self.latency, &self.eviction_lateness]
            .into_iter()
            .flatten()
        {
            if !p.is_ordered() {
                problems.push("percentiles out of order".to_string());
            }
        }
        problems
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.as_str().into()),
            ("backend".into(), self.backend.clone()),
            (
                "tasks × commands".into(),
                format!("{} × {}", self.tasks, self.commands_per_task),
            ),
            ("concurrency".into(), self.concurrency.to_string()),
            (
                "workers / max_instances / max_concurrent_starts".into(),
                format!(
                    "{} / {} / {}",
                    self.workers, self.max_instances, self.max_concurrent_starts
                ),
            ),
            (
                "answers".into(),
                format!(
                    "{} of {} (ok {}, non-zero exit {}, errors {:?})",
                    self.answers.answered(),
                    self.answers.requests,
                    self.answers.ok,
                    self.answers.nonzero_exit,
                    self.answers.errors
                ),
            ),
        ];
        let pct = |p: &Percentiles| {
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (n={})",
                p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
            )
        };
        if let Some(p) = &self.latency {
            rows.push(("latency ms".into(), pct(p)));
        }
        if let Some(p) = &self.latency_warm {
            rows.push(("latency ms (no start)".into(), pct(p)));
        }
        rows.push(("wall s".into(), format!("{:.3}", self.wall_secs)));
        rows.push(("commands/s".into(), format!("{:.0}", self.commands_per_sec)));
        rows.push((
            "instance starts (/s)".into(),
            format!(
                "{} ({:.0}/s)",
                self.instance_starts, self.instance_starts_per_sec
            ),
        ));
        if let Some(all) = self.all_ready_secs {
            rows.push((
                "all instances ready s".into(),
                format!("{all:.3} ({} tasks)", self.tasks_ready),
            ));
        }
        if let (Some(one), Some(ratio)) = (self.single_boot_secs, self.ready_ratio) {
            rows.push(("one instance boot s".into(), format!("{one:.3}")));
            rows.push(("all ready / one boot".into(), format!("{ratio:.3}")));
        }
        if let Some(idle) = &self.idle {
            rows.push((
                "RSS before → after".into(),
                format!(
                    "{:.1} MiB → {:.1} MiB",
                    idle.rss_before_bytes as f64 / 1048576.0,
                    idle.rss_after_bytes as f64 / 1048576.0
                ),
            ));
            rows.push((
                "bytes per idle actor".into(),
                format!("{:.0}", idle.bytes_per_actor),
            ));
            rows.push(("spawn s".into(), format!("{:.3}", idle.spawn_secs)));
            rows.push(("shutdown s".into(), format!("{:.3}", idle.shutdown_secs)));
        }
        if let Some(p) = &self.eviction_lateness {
            rows.push(("eviction lateness ms".into(), pct(p)));
        }
        if let Some(faults) = &self.faults {
            rows.push((
                "faults injected".into(),
                format!(
                    "{} {:?}",
                    faults.injected.values().sum::<u64>(),
                    faults.injected
                ),
            ));
            rows.push((
                "sim execs / ran twice / ok not run / failed but ran".into(),
                format!(
                    "{} / {} / {} / {}",
                    faults.sim_execs,
                    faults.ran_twice,
                    faults.ok_but_not_run,
                    faults.failed_but_ran
                ),
            ));
        }
        rows.push((
            "peak RSS".into(),
            format!("{:.1} MiB", self.peak_rss_bytes as f64 / 1048576.0),
        ));
        rows.push((
            "shutdown: clean / stop failures / swept".into(),
            format!(
                "{} / {} / {}",
                self.shutdown_clean, self.stop_failures, self.swept
            ),
        ));
        rows.push(("live at end".into(), self.live_at_end.to_string()));
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (key, value) in rows {
            writeln!(f, "{key:<width$}  {value}")?;
        }
        Ok(())
    }
}
