//! Integration tests: local_backend.
