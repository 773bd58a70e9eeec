//! Benchmarks for the `kv-cache` layer: not written yet (its issue is open).

fn main() {}
