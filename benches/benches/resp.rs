//! Benchmarks for `kv-resp`, side by side with the `redis-protocol` crate's RESP2 decoder
//! (`resp2::decode::decode_bytes_mut`, zero-copy over `BytesMut` like ours: the decoder of
//! `fred`, the most used async Redis client after `redis`; the `redis` crate's parser is
//! built for its own `Value` and connection types and is not usable on a buffer alone).
//!
//! Workload: a pipelined batch of 1,000 commands as `redis-benchmark -t set,get -d 100 -r
//! 100000 -P ...` sends them, alternating `SET key:NNNNNNNNNNNN <100 bytes>` and `GET
//! key:NNNNNNNNNNNN` (keys drawn with a fixed seed), about 70 KiB.
//! * `resp_pipeline/<decoder>`: the whole batch is in the buffer; decode every command.
//!   `kv_resp_command` is the server's path (`CommandDecoder`: arguments as `Bytes`),
//!   `kv_resp_frame` the generic `FrameDecoder`, `redis_protocol` the peer.
//! * `resp_pipeline_16k_reads/<decoder>`: the batch arrives in 16 KiB reads (Redis's
//!   `PROTO_IOBUF_LEN`); decode what is complete after each read.
//! * `resp_mset_16k_reads/<decoder>`: one `MSET` of 10,000 pairs (about 420 KiB) arriving in
//!   16 KiB reads: a decoder that starts again from the frame's first byte after each read
//!   (as mini-redis's and `redis-protocol`'s do) does quadratic work here; a resumable one
//!   does not.
//! * `resp_encode_replies/kv_resp`: the batch's 1,000 replies (`+OK`, 100-byte bulk) into
//!   one buffer.
//!
//! Run: `cargo bench -p benches --bench resp` (under a minute).

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kv_resp::{CommandDecoder, Encoder, FrameDecoder, Protocol, encode_command};
use rand::{Rng, SeedableRng, rngs::StdRng};

const COMMANDS: usize = 1000;
const VALUE_LEN: usize = 100;
const READ: usize = 16 * 1024;
const MSET_PAIRS: usize = 10_000;

/// The pipelined SET/GET batch.
fn batch() -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(21);
    let value = vec![b'x'; VALUE_LEN];
    let mut out = BytesMut::new();
    for i in 0..COMMANDS {
        let key = format!("key:{:012}", rng.random_range(0..100_000u64));
        if i % 2 == 0 {
            encode_command(&mut out, [&b"SET"[..], key.as_bytes(), &value]);
        } else {
            encode_command(&mut out, [&b"GET"[..], key.as_bytes()]);
        }
    }
    out.to_vec()
}

/// One MSET of `MSET_PAIRS` pairs.
fn mset() -> Vec<u8> {
    let value = vec![b'v'; 16];
    let keys: Vec<String> = (0..MSET_PAIRS).map(|i| format!("key:{i:012}")).collect();
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for k in &keys {
        args.push(k.as_bytes());
        args.push(&value);
    }
    let mut out = BytesMut::new();
    encode_command(&mut out, args);
    out.to_vec()
}

/// Decodes every command in `buf` with the server's decoder; returns the argument count.
fn kv_resp_commands(decoder: &mut CommandDecoder, buf: &mut BytesMut) -> usize {
    let mut args = 0;
    while let Some(cmd) = decoder.decode(buf).expect("valid") {
        args += black_box(cmd).len();
    }
    args
}

fn kv_resp_frames(decoder: &mut FrameDecoder, buf: &mut BytesMut) -> usize {
    let mut frames = 0;
    while let Some(frame) = decoder.decode(buf).expect("valid") {
        black_box(frame);
        frames += 1;
    }
    frames
}

fn redis_protocol_frames(buf: &mut BytesMut) -> usize {
    let mut frames = 0;
    while let Some((frame, _, _)) =
        redis_protocol::resp2::decode::decode_bytes_mut(buf).expect("valid")
    {
        black_box(frame);
        frames += 1;
    }
    frames
}

/// Feeds `input` in `READ`-byte reads, calling `decode_ready` after each.
fn in_reads(input: &[u8], mut decode_ready: impl FnMut(&mut BytesMut) -> usize) -> usize {
    let mut buf = BytesMut::with_capacity(READ);
    let mut n = 0;
    for chunk in input.chunks(READ) {
        buf.extend_from_slice(chunk);
        n += decode_ready(&mut buf);
    }
    assert!(buf.is_empty());
    n
}

fn bench(c: &mut Criterion) {
    let batch = batch();
    let mset = mset();

    let mut g = c.benchmark_group("resp_pipeline");
    g.throughput(Throughput::Elements(COMMANDS as u64));
    g.bench_function("kv_resp_command", |b| {
        let mut d = CommandDecoder::new();
        b.iter_batched_ref(
            || BytesMut::from(&batch[..]),
            |buf| assert_eq!(kv_resp_commands(&mut d, buf), COMMANDS / 2 * 5),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("kv_resp_frame", |b| {
        let mut d = FrameDecoder::new();
        b.iter_batched_ref(
            || BytesMut::from(&batch[..]),
            |buf| assert_eq!(kv_resp_frames(&mut d, buf), COMMANDS),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("redis_protocol", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&batch[..]),
            |buf| assert_eq!(redis_protocol_frames(buf), COMMANDS),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("resp_pipeline_16k_reads");
    g.throughput(Throughput::Elements(COMMANDS as u64));
    g.bench_function("kv_resp_command", |b| {
        b.iter(|| {
            let mut d = CommandDecoder::new();
            assert_eq!(
                in_reads(&batch, |buf| kv_resp_commands(&mut d, buf)),
                COMMANDS / 2 * 5
            )
        })
    });
    g.bench_function("redis_protocol", |b| {
        b.iter(|| assert_eq!(in_reads(&batch, redis_protocol_frames), COMMANDS))
    });
    g.finish();

    let mut g = c.benchmark_group("resp_mset_16k_reads");
    g.throughput(Throughput::Bytes(mset.len() as u64));
    g.bench_function("kv_resp_command", |b| {
        b.iter(|| {
            let mut d = CommandDecoder::new();
            assert_eq!(
                in_reads(&mset, |buf| kv_resp_commands(&mut d, buf)),
                1 + 2 * MSET_PAIRS
            )
        })
    });
    g.bench_function("kv_resp_frame", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new();
            assert_eq!(in_reads(&mset, |buf| kv_resp_frames(&mut d, buf)), 1)
        })
    });
    g.bench_function("redis_protocol", |b| {
        b.iter(|| assert_eq!(in_reads(&mset, redis_protocol_frames), 1))
    });
    g.finish();

    let mut g = c.benchmark_group("resp_encode_replies");
    g.throughput(Throughput::Elements(COMMANDS as u64));
    let value = vec![b'x'; VALUE_LEN];
    g.bench_function("kv_resp", |b| {
        let mut out = BytesMut::with_capacity(128 * 1024);
        let e = Encoder::new(Protocol::Resp2);
        b.iter(|| {
            out.clear();
            for i in 0..COMMANDS {
                if i % 2 == 0 {
                    e.simple(&mut out, b"OK");
                } else {
                    e.bulk(&mut out, &value);
                }
            }
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
