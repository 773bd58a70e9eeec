//! The snapshot format, version 1: golden bytes (format.md's rules), round trips, and every
//! way a snapshot file can be wrong refused with its typed error.
//!
//! Regenerate the golden files only for a new version (keep the old ones):
//! `cargo test -p kv-meta --test snapshot_v1 -- --ignored write_golden_files`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kv_meta::{
    ChangeKind, ClusterMeta, Command, Error, MAX_SNAPSHOT_LEN, MetaNode, MetaSnapshot, NewMember,
    RateLimit, RingMember, SNAPSHOT_VERSION, Source, StreamTask,
};
use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/snapshot-v1")
        .join(name)
}

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

/// A fixed state, built by hand (not by kv-ring, whose token choice may change): three
/// members, a fourth joining, the change streaming with some progress.
pub fn golden_snapshot() -> MetaSnapshot {
    let member = |i: u64| NewMember {
        id: format!("n{i}"),
        cluster_addr: format!("127.0.0.1:700{i}"),
        client_addr: format!("127.0.0.1:637{i}"),
        weight: 1.0,
        tokens: vec![i * 100, i * 100 + 50],
    };
    let mut meta = ClusterMeta::default();
    let cmds = [
        Command::Bootstrap {
            uuid: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            name: "golden".into(),
            rf: 2,
            vnodes: 2,
            members: (1..=3).map(member).collect(),
        },
        Command::Register {
            id: "n4".into(),
            cluster_addr: "127.0.0.1:7004".into(),
            client_addr: "127.0.0.1:6374".into(),
        },
        Command::StartChange {
            kind: ChangeKind::Add,
            node: "n4".into(),
            to_members: (1..=4)
                .map(|i| RingMember {
                    id: format!("n{i}"),
                    weight: 1.0,
                    tokens: vec![i * 100, i * 100 + 50],
                })
                .collect(),
            tasks: vec![StreamTask::new(
                0,
                Source::Node("n1".into()),
                "n4".into(),
                vec![(350, 450)],
            )],
            started_ms: 1_764_979_200_000,
        },
        Command::BeginStreaming { change: 3 },
        Command::Progress {
            change: 3,
            task: 0,
            range: 0,
            done_through: 400,
            keys: 12,
            bytes: 3456,
        },
        Command::SetStreamRate {
            rate: RateLimit {
                keys_per_sec: 50_000,
                bytes_per_sec: 0,
            },
        },
        Command::Ack {
            node: "n2".into(),
            epoch: 2,
        },
    ];
    for (i, cmd) in cmds.iter().enumerate() {
        let r = meta.apply(i as u64 + 1, cmd);
        assert!(r.is_ok(), "{cmd:?}: {r:?}");
    }
    let nodes: BTreeMap<u64, MetaNode> = (1..=4)
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
    MetaSnapshot {
        last_log_id: Some(log_id(2, 1, 7)),
        membership: StoredMembership::new(
            Some(log_id(1, 1, 1)),
            Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes),
        ),
        meta,
    }
}

fn cases() -> [(&'static str, MetaSnapshot); 2] {
    [
        ("empty.bin", MetaSnapshot::default()),
        ("streaming.bin", golden_snapshot()),
    ]
}

#[test]
fn golden_files_read_back_exactly() {
    for (name, snap) in cases() {
        let bytes = snap.encode().unwrap();
        let stored = std::fs::read(golden(name)).unwrap();
        assert_eq!(
            bytes, stored,
            "{name}: this build writes other bytes than version 1's"
        );
        assert_eq!(MetaSnapshot::decode(&stored).unwrap(), snap, "{name}");
    }
}

#[test]
fn the_header_is_magic_version_and_body_crc() {
    let bytes = std::fs::read(golden("streaming.bin")).unwrap();
    assert_eq!(&bytes[..8], b"KVMETA\0\n");
    assert_eq!(bytes[8..12], SNAPSHOT_VERSION.to_le_bytes());
    assert_eq!(bytes[12..16], crc32c::crc32c(&bytes[16..]).to_le_bytes());
}

#[test]
fn a_file_round_trips_and_is_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    assert!(MetaSnapshot::read_file(&path).unwrap().is_none());
    MetaSnapshot::default().write_file(&path).unwrap();
    golden_snapshot().write_file(&path).unwrap();
    assert_eq!(
        MetaSnapshot::read_file(&path).unwrap(),
        Some(golden_snapshot())
    );
    assert!(!dir.path().join("snapshot.tmp").exists());
}

#[test]
fn corrupt_snapshots_are_refused_with_typed_errors() {
    let good = golden_snapshot().encode().unwrap();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        MetaSnapshot::decode(&b).unwrap_err()
    };
    assert!(matches!(
        with(&|b| b.truncate(10)),
        Error::SnapshotTruncated { len: 10 }
    ));
    assert!(matches!(with(&|b| b[0] = b'X'), Error::SnapshotMagic));
    assert!(matches!(
        with(&|b| b[8] = 2),
        Error::SnapshotVersion {
            found: 2,
            supported: 1
        }
    ));
    assert!(matches!(
        with(&|b| *b.last_mut().unwrap() ^= 1),
        Error::SnapshotCrc { .. }
    ));
    assert!(matches!(
        with(&|b| b.truncate(b.len() - 3)),
        Error::SnapshotCrc { .. }
    ));
    // A body with a valid CRC that does not decode, or has bytes after it.
    let recrc = |b: &mut Vec<u8>| {
        let crc = crc32c::crc32c(&b[16..]);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
    };
    assert!(matches!(
        with(&|b| {
            b.truncate(b.len() - 3);
            recrc(b)
        }),
        Error::SnapshotCorrupt { .. }
    ));
    assert!(matches!(
        with(&|b| {
            b.push(0);
            recrc(b)
        }),
        Error::SnapshotCorrupt { .. }
    ));
    // A body that decodes to a state breaking an invariant (two members in one slot).
    let mut bad = golden_snapshot();
    bad.meta.members.get_mut("n2").unwrap().slot = 0;
    let bytes = bad.encode().unwrap();
    match MetaSnapshot::decode(&bytes).unwrap_err() {
        Error::SnapshotCorrupt { reason } => assert!(reason.contains("slot"), "{reason}"),
        e => panic!("{e:?}"),
    }
    // A file over the limit is refused before it is read whole.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    std::fs::write(&path, vec![0u8; MAX_SNAPSHOT_LEN as usize + 100]).unwrap();
    assert!(matches!(
        MetaSnapshot::read_file(&path).unwrap_err(),
        Error::SnapshotTooLarge { .. }
    ));
}

/// membership.md §0's sizing claim: the largest cluster (64 members, 256 vnodes, balanced)
/// snapshots to about 150 KB, far below the 8 MiB limit, and reads back whole.
#[test]
fn the_largest_cluster_snapshots_small() {
    let options = kv_ring::RingOptions::default()
        .vnodes(256)
        .unwrap()
        .placement(kv_ring::Placement::Balanced {
            replication_factor: 3,
        });
    let ids: Vec<String> = (1..=64).map(|i| format!("node{i:02}")).collect();
    let ring = kv_ring::Ring::with_nodes(options, &ids).unwrap();
    let members = ids
        .iter()
        .enumerate()
        .map(|(i, id)| NewMember {
            id: id.clone(),
            cluster_addr: format!("10.0.0.{i}:7000"),
            client_addr: format!("10.0.0.{i}:6379"),
            weight: 1.0,
            tokens: ring.tokens_of(id).unwrap().to_vec(),
        })
        .collect();
    let mut meta = ClusterMeta::default();
    let cmd = Command::Bootstrap {
        uuid: 1,
        name: "big".into(),
        rf: 3,
        vnodes: 256,
        members,
    };
    assert!(meta.apply(1, &cmd).is_ok());
    let snap = MetaSnapshot {
        meta,
        ..MetaSnapshot::default()
    };
    let bytes = snap.encode().unwrap();
    assert!(bytes.len() < 256 << 10, "{} bytes", bytes.len());
    assert_eq!(MetaSnapshot::decode(&bytes).unwrap(), snap);
}

#[test]
#[ignore = "writes the golden files: only for a new snapshot version"]
fn write_golden_files() {
    for (name, snap) in cases() {
        std::fs::write(golden(name), snap.encode().unwrap()).unwrap();
    }
}
