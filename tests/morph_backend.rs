//! Integration tests: morph_backend.
