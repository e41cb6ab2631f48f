//! A MorphCloud simulator: a loopback HTTP server speaking the MorphCloud
//! instance API, for tests, benchmarks and dry runs.
