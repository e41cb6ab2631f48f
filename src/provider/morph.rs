//! The MorphCloud backend over awc.
