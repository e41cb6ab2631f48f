//! Benchmark helpers (private names, used by `python/bench.py`): a runtime
//! over Hecate's no-op backend, and the same tool calls made through the
//! Rust handle on the runtime's own thread, so the drop-in's per-call cost
//! is measured against the Rust handle in the same process and run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use pyo3::prelude::*;

use hecate::bench::NoopProvider;
use hecate::tool::{self, ToolArgs};

use crate::host::{self, Backend};

/// Starts this process's runtime over the no-op backend (instances that
/// answer every command at once with exit 0), with the configuration from
/// the environment. Refused while a runtime runs.
#[pyfunction]
fn _start_noop_runtime(py: Python<'_>) -> PyResult<()> {
    py.detach(|| host::start_with(Backend::Provider(Arc::new(NoopProvider::new()))))
        .map_err(|err| pyo3::exceptions::PyRuntimeError::new_err(err.to_string()))
}

/// Runs `tasks` concurrent loops of `calls` tool calls each (`command`,
/// task ids `{prefix}{i}`) through the Rust handle on the runtime's thread,
/// and answers the wall time in seconds. Starts the runtime if needed.
#[pyfunction]
#[pyo3(signature = (command, calls, tasks=1, prefix="rust-"))]
fn _bench_handle(
    py: Python<'_>,
    command: String,
    calls: usize,
    tasks: usize,
    prefix: &str,
) -> PyResult<f64> {
    let runtime_error =
        |err: hecate::Error| pyo3::exceptions::PyRuntimeError::new_err(err.to_string());
    let host = py.detach(host::get_or_start).map_err(runtime_error)?;
    let mut loops = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let args = ToolArgs {
            command: command.clone(),
            background: false,
            timeout: None,
            task_id: Some(format!("{prefix}{i}")),
        };
        loops.push(args);
    }
    let rx = host.spawn(move |rt| async move {
        let started = Instant::now();
        let runs = loops.into_iter().map(|args| {
            let rt = rt.clone();
            async move {
                let mut failures = 0usize;
                for _ in 0..calls {
                    let result = tool::terminal(&rt, args.clone()).await;
                    if result.error.is_some() {
                        failures += 1;
                    }
                }
                failures
            }
        });
        let failures: usize = join_all(runs).await.into_iter().sum();
        (started.elapsed(), failures)
    });
    let (elapsed, failures): (Duration, usize) = py
        .detach(move || rx.recv())
        .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("the runtime went away"))?;
    if failures > 0 {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "{failures} of the benchmark's calls failed"
        )));
    }
    Ok(elapsed.as_secs_f64())
}

/// Adds the helpers to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_start_noop_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(_bench_handle, m)?)?;
    Ok(())
}
