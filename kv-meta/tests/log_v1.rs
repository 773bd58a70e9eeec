//! The meta log record format, version 1: golden bytes of every record kind (and of
//! openraft's `Entry`, `Vote` and `LogId` inside them, so an openraft upgrade that changes
//! their serde form fails here, not in a cluster).
//!
//! Regenerate only for a new version (keep the old files):
//! `cargo test -p kv-meta --test log_v1 -- --ignored write_golden_files`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kv_meta::{
    ChangeKind, Command, Error, LOG_RECORD_VERSION, LogRecord, MetaNode, MetaTypes, RingMember,
    Source, StreamTask,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/log-v1")
        .join(name)
}

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn entry(index: u64, payload: EntryPayload<MetaTypes>) -> LogRecord {
    LogRecord::Entry(Entry {
        log_id: log_id(2, 1, index),
        payload,
    })
}

fn cases() -> Vec<(&'static str, LogRecord)> {
    let nodes: BTreeMap<u64, MetaNode> = (1..=3)
        .map(|i| {
            (
                i,
                MetaNode {
                    id: i,
                    cluster_addr: format!("127.0.0.1:700{i}"),
                },
            )
        })
        .collect();
    vec![
        ("entry-blank.bin", entry(7, EntryPayload::Blank)),
        (
            "entry-register.bin",
            entry(
                8,
                EntryPayload::Normal(Command::Register {
                    id: "n4".into(),
                    cluster_addr: "127.0.0.1:7004".into(),
                    client_addr: "127.0.0.1:6374".into(),
                }),
            ),
        ),
        (
            "entry-start-change.bin",
            entry(
                9,
                EntryPayload::Normal(Command::StartChange {
                    kind: ChangeKind::Add,
                    node: "n4".into(),
                    to_members: vec![
                        RingMember {
                            id: "n1".into(),
                            weight: 1.0,
                            tokens: vec![100, 150],
                        },
                        RingMember {
                            id: "n4".into(),
                            weight: 0.5,
                            tokens: vec![400],
                        },
                    ],
                    tasks: vec![
                        StreamTask::new(
                            0,
                            Source::Node("n1".into()),
                            "n4".into(),
                            vec![(350, 400)],
                        ),
                        StreamTask::new(1, Source::Survivors, "n4".into(), vec![(u64::MAX - 1, 5)]),
                    ],
                    started_ms: 1_764_979_200_000,
                }),
            ),
        ),
        (
            "entry-membership.bin",
            entry(
                10,
                EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)),
            ),
        ),
        ("vote.bin", LogRecord::Vote(Vote::new(3, 2))),
        (
            "vote-committed.bin",
            LogRecord::Vote(Vote::new_committed(3, 2)),
        ),
        ("committed.bin", LogRecord::Committed(Some(log_id(2, 1, 9)))),
        ("committed-none.bin", LogRecord::Committed(None)),
        ("truncate-from.bin", LogRecord::TruncateFrom(300)),
        (
            "purged-through.bin",
            LogRecord::PurgedThrough(log_id(2, 1, 9)),
        ),
    ]
}

#[test]
fn golden_files_read_back_exactly() {
    for (name, record) in cases() {
        let bytes = record.encode().unwrap();
        let stored = std::fs::read(golden(name)).unwrap();
        assert_eq!(
            bytes, stored,
            "{name}: this build writes other bytes than version 1's"
        );
        assert_eq!(stored[0], LOG_RECORD_VERSION, "{name}");
        let read = LogRecord::decode(0, &stored).unwrap();
        assert_eq!(format!("{read:?}"), format!("{record:?}"), "{name}");
    }
}

#[test]
fn kinds_are_pinned() {
    let kinds: Vec<(&str, u8)> = cases()
        .iter()
        .map(|(n, r)| (*n, r.encode().unwrap()[1]))
        .collect();
    for (name, kind) in kinds {
        let expected = match name {
            n if n.starts_with("entry") => 1,
            n if n.starts_with("vote") => 2,
            n if n.starts_with("committed") => 3,
            "truncate-from.bin" => 4,
            "purged-through.bin" => 5,
            _ => unreachable!(),
        };
        assert_eq!(kind, expected, "{name}");
    }
}

#[test]
fn bad_records_are_typed_errors() {
    let vote = LogRecord::Vote(Vote::new(3, 2)).encode().unwrap();
    let decode = |b: &[u8]| LogRecord::decode(42, b).unwrap_err();
    assert!(matches!(decode(&[]), Error::BadRecord { lsn: 42, .. }));
    assert!(matches!(decode(&[1]), Error::BadRecord { .. }));
    let mut v2 = vote.clone();
    v2[0] = 2;
    assert!(matches!(
        decode(&v2),
        Error::UnsupportedRecord {
            lsn: 42,
            version: 2,
            supported: 1
        }
    ));
    let mut kind9 = vote.clone();
    kind9[1] = 9;
    match decode(&kind9) {
        Error::BadRecord { reason, .. } => assert!(reason.contains("kind 9"), "{reason}"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        decode(&vote[..vote.len() - 1]),
        Error::BadRecord { .. }
    ));
    let mut long = vote.clone();
    long.push(0);
    assert!(matches!(decode(&long), Error::BadRecord { .. }));
}

#[test]
#[ignore = "writes the golden files: only for a new record version"]
fn write_golden_files() {
    for (name, record) in cases() {
        std::fs::write(golden(name), record.encode().unwrap()).unwrap();
    }
}
