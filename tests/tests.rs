//! Hecate's integration tests: one binary, one module per area. Areas that
//! exercise a front end or the simulator need its feature (see the crate
//! doc); the runtime, backend and tool tests run under any features.

#[cfg(feature = "cli")]
mod batch;
#[cfg(all(feature = "cli", feature = "sim"))]
mod bench;
// Runs the `hecate` binary, which needs both features.
#[cfg(all(feature = "cli", feature = "sim"))]
mod cli;
mod helper;
mod launcher;
mod local_backend;
// Also drives `gc::run_cli`.
#[cfg(all(feature = "cli", feature = "sim"))]
mod morph_backend;
#[cfg(feature = "sim")]
mod morph_start;
// Also drives the batch runner.
#[cfg(all(feature = "cli", feature = "sim"))]
mod morph_runtime;
#[cfg(feature = "sim")]
mod reliability;
mod runtime;
mod sandbox;
mod sandbox_backend;
// Runs the `hecate` binary too (`hecate serve`).
#[cfg(all(feature = "server", feature = "cli", feature = "sim"))]
mod server;
// Runs every scenario on the local backend and on the simulator.
#[cfg(feature = "sim")]
mod shell;
mod shutdown;
#[cfg(feature = "sim")]
mod simulator;
// Runs on the local backend, the sandbox and the simulator.
#[cfg(feature = "sim")]
mod streaming;
mod tool;
