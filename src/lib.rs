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
//! configured [`Provider`]): the lifecycle as one state enum whose variants
//! carry their own data, a FIFO command queue, an idle timer and a TTL
//! deadline, and one retry loop with backoff for errors its backend
//! classifies as transient. When it retires (idle, TTL, eviction, failure)
//! the registry forgets it and re-routes requests that reached it late, so
//! every request gets exactly one answer. Shutdown is an explicit, awaited
//! message that stops every instance. The [`runtime`] module doc follows one
//! exec from [`Runtime::exec`] through the registry and the actor to the
//! provider and back.
//!
//! Layers point down only: front-ends and the LLM contract ([`tool`]) on top,
//! then [`runtime`], then [`provider`], then [`launcher`] and [`unix`].
//!
//! # Layout
//!
//! - [`config`]: every setting, defaults, environment variables.
//! - [`error`]: the error type and its kinds.
//! - [`json`]: small JSON helpers shared by the tool and the wire parser.
//! - [`provider`]: the backend boundary and the backends
//!   ([`provider::local`], [`provider::morph`]).
//! - [`runtime`]: the actors and the public handle.
//! - [`shell`]: the persistent shell (`cd` and `export` carry over between
//!   the calls of a task), as a wrapping of each command's text.
//! - [`spec`]: task environments (image, environment, working directory,
//!   files, setup, lifetimes) applied to each instance of a task.
//! - [`tool`]: the LLM-facing contract (arguments, result JSON, schema).
//! - [`stream`]: streaming output ([`Runtime::exec_stream`]): chunks with
//!   byte offsets, and the bounded buffer between a backend and its reader.
//! - [`metrics`]: the runtime's Prometheus metrics
//!   ([`Runtime::metrics_text`]).
//! - [`launcher`]: the local backend's per-instance process launcher
//!   (sessions, cgroups, subreaper, capability drop).
//! - [`unix`]: /proc, signals, kill rounds and exit codes, below the backends.
//! - [`gc`]: finding and stopping instances a crashed runtime left behind
//!   (its command-line front end, `gc::run_cli`, needs `cli`).
//! - `batch` (feature `cli`): the batch runner behind `hecate batch`.
//! - `bench` (features `cli` and `sim`): the load generator behind
//!   `hecate bench`.
//! - `mcp` (feature `mcp`): the tools served over the Model Context
//!   Protocol (`hecate mcp`).
//! - `sim` (feature `sim`): a MorphCloud simulator for tests, benchmarks
//!   and dry runs (its `hecate sim` front end needs `cli` too).
//! - `server` (feature `server`): the HTTP API behind `hecate serve`.
//!
//! # Features
//!
//! All four are on by default; the `hecate` binary needs `cli`, `sim` and
//! `server` (and offers `hecate mcp` with `mcp`).
//!
//! - `cli`: the command line's pieces: argument structs (clap), progress
//!   bars (indicatif), the logger the binary installs (env_logger), and the
//!   `batch` and `bench` front ends.
//! - `sim`: the MorphCloud simulator and its HTTP server (actix-web).
//! - `mcp`: the MCP server (`hecate::mcp`, the `rmcp` SDK).
//! - `server`: the HTTP API (`hecate serve`: actix-web, utoipa, subtle).
//!
//! An embedder that needs only the runtime, the backends and the tool
//! contract builds without them:
//! `hecate = { version = "0.1", default-features = false }`.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// Dev-dependencies are not the library's, so test builds are exempt.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

/// Prints a line on stdout for the command line. A reader that went away
/// (`hecate gc | head`) ends the output quietly instead of panicking the
/// way `println!` does on a closed pipe.
#[allow(unused_macros)]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[cfg(feature = "cli")]
pub mod batch;
#[cfg(all(feature = "cli", feature = "sim"))]
pub mod bench;
pub mod config;
pub mod error;
pub mod files;
pub mod gc;
pub mod jobs;
pub mod json;
pub mod launcher;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod metrics;
pub mod provider;
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;
pub mod shell;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spec;
pub mod stream;
pub mod tool;
pub mod unix;

// The binary installs the logger; the library itself only logs.
#[cfg(feature = "cli")]
use env_logger as _;

pub use config::{ApiKey, BackendKind, Config, RetryPolicy, SandboxConfig};
pub use error::{Error, ErrorKind, Result};
pub use files::{
    DownloadSpec, DownloadTarget, FilesConfig, TransferLimits, Transferred, UploadSource,
    UploadSpec,
};
pub use jobs::{JobOutput, JobRecord, JobState, JobsConfig};
pub use provider::{
    Captured, ExecOutput, ExecSpec, Instance, JobInfo, Provider, StartSlot, StartSpec,
};
pub use runtime::{
    ExecOutcome, ExecRequest, Placement, RestartReason, Runtime, ShutdownReport, StopFailure,
    TaskInfo, TaskOpened, TaskState,
};
pub use spec::{SetupReport, TaskSpec};
pub use stream::{Chunk, OutputSink, OutputStream, StreamKind, StreamOptions};
