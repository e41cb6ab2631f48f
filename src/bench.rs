//! The load generator behind `hecate bench`: it drives a
//! [`Runtime`](crate::Runtime) with N tasks × M commands at a chosen
//! concurrency and reports what users of evaluation runs care about
//! (latency percentiles, commands and instance starts per second, time
//! until every task's instance was ready, peak memory, and instances left
//! live at the end, which must be none).
//!
//! This module owns the scenarios ([`Scenario`]), their arguments
//! ([`BenchArgs`]), the report ([`BenchReport`]) and the environments they
//! run in: the local backend under a private root, an in-process MorphCloud
//! simulator ([`crate::sim`]), an external MorphCloud-compatible server
//! (`MORPH_BASE_URL`), or a backend that does nothing
//! ([`NoopProvider`], for the runtime's own costs).
//!
//! # Layout
//!
//! - `bench/args.rs`: the scenarios and the arguments.
//! - `bench/env.rs`: the environments and the base configuration.
//! - `bench/drive.rs`: the load every scenario runs.
//! - `bench/scenarios.rs`: each scenario's setup and figures.
//! - `bench/report.rs`: the report, its invariants and the table.
//! - `bench/noop.rs`: the no-op backend, with eviction-lateness recording.
//! - `bench/measure.rs`: percentiles and memory from `/proc/self/status`.
//!
//! Every command text ends with a unique shell comment
//! `# hb:t<task>:c<index>;`, so the simulator can tell how often each one
//! ran (the `faults` scenario checks that none ran twice).

mod args;
mod drive;
mod env;
mod measure;
mod noop;
mod report;
mod scenarios;

pub use args::{BenchArgs, Scenario};
pub use measure::{ms, peak_rss_bytes, proc_status_bytes, rss_bytes, Percentiles};
pub use noop::NoopProvider;
pub use report::{Answers, BenchReport, FaultReport, IdleReport};

use args::Plan;

use crate::error::{Error, Result};

/// Runs `hecate bench`: the run, then the report as a table or JSON.
/// `backend` is the global `--backend` flag. A run that broke an invariant
/// (see [`BenchReport::problems`]) is an error, after the report.
pub async fn run_cli(mut args: BenchArgs, backend: Option<&str>) -> Result<()> {
    if let Some(name) = backend {
        args.backend = name.parse()?;
    }
    let report = run(&args).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::internal(format!("cannot encode the report: {e}")))?;
        outln!("{text}");
    } else {
        print!("{report}");
    }
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "the run broke an invariant: {}",
            problems.join("; ")
        )))
    }
}

/// Runs one scenario and reports. Must be called inside an actix `System`.
pub async fn run(args: &BenchArgs) -> Result<BenchReport> {
    let plan = Plan::resolve(args)?;
    match args.scenario {
        Scenario::Exec => scenarios::exec_scenario(args, &plan).await,
        Scenario::IdleActors => scenarios::idle_actors(args, &plan).await,
        Scenario::Boot => scenarios::boot(args, &plan).await,
        Scenario::Faults => scenarios::faults(args, &plan).await,
        Scenario::Eviction => scenarios::eviction(args, &plan).await,
    }
}
