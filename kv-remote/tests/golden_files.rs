//! The replica protocol's bodies, version 2, pinned by golden files (docs/format.md, "Replica
//! protocol"): today's encoder writes exactly them, and each reads back to its value.
//!
//! Regenerate only for a *new* protocol version (into a new directory, keeping this one):
//! `cargo test -p kv-remote --test golden_files -- --ignored write_golden_files`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use kv_remote::*;

const VERSION: u64 = 0x019A_F0F5_5001_0001;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/replica-v2")
}

/// Version 1's files (no expiry fields), kept: this build refuses them cleanly.
fn v1_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/replica-v1")
}

fn entry(key: &'static str, value: Option<&'static str>) -> Entry {
    Entry {
        key: Bytes::from(key),
        value: value.map(Bytes::from),
        version: VERSION,
        // Values expire (2030-01-01T00:00:00Z), so the field is pinned with a value.
        expires: value.map(|_| 1_893_456_000_000),
    }
}

/// One request of each kind, and one response of each kind.
fn requests() -> Vec<(&'static str, Request)> {
    let range = Range { start: 10, end: 20 };
    vec![
        (
            "request-apply.bin",
            Request::Apply {
                epoch: 7,
                write: entry("user:1", Some("Alice")),
            },
        ),
        (
            "request-apply-swap.bin",
            Request::ApplySwap {
                epoch: 7,
                write: entry("user:1", None),
                read_value: true,
            },
        ),
        (
            "request-apply-batch.bin",
            Request::ApplyBatch {
                epoch: 7,
                writes: vec![entry("a", Some("1")), entry("b", None)],
            },
        ),
        (
            "request-read.bin",
            Request::Read {
                epoch: 7,
                key: Bytes::from("user:1"),
            },
        ),
        (
            "request-read-version.bin",
            Request::ReadVersion {
                epoch: 7,
                key: Bytes::from("k"),
            },
        ),
        (
            "request-read-many.bin",
            Request::ReadMany {
                epoch: 7,
                keys: vec![Bytes::from("a"), Bytes::from("b")],
            },
        ),
        (
            "request-read-versions.bin",
            Request::ReadVersions {
                epoch: 7,
                keys: vec![Bytes::from("a")],
            },
        ),
        (
            "request-import.bin",
            Request::Import {
                epoch: 7,
                records: vec![entry("k", Some("v"))],
            },
        ),
        (
            "request-drop-ranges.bin",
            Request::DropRanges {
                epoch: 7,
                ranges: vec![range],
            },
        ),
        (
            "request-count-in-ranges.bin",
            Request::CountInRanges {
                ranges: vec![range],
            },
        ),
        (
            "request-reserve.bin",
            Request::Reserve {
                ranges: vec![range],
                keys: 1000,
            },
        ),
        ("request-held.bin", Request::Held),
        ("request-fence.bin", Request::Fence { epoch: 8 }),
        ("request-sync.bin", Request::Sync),
        ("request-compact.bin", Request::Compact),
        ("request-last-flush.bin", Request::LastFlush),
        ("request-expiring-keys.bin", Request::ExpiringKeys),
        (
            "request-digests.bin",
            Request::Digests {
                epoch: 7,
                range,
                leaves: 16,
            },
        ),
        (
            "request-export-open.bin",
            Request::ExportOpen {
                epoch: 7,
                ranges: vec![range],
                batch_size: 1000,
            },
        ),
        (
            "request-export-next.bin",
            Request::ExportNext { session: 3 },
        ),
        (
            "request-export-close.bin",
            Request::ExportClose { session: 3 },
        ),
        // Appended after version 2 was first pinned (new variants go at the end).
        (
            "request-meta.bin",
            Request::Meta(Bytes::from_static(b"\x01raft-vote")),
        ),
    ]
}

fn responses() -> Vec<(&'static str, Response)> {
    let value = || VersionedValue {
        value: Some(Bytes::from("Alice")),
        version: VERSION,
        expires: Some(1_893_456_000_000),
    };
    vec![
        ("response-applied.bin", Response::Applied(true)),
        (
            "response-swapped.bin",
            Response::Swapped(Swap::Applied {
                previous: Some(PreviousEntry {
                    version: 5,
                    live: true,
                    value: Some(Bytes::from("old")),
                    expires: Some(1_893_456_000_000),
                }),
            }),
        ),
        (
            "response-swapped-kept.bin",
            Response::Swapped(Swap::Kept { current: VERSION }),
        ),
        ("response-count.bin", Response::Count(300)),
        ("response-value.bin", Response::Value(Some(value()))),
        (
            "response-tombstone.bin",
            Response::Value(Some(VersionedValue {
                value: None,
                version: 9,
                expires: None,
            })),
        ),
        ("response-version.bin", Response::Version(Some(VERSION))),
        (
            "response-values.bin",
            Response::Values(vec![Some(value()), None]),
        ),
        (
            "response-versions.bin",
            Response::Versions(vec![None, Some(9)]),
        ),
        (
            "response-counted.bin",
            Response::Counted(Counts {
                live: 3,
                tombstones: 1,
                live_bytes: 200,
            }),
        ),
        ("response-done.bin", Response::Done),
        (
            "response-compacted.bin",
            Response::Compacted(Compaction {
                segments_compacted: 2,
                segments_deleted: 2,
                records_copied: 10,
                bytes_copied: 4096,
                tombstones_purged: 1,
                duration_us: 1500,
            }),
        ),
        (
            "response-last-flush.bin",
            Response::LastFlush(Some((1_700_000_000, 5))),
        ),
        (
            "response-digests.bin",
            Response::Digests(vec![LeafDigest {
                hash: 0xABCD,
                keys: 2,
            }]),
        ),
        (
            "response-page.bin",
            Response::Page {
                session: 3,
                records: vec![entry("k", Some("v"))],
                done: false,
            },
        ),
        (
            "response-failed-stale-epoch.bin",
            Response::Failed(RemoteError::StaleEpoch {
                epoch: 7,
                current: 8,
            }),
        ),
        (
            "response-failed-value-too-large.bin",
            Response::Failed(RemoteError::ValueTooLarge {
                len: 17_000_000,
                max: 16_777_216,
            }),
        ),
        (
            "response-failed.bin",
            Response::Failed(RemoteError::Failed {
                message: "disk full".into(),
            }),
        ),
        (
            "response-meta.bin",
            Response::Meta(Bytes::from_static(b"\x01granted")),
        ),
        (
            "response-failed-no-meta-service.bin",
            Response::Failed(RemoteError::Failed {
                message: NO_META_SERVICE.into(),
            }),
        ),
    ]
}

fn files() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = requests()
        .into_iter()
        .map(|(n, r)| (n, postcard::to_allocvec(&r).unwrap()))
        .collect();
    out.extend(
        responses()
            .into_iter()
            .map(|(n, r)| (n, postcard::to_allocvec(&r).unwrap())),
    );
    out
}

#[test]
fn golden_files_are_what_the_encoder_writes() {
    for (name, bytes) in files() {
        let on_disk = std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            on_disk, bytes,
            "{name} differs from what version {PROTOCOL_VERSION} writes"
        );
    }
}

#[test]
fn golden_files_decode_to_their_values() {
    for (name, request) in requests() {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        assert_eq!(bytes[0], 2, "{name}: version byte");
        assert_eq!(
            postcard::from_bytes::<Request>(&bytes).unwrap(),
            request,
            "{name}"
        );
    }
    for (name, response) in responses() {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        assert_eq!(bytes[0], 2, "{name}: version byte");
        assert_eq!(
            postcard::from_bytes::<Response>(&bytes).unwrap(),
            response,
            "{name}"
        );
    }
}

#[test]
fn the_meta_bodies_read_field_by_field() {
    // As docs/format.md shows them: version 2, the variant index, the body's length, the body.
    let request = std::fs::read(dir().join("request-meta.bin")).unwrap();
    assert_eq!(&request[..3], [2, 21, 10]);
    assert_eq!(&request[3..], b"\x01raft-vote");
    let response = std::fs::read(dir().join("response-meta.bin")).unwrap();
    assert_eq!(&response[..3], [2, 14, 8]);
    assert_eq!(&response[3..], b"\x01granted");
}

#[test]
fn the_apply_request_reads_field_by_field() {
    // As docs/format.md walks through it.
    let bytes = std::fs::read(dir().join("request-apply.bin")).unwrap();
    assert_eq!(&bytes[..4], [2, 0, 7, 6]); // version 2, Apply, epoch 7, key length 6
    assert_eq!(&bytes[4..10], b"user:1");
    assert_eq!(&bytes[10..12], [1, 5]); // Some, length 5
    assert_eq!(&bytes[12..17], b"Alice");
    assert_eq!(
        &bytes[17..26],
        [0x81, 0x80, 0x84, 0x80, 0xd5, 0x9e, 0xbc, 0xcd, 0x01]
    );
    // expires: Some, then 1_893_456_000_000 as a varint.
    assert_eq!(bytes[26], 1);
    let mut expires = 0u64;
    for (i, b) in bytes[27..].iter().enumerate() {
        expires |= u64::from(b & 0x7f) << (7 * i);
    }
    assert_eq!(expires, 1_893_456_000_000);
}

/// Version 1's bodies (kept in `replica-v1/`) are refused cleanly, never misread: a request
/// fails to decode, a response reads as `UnsupportedVersion`.
#[test]
fn version_1_bodies_are_refused_cleanly() {
    let mut seen = 0;
    for entry in std::fs::read_dir(v1_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[0], 1, "{name}");
        if name.starts_with("request-") {
            // (The server reads requests as an envelope and answers `UnsupportedVersion`.)
            assert!(postcard::from_bytes::<Request>(&bytes).is_err(), "{name}");
        } else {
            assert_eq!(
                postcard::from_bytes::<Response>(&bytes).unwrap(),
                Response::Failed(RemoteError::UnsupportedVersion {
                    found: 1,
                    supported: PROTOCOL_VERSION
                }),
                "{name}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 20, "{seen} version-1 files");
}

#[test]
#[ignore = "writes the golden files: only for a new protocol version"]
fn write_golden_files() {
    std::fs::create_dir_all(dir()).unwrap();
    for (name, bytes) in files() {
        std::fs::write(dir().join(name), bytes).unwrap();
    }
}
