//! Last-writer-wins: whatever the order, and however often writes are replayed, each key ends
//! at its highest version, and reopening gives the same state.

#![allow(clippy::unwrap_used)]

mod common;

use common::{State, dump, small_opts};
use kv_node::{Node, Version, Write};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};

type Op = (Vec<u8>, Option<Vec<u8>>, Version);

/// Random writes to 40 keys: distinct versions per key, a quarter of them tombstones.
fn writes(rng: &mut StdRng) -> Vec<Op> {
    let mut ops = Vec::new();
    for k in 0..40u32 {
        let key = format!("key{k}").into_bytes();
        let mut versions: Vec<u64> = (1..=rng.random_range(1..6)).map(|v| v * 10).collect();
        versions.shuffle(rng);
        for v in versions {
            let value = (!rng.random_ratio(1, 4)).then(|| format!("{k}@{v}").into_bytes());
            ops.push((key.clone(), value, Version::new(v)));
        }
    }
    ops
}

fn expected(ops: &[Op]) -> State {
    let mut m = State::new();
    for (k, v, ver) in ops {
        match m.get(k) {
            Some((_, cur)) if cur >= ver => {}
            _ => {
                m.insert(k.clone(), (v.clone(), *ver));
            }
        }
    }
    m
}

#[test]
fn any_order_and_replays_converge_to_the_highest_version() {
    for seed in 0..8 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ops = writes(&mut rng);
        let want = expected(&ops);
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), small_opts()).unwrap();
        ops.shuffle(&mut rng);
        let mut changed = 0;
        for (k, v, ver) in &ops {
            changed += usize::from(node.apply(k, v.as_deref(), *ver).unwrap());
        }
        assert!(changed >= want.len());
        assert_eq!(dump(&node), want, "seed {seed}");
        // Replays, in another order, change nothing.
        ops.shuffle(&mut rng);
        for (k, v, ver) in &ops {
            assert!(
                !node.apply(k, v.as_deref(), *ver).unwrap(),
                "seed {seed}: replay changed {k:?}"
            );
        }
        assert_eq!(dump(&node), want);
        // A get agrees: values for live keys, nothing for tombstones.
        for (k, (v, ver)) in &want {
            let got = node.get(k).unwrap();
            assert_eq!(got, v.as_ref().map(|v| (v.clone().into(), *ver)));
            assert_eq!(
                node.get_versioned(k).unwrap(),
                Some((v.clone().map(Into::into), *ver))
            );
        }
        drop(node);
        let node = Node::open(dir.path(), small_opts()).unwrap();
        assert_eq!(dump(&node), want, "seed {seed}: after reopen");
        // Replaying the whole history after a restart still changes nothing.
        for (k, v, ver) in &ops {
            assert!(!node.apply(k, v.as_deref(), *ver).unwrap());
        }
    }
}

#[test]
fn batches_follow_the_same_rule() {
    let mut rng = StdRng::seed_from_u64(99);
    let mut ops = writes(&mut rng);
    let want = expected(&ops);
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    ops.shuffle(&mut rng);
    for chunk in ops.chunks(7) {
        let batch: Vec<Write<'_>> = chunk
            .iter()
            .map(|(k, v, ver)| Write {
                key: k,
                value: v.as_deref(),
                version: *ver,
                expires: None,
            })
            .collect();
        node.apply_batch(&batch).unwrap();
    }
    assert_eq!(dump(&node), want);
    // A batch holding two writes of one key keeps the higher, whatever their order.
    let k = b"dup";
    let hi = Write {
        key: k,
        value: Some(b"hi"),
        version: Version::new(9),
        expires: None,
    };
    let lo = Write {
        key: k,
        value: Some(b"lo"),
        version: Version::new(3),
        expires: None,
    };
    node.apply_batch(&[hi, lo]).unwrap();
    assert_eq!(node.get(k).unwrap().unwrap().0, &b"hi"[..]);
    node.apply_batch(&[lo, hi]).unwrap();
    assert_eq!(node.get(k).unwrap().unwrap().0, &b"hi"[..]);
    drop(node);
    let node = Node::open(dir.path(), small_opts()).unwrap();
    let mut want = want;
    want.insert(k.to_vec(), (Some(b"hi".to_vec()), Version::new(9)));
    assert_eq!(dump(&node), want);
}

#[test]
fn put_and_delete_assign_increasing_versions_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), small_opts()).unwrap();
    let v1 = node.put(b"k", b"1").unwrap();
    // A write from "the future" (another coordinator's clock).
    let future = Version::from_parts(v1.millis() + 3_600_000, 0);
    node.apply(b"other", Some(b"x"), future).unwrap();
    drop(node);
    let node = Node::open(dir.path(), small_opts()).unwrap();
    // The recovered clock has observed `future`, so a new put beats everything.
    let v2 = node.put(b"k", b"2").unwrap();
    assert!(v2 > future);
    let d = node.delete(b"k").unwrap();
    assert!(d > v2);
    assert_eq!(node.get(b"k").unwrap(), None);
}
