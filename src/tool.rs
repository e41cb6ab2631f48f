//! The LLM-facing tool contract.
