//! The local backend: a private directory per instance on this machine.
