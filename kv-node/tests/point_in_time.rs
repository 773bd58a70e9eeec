//! After a point-in-time recovery cuts the log and deletes its later segments, the segment
//! numbers cut away are used again by new segments: a hint file written for the old contents
//! of a number must never index the new contents.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::small_opts;
use kv_node::{Node, NodeOptions, Version};
use kv_wal::RecoveryMode;

fn opts() -> NodeOptions {
    let o = small_opts();
    let wal = o.get_wal().clone().recovery(RecoveryMode::PointInTime);
    o.wal(wal)
}

fn segment(dir: &Path, seq: u32) -> std::path::PathBuf {
    dir.join("wal").join(format!("{seq:010}.wal"))
}

/// The records of a segment file: `(offset, payload)`.
fn records(file: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = kv_wal::layout::HEADER_LEN;
    while at + 8 <= file.len() {
        let word = u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
        if word == 0 {
            break;
        }
        let len = (word & 0x7fff_ffff) as usize;
        out.push((at, file[at + 8..at + 8 + len].to_vec()));
        at += kv_wal::layout::frame_len(len);
    }
    out
}

/// The key of a put payload (node log format: 24-byte header, key, value).
fn key_of(payload: &[u8]) -> Vec<u8> {
    let n = u32::from_le_bytes(payload[4..8].try_into().unwrap()) as usize;
    payload[24..24 + n].to_vec()
}

#[test]
fn a_hint_of_a_segment_cut_away_does_not_index_the_segment_that_reuses_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), opts()).unwrap();
    let value = |k: u32| format!("{k:04}").repeat(50).into_bytes();
    let mut k = 0u32;
    while !segment(dir.path(), 3).exists() {
        node.apply(
            format!("a-{k:04}").as_bytes(),
            Some(&value(k)),
            Version::new(u64::from(k) + 1),
        )
        .unwrap();
        k += 1;
    }
    assert_eq!(node.write_hints().unwrap(), 2);
    node.close().unwrap();

    // A damaged record in segment 2: the recovery cuts there and deletes segment 3.
    let seg2 = std::fs::read(segment(dir.path(), 2)).unwrap();
    let old = records(&seg2);
    assert!(old.len() > 10);
    let (cut_at, cut_payload) = old[5].clone();
    let mut damaged = seg2.clone();
    damaged[cut_at + 8 + 100] ^= 1;
    std::fs::write(segment(dir.path(), 2), &damaged).unwrap();
    let node = Node::open(dir.path(), opts()).unwrap();
    let t = node
        .recovery_report()
        .wal
        .clone()
        .unwrap()
        .truncation
        .unwrap();
    assert_eq!(
        (t.segment, t.offset as usize, t.segments_removed),
        (2, cut_at, vec![3])
    );

    // New writes into segment 2: another key where the damaged record was, then the same
    // records as before the damage, so that the segment ends as it did, with the same last
    // record; then segment 2 is sealed.
    let lost_key = key_of(&cut_payload);
    let new_key = b"b-0000".to_vec();
    assert_eq!(lost_key.len(), new_key.len());
    node.apply(&new_key, Some(&value(9999)), Version::new(1_000_000))
        .unwrap();
    for (_, payload) in &old[6..] {
        let key = key_of(payload);
        let version = Version::new(u64::from_le_bytes(payload[8..16].try_into().unwrap()));
        node.apply(&key, Some(&payload[24 + key.len()..]), version)
            .unwrap();
    }
    let after = records(&std::fs::read(segment(dir.path(), 2)).unwrap());
    assert_eq!(after.last(), old.last(), "segment 2 ends as it did");
    node.apply(b"c-0000", Some(&[0; 4000]), Version::new(2_000_000))
        .unwrap();
    node.apply(b"c-0001", Some(&[0; 4000]), Version::new(2_000_001))
        .unwrap();
    assert!(segment(dir.path(), 3).exists());
    // A crash before the hint of the new segment 2 is written.
    drop(node);

    let node = Node::open(dir.path(), opts()).unwrap();
    let got = node.get(&new_key).unwrap().map(|(v, _)| v.to_vec());
    assert!(
        got == Some(value(9999)),
        "an acknowledged write is lost ({:?})",
        node.recovery_report()
    );
    assert_eq!(
        node.get(&lost_key).unwrap(),
        None,
        "a key cut away came back"
    );
}
