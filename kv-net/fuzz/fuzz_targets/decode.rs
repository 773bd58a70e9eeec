//! Feeds arbitrary bytes, in arbitrary reads, to the frame decoder: it must never panic, never
//! let its buffer grow past the frame limit, and every frame decoded must encode back to the
//! bytes it came from. `Hello` bodies are decoded too (a hostile peer controls them).
//!
//! The first byte of the input chooses the read size (1 to 256 bytes).
//!
//! Run (nightly): `cd kv-net/fuzz && cargo fuzz run decode`.

#![no_main]

use bytes::BytesMut;
use kv_net::{FrameCodec, FrameKind, Hello};

/// Small, so that the fuzzer reaches the limit.
const MAX: usize = 512;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    let codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    'reads: for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode_frame(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    let start = consumed;
                    consumed += used;
                    let again = frame.to_bytes(MAX).expect("a decoded frame fits its limit");
                    let all: Vec<u8> = data.to_vec();
                    assert_eq!(&again[..], &all[start..start + used]);
                    if frame.kind == FrameKind::Hello {
                        let _ = postcard::from_bytes::<Hello>(&frame.body);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'reads,
            }
        }
        assert!(buf.capacity() <= 4 * (MAX + 4 + 256), "buffer grew to {}", buf.capacity());
    }
});
