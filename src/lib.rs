//! Hecate runs shell commands for AI agents, each agent task in its own
//! execution environment (a MorphCloud VM, or locally a private sandbox
//! directory), and manages the whole lifecycle for the caller.
//!
//! ```no_run
//! use hecate::{Config, ExecRequest, Runtime};
//!
//! #[actix_rt::main]
//! async fn main() -> hecate::Result<()> {
//!     let rt = Runtime::start(Config::from_env()?)?;
//!     let out = rt.exec("task-1", ExecRequest::new("echo hi")).await?;
//!     assert_eq!(out.stdout.to_text(), "hi\n");
//!     rt.shutdown(std::time::Duration::from_secs(30)).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Architecture
//!
//! A [`runtime::TaskRegistry`] actor routes each request by task id to that
//! task's [`runtime::VmActor`], which a [`runtime::TaskSupervisor`] creates
//! on the task's first request, spread over one worker arbiter per core.
//! A `VmActor` owns its task's instance (a [`provider::Instance`] from the
//! configured [`Provider`]): the lifecycle as one state enum, a FIFO command
//! queue, an idle timer and a TTL deadline, and retries with backoff for
//! errors its backend classifies as transient. When it retires (idle, TTL,
//! eviction, failure) the registry forgets it and re-routes requests that
//! reached it late, so every request gets exactly one answer. Shutdown is an
//! explicit, awaited message that stops every instance. See [`runtime`].
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
//! - [`bench`](mod@bench): the load generator behind `hecate bench`.
//! - [`sim`]: a MorphCloud simulator for tests, benchmarks and dry runs.
//! - [`gc`]: finding and stopping instances a crashed runtime left behind.

pub mod batch;
pub mod bench;
pub mod config;
pub mod error;
pub mod gc;
pub mod json;
pub mod provider;
pub mod runtime;
pub mod sim;
pub mod tool;
pub mod unix;

pub use config::{ApiKey, BackendKind, Config, RetryPolicy};
pub use error::{Error, ErrorKind, Result};
pub use provider::{
    Captured, ExecOutput, ExecSpec, Instance, JobInfo, Provider, StartSlot, StartSpec,
};
pub use runtime::{
    ExecOutcome, ExecRequest, Placement, RestartReason, Runtime, ShutdownReport, TaskInfo,
    TaskState,
};
