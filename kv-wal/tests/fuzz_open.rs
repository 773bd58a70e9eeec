//! Runs the body of the `open_segment` fuzz target (`kv-wal/fuzz`) on seeded random inputs:
//! random bytes, and valid logs with random damage. Recovery must never panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

include!("common/fuzz_body.rs");

use kv_wal::layout;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A valid run of records (some in batches), as a segment body.
fn valid_body(rng: &mut StdRng) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..rng.random_range(0..12u32) {
        let len = rng.random_range(0..40);
        let payload: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
        body.extend(layout::encode_record(&payload, rng.random_bool(0.2)));
    }
    body
}

#[test]
fn recovery_never_panics_on_random_bytes() {
    let mut rng = StdRng::seed_from_u64(0xF022);
    for _ in 0..150 {
        let len = rng.random_range(0..600);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        fuzz_open(&data);
    }
}

#[test]
fn recovery_never_panics_on_damaged_logs() {
    let mut rng = StdRng::seed_from_u64(0xDA3A6E);
    for _ in 0..150 {
        let mut data = vec![rng.random_range(1..4u8)];
        data.extend(valid_body(&mut rng));
        data.resize(data.len() + rng.random_range(0..64), 0);
        for _ in 0..rng.random_range(0..4) {
            if data.len() > 1 {
                let at = rng.random_range(1..data.len());
                match rng.random_range(0..3) {
                    0 => data[at] ^= 1 << rng.random_range(0..8),
                    1 => data.truncate(at),
                    _ => data[at] = rng.random(),
                }
            }
        }
        fuzz_open(&data);
    }
}
