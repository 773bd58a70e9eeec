//! Benchmarks for the `kv-wal` layer: not written yet (its issue is open).

fn main() {}
