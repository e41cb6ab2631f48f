//! The `hecate` command line.
fn main() {}
