//! The range stream format, version 1, pinned by golden files (docs/format.md, "Range
//! streams"): today's encoder writes exactly them, and each reads back to its value.
//!
//! Regenerate only for a *new* format version (into a new directory, keeping this one):
//! `cargo test -p kv-remote --test range_stream_golden -- --ignored write_golden_files`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use kv_remote::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/range-stream-v1")
}

fn header() -> StreamHeader {
    StreamHeader {
        change: 3,
        task: 2,
        term: 5,
        epoch: 12,
    }
}

fn messages() -> Vec<(&'static str, StreamMessage)> {
    vec![
        (
            "chunk-records.bin",
            StreamMessage::Records(vec![
                Entry {
                    key: Bytes::from("user:1"),
                    value: Some(Bytes::from("Alice")),
                    version: 0x019A_F0F5_5001_0001,
                    expires: Some(1_893_456_000_000),
                },
                Entry {
                    key: Bytes::from("user:2"),
                    value: None,
                    version: 0x019A_F0F5_5001_0002,
                    expires: None,
                },
            ]),
        ),
        (
            "chunk-checkpoint.bin",
            StreamMessage::Checkpoint {
                range: Range {
                    start: 0x1000_0000_0000_0000,
                    end: 0x3000_0000_0000_0000,
                },
                done_through: 0x2000_0000_0000_0000,
            },
        ),
    ]
}

#[test]
fn the_encoder_writes_the_golden_files_and_reads_them_back() {
    let h = std::fs::read(dir().join("header.bin")).unwrap();
    assert_eq!(header().encode(), h);
    assert_eq!(StreamHeader::decode(&h).unwrap(), header());
    for (file, m) in messages() {
        let bytes = std::fs::read(dir().join(file)).unwrap();
        assert_eq!(m.encode(), bytes, "{file}");
        assert_eq!(StreamMessage::decode(&bytes).unwrap(), m, "{file}");
    }
}

#[test]
fn the_checkpoint_file_is_the_bytes_format_md_gives() {
    // 01 version, 01 variant Checkpoint, start, end, done_through as varints.
    let bytes = std::fs::read(dir().join("chunk-checkpoint.bin")).unwrap();
    assert_eq!(&bytes[..2], &[STREAM_FORMAT_VERSION, 1]);
    let header = std::fs::read(dir().join("header.bin")).unwrap();
    assert_eq!(header, vec![1, 3, 2, 5, 12]);
}

#[test]
#[ignore = "writes the golden files; run only for a new format version"]
fn write_golden_files() {
    std::fs::create_dir_all(dir()).unwrap();
    std::fs::write(dir().join("header.bin"), header().encode()).unwrap();
    for (file, m) in messages() {
        std::fs::write(dir().join(file), m.encode()).unwrap();
    }
}
