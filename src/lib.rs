//! Hecate runs shell commands for AI agents, each agent task in its own
//! execution environment (a MorphCloud VM, or locally a private sandbox
//! directory), and manages the whole lifecycle for the caller.
//!
//! # Layout
//!
//! - [`config`]: every setting, defaults, environment variables.
//! - [`error`]: the error type and its kinds.
//! - [`provider`]: the backend boundary and the backends
//!   ([`provider::local`], [`provider::morph`]).
//! - [`runtime`]: the actors and the public handle.
//! - [`tool`]: the LLM-facing contract (arguments, result JSON, schema).
//! - [`batch`]: the batch runner behind `hecate batch`.
//! - [`bench`]: the load generator behind `hecate bench`.
//! - [`sim`]: a MorphCloud simulator for tests, benchmarks and dry runs.
//! - [`gc`]: finding and stopping instances a crashed runtime left behind.

pub mod batch;
pub mod bench;
pub mod config;
pub mod error;
pub mod gc;
pub mod provider;
pub mod runtime;
pub mod sim;
pub mod tool;

pub use config::{ApiKey, BackendKind, Config, RetryPolicy};
pub use error::{Error, ErrorKind, Result};
pub use provider::{Captured, ExecOutput, ExecSpec, Instance, JobInfo, Provider, StartSpec};
pub use runtime::{
    ExecOutcome, ExecRequest, Placement, RestartReason, Runtime, ShutdownReport, TaskInfo,
    TaskState,
};
