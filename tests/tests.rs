//! Hecate's integration tests: one binary, one module per area.

mod batch;
mod bench;
mod cli;
mod helper;
mod local_backend;
mod morph_backend;
mod morph_runtime;
mod reliability;
mod runtime;
mod shutdown;
mod simulator;
mod tool;
