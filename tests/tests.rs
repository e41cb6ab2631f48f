//! Hecate's integration tests: one binary, one module per area.

mod batch;
mod helper;
mod local_backend;
mod morph_backend;
mod morph_runtime;
mod runtime;
mod simulator;
mod tool;
