//! Prometheus metrics of a [`Runtime`](crate::Runtime): live tasks and
//! instances, instance starts (count and latency), execs (count and
//! duration by outcome, errors by kind), retries by error class, instance
//! ends by reason, the commands waiting in task queues, and the background
//! jobs running.
//!
//! Every value is a plain atomic, updated with relaxed ordering where it
//! happens; nothing on the exec path takes a lock or allocates. The text is
//! built only when it is asked for ([`Metrics::text`], the Prometheus text
//! format 0.0.4, or [`Metrics::openmetrics_text`]), through the
//! `prometheus-client` crate's encoders: [`Metrics`] is a
//! [`Collector`], so an embedder can also register it in a registry of its
//! own (`registry.register_collector(Box::new(rt.metrics().clone()))`).
//!
//! No label carries a task id, an instance id or any other unbounded value:
//! every label's values are a fixed, small set (see the README's "Metrics"
//! section for the full list).

mod histogram;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use self::histogram::AtomicHistogram;
use crate::error::{ErrorKind, Result};
use crate::runtime::{ExecOutcome, RestartReason};

/// The content type of [`Metrics::text`] (Prometheus text format 0.0.4).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of [`Metrics::openmetrics_text`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the exec duration histogram's buckets.
const EXEC_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];

/// Upper bounds (seconds) of the instance start histogram's buckets.
const START_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// How a call ended, as the exec metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecClass {
    /// The command ran and exited 0 (a background command: it started).
    Ok,
    /// The command ran and exited non-zero (not an error).
    Nonzero,
    /// The command was killed at its timeout.
    TimedOut,
    /// The call failed (see `hecate_exec_errors_total` for the kind).
    Error,
}

impl ExecClass {
    const ALL: [ExecClass; 4] = [
        ExecClass::Ok,
        ExecClass::Nonzero,
        ExecClass::TimedOut,
        ExecClass::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecClass::Ok => "ok",
            ExecClass::Nonzero => "nonzero",
            ExecClass::TimedOut => "timed_out",
            ExecClass::Error => "error",
        }
    }

    /// The class of a call's result.
    pub fn of(result: &Result<ExecOutcome>) -> ExecClass {
        match result {
            Ok(outcome) if outcome.timed_out => ExecClass::TimedOut,
            Ok(outcome) if outcome.exit_code == 0 => ExecClass::Ok,
            Ok(_) => ExecClass::Nonzero,
            Err(_) => ExecClass::Error,
        }
    }
}

/// Every error kind, in the order of [`kind_index`].
const KINDS: [ErrorKind; 12] = [
    ErrorKind::Transient,
    ErrorKind::InstanceGone,
    ErrorKind::Rejected,
    ErrorKind::Timeout,
    ErrorKind::Indeterminate,
    ErrorKind::InvalidInput,
    ErrorKind::Config,
    ErrorKind::ShuttingDown,
    ErrorKind::ActorDied,
    ErrorKind::Protocol,
    ErrorKind::Internal,
    ErrorKind::SetupFailed,
];

fn kind_index(kind: ErrorKind) -> usize {
    match kind {
        ErrorKind::Transient => 0,
        ErrorKind::InstanceGone => 1,
        ErrorKind::Rejected => 2,
        ErrorKind::Timeout => 3,
        ErrorKind::Indeterminate => 4,
        ErrorKind::InvalidInput => 5,
        ErrorKind::Config => 6,
        ErrorKind::ShuttingDown => 7,
        ErrorKind::ActorDied => 8,
        ErrorKind::Protocol => 9,
        ErrorKind::Internal => 10,
        ErrorKind::SetupFailed => 11,
    }
}

/// The backend operations the runtime retries.
const RETRY_OPS: [&str; 4] = ["start", "exec", "stop", "sweep"];

/// Why an instance ended, as `hecate_instance_ends_total` counts it: the
/// reasons of [`RestartReason`] plus a graceful shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Stopped at its TTL.
    Ttl,
    /// Stopped after its idle lifetime.
    Idle,
    /// The backend said it was gone.
    Vanished,
    /// The task was evicted by the caller.
    Evicted,
    /// The task's actor failed (a backend panic).
    Failed,
    /// Stopped by a graceful shutdown of the runtime.
    Shutdown,
}

impl EndReason {
    const ALL: [EndReason; 6] = [
        EndReason::Ttl,
        EndReason::Idle,
        EndReason::Vanished,
        EndReason::Evicted,
        EndReason::Failed,
        EndReason::Shutdown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Ttl => "ttl",
            EndReason::Idle => "idle",
            EndReason::Vanished => "vanished",
            EndReason::Evicted => "evicted",
            EndReason::Failed => "failed",
            EndReason::Shutdown => "shutdown",
        }
    }

    /// The reason a retirement gives; `None` is a graceful shutdown's.
    pub fn of(reason: Option<RestartReason>) -> EndReason {
        match reason {
            Some(RestartReason::Ttl) => EndReason::Ttl,
            Some(RestartReason::Idle) => EndReason::Idle,
            Some(RestartReason::Vanished) => EndReason::Vanished,
            Some(RestartReason::Evicted) => EndReason::Evicted,
            Some(RestartReason::Failed) => EndReason::Failed,
            None => EndReason::Shutdown,
        }
    }
}

/// The metrics of one runtime. Cheap to share (`Arc`); every update is a
/// relaxed atomic add.
#[derive(Debug)]
pub struct Metrics {
    tasks_live: AtomicI64,
    instances_live: AtomicI64,
    queue_depth: AtomicI64,
    running_jobs: AtomicI64,
    starts_ok: AtomicU64,
    starts_failed: AtomicU64,
    start_seconds: AtomicHistogram,
    execs: [AtomicU64; 4],
    exec_seconds: [AtomicHistogram; 4],
    exec_errors: [AtomicU64; 12],
    retries: [[AtomicU64; 12]; 4],
    ends: [AtomicU64; 6],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Metrics {
        Metrics {
            tasks_live: AtomicI64::new(0),
            instances_live: AtomicI64::new(0),
            queue_depth: AtomicI64::new(0),
            running_jobs: AtomicI64::new(0),
            starts_ok: AtomicU64::new(0),
            starts_failed: AtomicU64::new(0),
            start_seconds: AtomicHistogram::new(START_BUCKETS),
            execs: Default::default(),
            exec_seconds: std::array::from_fn(|_| AtomicHistogram::new(EXEC_BUCKETS)),
            exec_errors: Default::default(),
            retries: Default::default(),
            ends: Default::default(),
        }
    }

    /// A task actor came (`+1`) or went (`-1`).
    pub fn add_tasks(&self, delta: i64) {
        self.tasks_live.fetch_add(delta, Relaxed);
    }

    /// An instance came (`+1`, after a successful start) or went (`-1`,
    /// once stopped or dropped).
    pub fn add_instances(&self, delta: i64) {
        self.instances_live.fetch_add(delta, Relaxed);
    }

    /// Commands joined (`+n`) or left (`-n`) a task's queue.
    pub fn add_queued(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Relaxed);
    }

    /// A background job started (`+1`) or ended (`-1`: exited, killed,
    /// or lost with its instance).
    pub fn add_running_jobs(&self, delta: i64) {
        self.running_jobs.fetch_add(delta, Relaxed);
    }

    /// An instance start ended after `took` (its retries included, the wait
    /// for an instance slot not).
    pub fn start_done(&self, ok: bool, took: Duration) {
        if ok {
            self.starts_ok.fetch_add(1, Relaxed);
            self.start_seconds.observe(took);
        } else {
            self.starts_failed.fetch_add(1, Relaxed);
        }
    }

    /// A call answered after `took` (from the caller's request to its
    /// answer).
    pub fn exec_done(&self, result: &Result<ExecOutcome>, took: Duration) {
        let class = ExecClass::of(result);
        let i = class as usize;
        self.execs[i].fetch_add(1, Relaxed);
        self.exec_seconds[i].observe(took);
        if let Err(err) = result {
            self.exec_errors[kind_index(err.kind())].fetch_add(1, Relaxed);
        }
    }

    /// The backend operation `op` (`start`, `exec`, `stop`, `sweep`) is
    /// retried after an error of `kind`.
    pub fn retried(&self, op: &str, kind: ErrorKind) {
        if let Some(o) = RETRY_OPS.iter().position(|known| *known == op) {
            self.retries[o][kind_index(kind)].fetch_add(1, Relaxed);
        }
    }

    /// A task's instance ended for `reason`.
    pub fn instance_ended(&self, reason: EndReason) {
        self.ends[reason as usize].fetch_add(1, Relaxed);
    }

    /// Live task actors now.
    pub fn tasks_live(&self) -> i64 {
        self.tasks_live.load(Relaxed)
    }

    /// Commands waiting in task queues now.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.load(Relaxed)
    }

    /// Background jobs running now.
    pub fn running_jobs(&self) -> i64 {
        self.running_jobs.load(Relaxed)
    }

    /// Calls answered so far with outcome `class`.
    pub fn execs(&self, class: ExecClass) -> u64 {
        self.execs[class as usize].load(Relaxed)
    }

    /// Instances ended so far for `reason`.
    pub fn instance_ends(&self, reason: EndReason) -> u64 {
        self.ends[reason as usize].load(Relaxed)
    }

    /// The metrics in the Prometheus text format (version 0.0.4), served
    /// with [`TEXT_CONTENT_TYPE`].
    pub fn text(self: &Arc<Self>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let registry = self.registry();
        // Writing to a String cannot fail, and every value encodes.
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
            log::error!("metrics: the text encoder failed");
        }
        out
    }

    /// The metrics in the OpenMetrics text format, served with
    /// [`OPENMETRICS_CONTENT_TYPE`].
    pub fn openmetrics_text(self: &Arc<Self>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let registry = self.registry();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            log::error!("metrics: the OpenMetrics encoder failed");
        }
        out
    }

    fn registry(self: &Arc<Self>) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        registry
    }
}

/// Writes a gauge without labels.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// Writes a counter with one series per label set.
fn counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        gauge(
            e,
            "hecate_tasks_live",
            "Task actors alive (a task with or without an instance)",
            self.tasks_live.load(Relaxed),
        )?;
        gauge(
            e,
            "hecate_instances_live",
            "Instances started and not yet stopped",
            self.instances_live.load(Relaxed),
        )?;
        gauge(
            e,
            "hecate_queue_depth",
            "Commands waiting in task queues (behind a running command or for their instance)",
            self.queue_depth.load(Relaxed),
        )?;
        gauge(
            e,
            "hecate_jobs_running",
            "Background jobs running (started and not yet exited, killed or lost)",
            self.running_jobs.load(Relaxed),
        )?;
        counters(
            e,
            "hecate_instance_starts",
            "Instance starts, by result (retries within one start count once)",
            [
                (&[("result", "ok")][..], self.starts_ok.load(Relaxed)),
                (&[("result", "error")][..], self.starts_failed.load(Relaxed)),
            ],
        )?;
        self.start_seconds.encode_into(
            e,
            "hecate_instance_start_seconds",
            "Time a successful instance start took (retries included, the wait for a slot not)",
        )?;
        let outcomes = ExecClass::ALL.map(|c| [("outcome", c.as_str())]);
        counters(
            e,
            "hecate_execs",
            "Calls answered, by outcome (ok, nonzero, timed_out, error)",
            outcomes
                .iter()
                .zip(&self.execs)
                .map(|(labels, v)| (&labels[..], v.load(Relaxed))),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "hecate_exec_duration_seconds",
                "Time from a call's request to its answer, by outcome",
                None,
                MetricType::Histogram,
            )?;
            for (labels, histogram) in outcomes.iter().zip(&self.exec_seconds) {
                histogram.encode_series(metric.encode_family(&&labels[..])?)?;
            }
        }
        let kinds = KINDS.map(|k| [("kind", k.as_str())]);
        counters(
            e,
            "hecate_exec_errors",
            "Calls that failed, by error kind",
            kinds
                .iter()
                .zip(&self.exec_errors)
                .map(|(labels, v)| (&labels[..], v.load(Relaxed))),
        )?;
        let retry_labels: Vec<[(&str, &str); 2]> = RETRY_OPS
            .iter()
            .flat_map(|op| KINDS.map(|k| [("op", *op), ("class", k.as_str())]))
            .collect();
        counters(
            e,
            "hecate_retries",
            "Backend calls retried, by operation and error class",
            retry_labels
                .iter()
                .zip(self.retries.iter().flatten())
                .filter(|(labels, v)| {
                    // The classes that are ever retried always show; others
                    // only once one was.
                    matches!(labels[1].1, "transient" | "indeterminate") || v.load(Relaxed) > 0
                })
                .map(|(labels, v)| (&labels[..], v.load(Relaxed))),
        )?;
        let reasons = EndReason::ALL.map(|r| [("reason", r.as_str())]);
        counters(
            e,
            "hecate_instance_ends",
            "Instances ended, by reason (ttl, idle, vanished, evicted, failed, shutdown)",
            reasons
                .iter()
                .zip(&self.ends)
                .map(|(labels, v)| (&labels[..], v.load(Relaxed))),
        )?;
        Ok(())
    }
}
