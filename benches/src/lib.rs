//! Shared helpers for the kvstore benchmarks (workload generators used by several bench targets).
//!
//! The benchmarks themselves live in `benches/benches/<layer>.rs`, one target per layer; run them
//! with `cargo bench -p benches --bench <layer>`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
