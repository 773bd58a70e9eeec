//! Benchmarks for the `kv-ring` layer: being written.

fn main() {}
