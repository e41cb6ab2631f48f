//! `terminal_hecate._native`: the Rust side of the Python drop-in for the
//! original `terminal_hecate` tool. The package `terminal_hecate` re-exports
//! its functions under the original's names and signatures, and registers
//! its fork and exit hooks.
//!
//! Every call runs on one Hecate [`Runtime`](hecate::Runtime) per process
//! ([`host`]), on a background thread started on first use. A call releases
//! the GIL while it waits and checks for signals every
//! [`SIGNAL_POLL`]; on `KeyboardInterrupt` (or any exception a signal
//! handler raises) the task's instance is stopped, which kills the running
//! command, and the exception propagates to the caller.

mod bench;
mod host;

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};
use serde_json::{Map, Value};

use hecate::tool::{self, ToolArgs};
use hecate::{BackendKind, Error};

/// How often a waiting call takes the GIL back to check for signals.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// How long an interrupted call waits for the task's instance to stop.
const INTERRUPT_STOP_LIMIT: Duration = Duration::from_secs(30);

/// The grace `shutdown()` gives running commands by default, in seconds.
const DEFAULT_SHUTDOWN_GRACE_SECS: f64 = 10.0;

/// Execute a command on a MorphCloud/Hecate VM (by default; `HECATE_BACKEND`
/// chooses another backend) and return the tool's result as a JSON string
/// with at least `output`, `exit_code` and `error`.
#[pyfunction]
#[pyo3(
    signature = (command, background=None, timeout=None, task_id=None),
    text_signature = "(command, background=False, timeout=None, task_id=None)"
)]
fn terminal_hecate_tool(
    py: Python<'_>,
    command: &Bound<'_, PyAny>,
    background: Option<&Bound<'_, PyAny>>,
    timeout: Option<&Bound<'_, PyAny>>,
    task_id: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let mut map = Map::new();
    match command.cast::<PyString>() {
        Ok(text) => map.insert("command".into(), Value::String(text.to_cow()?.into_owned())),
        Err(_) => {
            return Ok(invalid(format!(
                "command must be a string, not {}",
                type_name(command)
            )))
        }
    };
    let background = match background {
        Some(flag) => flag.is_truthy()?,
        None => false,
    };
    map.insert("background".into(), Value::Bool(background));
    if let Some(timeout) = timeout.filter(|t| !t.is_none()) {
        match timeout_value(timeout) {
            Some(value) => map.insert("timeout".into(), value),
            None => {
                return Ok(invalid(format!(
                    "timeout must be a number of seconds, not {}",
                    type_name(timeout)
                )))
            }
        };
    }
    // As in the original, a falsy task id (None, "") means "default".
    let task = match task_id.filter(|t| t.is_truthy().unwrap_or(true)) {
        None => tool::DEFAULT_TASK_ID.to_string(),
        Some(id) => match id.cast::<PyString>() {
            Ok(text) => text.to_cow()?.into_owned(),
            Err(_) => {
                return Ok(invalid(format!(
                    "task_id must be a string, not {}",
                    type_name(id)
                )))
            }
        },
    };
    map.insert("task_id".into(), Value::String(task.clone()));
    let value = Value::Object(map);

    let host = match py.detach(host::get_or_start) {
        Ok(host) => host,
        Err(err) => return Ok(tool::error_result(&err).to_json()),
    };
    let args =
        match ToolArgs::from_value_with_max(&value, host.runtime().config().max_command_timeout) {
            Ok(args) => args,
            Err(err) => return Ok(tool::error_result(&err).to_json()),
        };
    let mut rx = host.spawn(move |rt| async move { tool::terminal(&rt, args).await.to_json() });
    loop {
        // The receiver goes into the GIL-free closure and comes back.
        let (back, answer) = py.detach(move || {
            let answer = rx.recv_timeout(SIGNAL_POLL);
            (rx, answer)
        });
        rx = back;
        match answer {
            Ok(json) => return Ok(json),
            Err(RecvTimeoutError::Disconnected) => {
                return Ok(tool::error_result(&Error::shutting_down()).to_json())
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    // Stop the task's instance: the running command dies
                    // with it, and the task's next call gets a fresh one
                    // (its result says so).
                    let stopped = py.detach(|| host.evict_blocking(&task, INTERRUPT_STOP_LIMIT));
                    if let Err(err) = stopped {
                        log::warn!(
                            "task={task} interrupted, but the instance was not stopped: {err}"
                        );
                    }
                    return Err(interrupt);
                }
            }
        }
    }
}

/// Manually clean up a specific VM by task_id: stops the task's instance
/// (if the runtime has one) and forgets the task.
#[pyfunction]
#[pyo3(signature = (task_id))]
fn cleanup_vm(py: Python<'_>, task_id: &Bound<'_, PyAny>) -> PyResult<()> {
    let task = task_id.str()?.to_cow()?.into_owned();
    let Some(host) = py.detach(host::current) else {
        return Ok(());
    };
    let stopped = py.detach(|| host.evict_blocking(&task, INTERRUPT_STOP_LIMIT));
    let message = match stopped {
        Ok(true) => format!("[VM Cleanup] Manually terminated VM for task: {task}"),
        Ok(false) => return Ok(()),
        Err(err) => format!("[VM Cleanup] Error manually cleaning up VM for task {task}: {err}"),
    };
    print(py, &message)
}

/// Check if all requirements for the Hecate terminal tool are met: the
/// configuration from the environment is valid and, on MorphCloud (the
/// default), `MORPH_API_KEY` is set. Prints what is missing, like the
/// original.
#[pyfunction]
fn check_hecate_requirements(py: Python<'_>) -> PyResult<bool> {
    match host::config_from_env() {
        Err(err) => {
            print(py, &format!("Hecate configuration error: {err}"))?;
            Ok(false)
        }
        Ok(config) if config.backend == BackendKind::Morph && config.morph.api_key.is_none() => {
            print(py, "Missing required environment variables: MORPH_API_KEY")?;
            Ok(false)
        }
        Ok(_) => Ok(true),
    }
}

/// Stops this process's runtime: running commands get up to `grace`
/// seconds, then every instance is stopped. Returns True when everything
/// was stopped in time (also when no runtime was running). A later call
/// starts a fresh runtime. Registered with `atexit`.
#[pyfunction]
#[pyo3(signature = (grace=DEFAULT_SHUTDOWN_GRACE_SECS))]
fn shutdown(py: Python<'_>, grace: f64) -> PyResult<bool> {
    if !(grace.is_finite() && (0.001..=86_400.0).contains(&grace)) {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "grace must be a number of seconds from 0.001 to 86400, not {grace}"
        )));
    }
    let grace = Duration::from_secs_f64(grace);
    let Some(host) = py.detach(host::take) else {
        return Ok(true);
    };
    match py.detach(|| host.shutdown(grace)) {
        Ok(report) => {
            if !report.is_clean() {
                print(
                    py,
                    &format!("[VM Cleanup] not everything was stopped: {report:?}"),
                )?;
            }
            Ok(report.is_clean())
        }
        Err(err) => {
            print(py, &format!("[VM Cleanup] Error shutting down: {err}"))?;
            Ok(false)
        }
    }
}

/// Fork hook (`before`): see `host::before_fork`.
#[pyfunction]
fn _before_fork(py: Python<'_>) {
    // Lock with the GIL released: a thread starting the runtime holds the
    // lock without the GIL and never waits for it.
    py.detach(host::before_fork);
}

/// Fork hook (`after_in_parent`).
#[pyfunction]
fn _after_fork_in_parent() {
    host::after_fork_in_parent();
}

/// Fork hook (`after_in_child`): the child gets a fresh runtime on its
/// first call and never touches the parent's instances.
#[pyfunction]
fn _after_fork_in_child() {
    host::after_fork_in_child();
}

/// The tool result for arguments this module refuses before they reach
/// the runtime.
fn invalid(message: String) -> String {
    tool::error_result(&Error::invalid_input(message)).to_json()
}

/// `timeout` as JSON for the tool's own checks: numbers and numeric
/// strings pass (the tool checks their range), booleans are refused there.
fn timeout_value(timeout: &Bound<'_, PyAny>) -> Option<Value> {
    if timeout.is_instance_of::<PyBool>() {
        return Some(Value::Bool(timeout.is_truthy().unwrap_or(false)));
    }
    if timeout.is_instance_of::<PyInt>() {
        return match timeout.extract::<i64>() {
            Ok(n) => Some(Value::from(n)),
            Err(_) => Some(Value::String(
                timeout.str().ok()?.to_cow().ok()?.into_owned(),
            )),
        };
    }
    if timeout.is_instance_of::<PyFloat>() {
        let secs: f64 = timeout.extract().ok()?;
        return Some(
            serde_json::Number::from_f64(secs)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(secs.to_string())),
        );
    }
    if let Ok(text) = timeout.cast::<PyString>() {
        return Some(Value::String(text.to_cow().ok()?.into_owned()));
    }
    None
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown type".into())
}

/// Python's `print`, so the message goes wherever `sys.stdout` goes.
fn print(py: Python<'_>, message: &str) -> PyResult<()> {
    py.import("builtins")?.getattr("print")?.call1((message,))?;
    Ok(())
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let description = match host::config_from_env() {
        Ok(config) => tool::description_with(&tool::SchemaOptions::for_config(&config)),
        Err(_) => tool::description(),
    };
    m.add("TERMINAL_HECATE_DESCRIPTION", description)?;
    m.add_function(wrap_pyfunction!(terminal_hecate_tool, m)?)?;
    m.add_function(wrap_pyfunction!(cleanup_vm, m)?)?;
    m.add_function(wrap_pyfunction!(check_hecate_requirements, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_parent, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    bench::register(m)?;
    Ok(())
}
