//! Feeds arbitrary bytes, in arbitrary reads, to both decoders: they must never panic, and
//! every frame decoded must encode, decode and encode again to the same bytes (in both
//! protocol versions).
//!
//! The first byte of the input chooses the read size (1 to 256 bytes), so splits across
//! reads are fuzzed along with content.
//!
//! Run (nightly): `cd kv-resp/fuzz && cargo fuzz run decode`.

#![no_main]

use bytes::BytesMut;
use kv_resp::{CommandDecoder, Encoder, FrameDecoder, Limits, Protocol};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    // Small limits so that the fuzzer reaches them.
    let limits = Limits::new()
        .max_bulk_len(1024)
        .max_array_len(64)
        .max_depth(8)
        .max_inline_len(512);

    let mut commands = CommandDecoder::with_limits(limits);
    let mut frames = FrameDecoder::with_limits(limits);
    let mut command_buf = BytesMut::new();
    let mut frame_buf = BytesMut::new();
    let (mut command_failed, mut frame_failed) = (false, false);
    for piece in data.chunks(chunk) {
        if !command_failed {
            command_buf.extend_from_slice(piece);
            loop {
                match commands.decode(&mut command_buf) {
                    Ok(Some(cmd)) => assert!(cmd.len() >= 1),
                    Ok(None) => break,
                    Err(_) => {
                        command_failed = true;
                        break;
                    }
                }
            }
        }
        if !frame_failed {
            frame_buf.extend_from_slice(piece);
            loop {
                match frames.decode(&mut frame_buf) {
                    Ok(Some(frame)) => {
                        for protocol in [Protocol::Resp2, Protocol::Resp3] {
                            let encoder = Encoder::new(protocol);
                            let mut once = BytesMut::new();
                            encoder.frame(&mut once, &frame);
                            let mut copy = once.clone();
                            let again = FrameDecoder::new()
                                .decode(&mut copy)
                                .expect("the encoder's output decodes")
                                .expect("the encoder's output is complete");
                            assert!(copy.is_empty());
                            let mut twice = BytesMut::new();
                            encoder.frame(&mut twice, &again);
                            assert_eq!(once, twice);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        frame_failed = true;
                        break;
                    }
                }
            }
        }
    }
});
