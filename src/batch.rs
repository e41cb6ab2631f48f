//! The batch runner behind `hecate batch`.
