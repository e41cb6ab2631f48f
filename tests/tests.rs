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
#[cfg(feature = "sim")]
mod files;
#[cfg(feature = "sim")]
mod files_morph;
mod helper;
// Runs every scenario on local, sandbox and the simulator.
#[cfg(feature = "sim")]
mod jobs;
mod launcher;
mod local_backend;
// Runs `hecate mcp`.
#[cfg(all(feature = "cli", feature = "sim", feature = "mcp"))]
mod mcp;
mod metrics;
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
// Runs the `hecate` binary, which needs both features.
#[cfg(all(feature = "cli", feature = "sim"))]
mod sandbox_fallback;
mod sandbox_hostile;
mod sandbox_network;
mod sandbox_rootfs;
// Runs the `hecate` binary too (`hecate serve`).
#[cfg(all(feature = "server", feature = "cli", feature = "sim"))]
mod server;
// The rest of the HTTP API and `hecate cp` (runs the binary).
#[cfg(all(feature = "server", feature = "cli", feature = "sim"))]
mod server_api;
// Runs every scenario on the local backend and on the simulator.
#[cfg(feature = "sim")]
mod shell;
mod shutdown;
#[cfg(feature = "sim")]
mod simulator;
// Task environments on local, sandbox and the simulator.
#[cfg(feature = "sim")]
mod task_spec;
// Runs on the local backend, the sandbox and the simulator.
#[cfg(feature = "sim")]
mod streaming;
mod tool;
