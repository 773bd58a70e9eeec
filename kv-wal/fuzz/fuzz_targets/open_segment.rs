//! Opens a log directory built from arbitrary bytes under every recovery mode: recovery must
//! never panic, `PointInTime` must always open, and what is recovered must read back and
//! survive a reopen.
//!
//! Run (nightly): `cd kv-wal/fuzz && cargo fuzz run open_segment`. The same body runs on
//! seeded inputs in `kv-wal/tests/fuzz_open.rs` on stable.

#![no_main]

include!("../../tests/common/fuzz_body.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_open(data));
