//! Hecate's integration tests: one binary, one module per area.

mod batch;
mod bench;
mod helper;
mod local_backend;
mod morph_backend;
mod runtime;
mod simulator;
mod tool;
