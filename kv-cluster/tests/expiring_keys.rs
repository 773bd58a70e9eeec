//! Expiring keys through the cluster (issue 24; `docs/design.md`, *Expiring keys*): the expiry
//! travels with the write through reads, read repair, hints and repair; the coordinator
//! judges it by its own clock; nothing expired resurrects. Every clock is simulated: nothing
//! sleeps.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kv_cluster::*;
use kv_ring::NodeId;

/// A clock the test moves by hand, optionally offset (a skewed node).
struct Manual {
    base: Arc<AtomicU64>,
    offset: i64,
}

impl Clock for Manual {
    fn now_millis(&self) -> u64 {
        (self.base.load(Ordering::SeqCst) as i64 + self.offset) as u64
    }
}

const T0: u64 = 1_800_000_000_000;

fn clock(base: &Arc<AtomicU64>, offset: i64) -> Arc<dyn Clock> {
    Arc::new(Manual {
        base: Arc::clone(base),
        offset,
    })
}

/// The raw record each member holds for `key` (unjudged).
fn raw(backend: &dyn Backend, dir: &Path, id: &str, key: &[u8]) -> Option<Cell> {
    let id = NodeId::new(id).unwrap();
    let node = backend.open(&id, &dir.join(id.as_str())).unwrap();
    node.read(u64::MAX, key).unwrap()
}

#[test]
fn an_expired_key_reads_as_absent_and_its_ttl_counts_down() {
    let now = Arc::new(AtomicU64::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new()
        .clock(clock(&now, 0))
        .backend(Arc::new(MemoryBackend::with_clock(clock(&now, 0))));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let at = cluster.expires_at(Expiry::AfterMillis(10_000)).unwrap();
    assert_eq!(at, Some(T0 + 10_000));
    cluster.put_expiring(b"session", b"active", at).unwrap();
    let e = cluster.get_entry(b"session").unwrap().unwrap();
    assert_eq!(e.ttl_millis(cluster.now_millis()), Some(10_000));
    now.store(T0 + 9_999, Ordering::SeqCst);
    assert_eq!(
        cluster.get(b"session").unwrap().as_deref(),
        Some(&b"active"[..])
    );
    assert_eq!(
        cluster.get_many(&[b"session"]).unwrap()[0].as_deref(),
        Some(&b"active"[..])
    );
    now.store(T0 + 10_000, Ordering::SeqCst);
    assert_eq!(cluster.get(b"session").unwrap(), None);
    assert_eq!(cluster.get_entry(b"session").unwrap(), None);
    assert_eq!(cluster.get_many(&[b"session"]).unwrap(), vec![None]);
    assert!(
        !cluster
            .expire(b"session", Expiry::AfterMillis(5), ExpireIf::Always)
            .unwrap()
    );
    // Overflow is a typed error, not a wrap-around.
    assert!(matches!(
        cluster.expires_at(Expiry::AfterMillis(i64::MAX)),
        Err(Error::ExpiryOutOfRange { .. })
    ));
    assert!(matches!(
        cluster.put_expiring(b"k", b"v", Some(u64::MAX)),
        Err(Error::ExpiryOutOfRange { .. })
    ));
}

#[test]
fn expire_persist_keepttl_and_getex_change_only_the_expiry() {
    let now = Arc::new(AtomicU64::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new()
        .clock(clock(&now, 0))
        .backend(Arc::new(MemoryBackend::with_clock(clock(&now, 0))));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    cluster.put(b"k", b"v").unwrap();
    assert!(
        !cluster
            .expire(b"k", Expiry::AfterMillis(5_000), ExpireIf::HasExpiry)
            .unwrap()
    );
    assert!(
        !cluster
            .expire(b"k", Expiry::AfterMillis(5_000), ExpireIf::Later)
            .unwrap()
    );
    assert!(
        cluster
            .expire(b"k", Expiry::AfterMillis(5_000), ExpireIf::Earlier)
            .unwrap()
    );
    assert!(
        !cluster
            .expire(b"k", Expiry::AfterMillis(9_000), ExpireIf::Earlier)
            .unwrap()
    );
    assert!(
        cluster
            .expire(b"k", Expiry::AfterMillis(9_000), ExpireIf::Later)
            .unwrap()
    );
    assert_eq!(
        cluster.get_entry(b"k").unwrap().unwrap().expires,
        Some(T0 + 9_000)
    );
    // SET ... KEEPTTL GET keeps it and returns the old value.
    assert_eq!(
        cluster.set_keep_ttl(b"k", b"w", true).unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let e = cluster.get_entry(b"k").unwrap().unwrap();
    assert_eq!((e.value.as_ref(), e.expires), (&b"w"[..], Some(T0 + 9_000)));
    // A plain SET drops it; GETEX sets it again; PERSIST removes it.
    assert_eq!(
        cluster
            .swap_expiring(b"k", b"x", Expiry::Never)
            .unwrap()
            .as_deref(),
        Some(&b"w"[..])
    );
    assert_eq!(cluster.get_entry(b"k").unwrap().unwrap().expires, None);
    let got = cluster
        .get_and_expire(b"k", Some(Expiry::AtMillis((T0 + 100) as i64)))
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"x"[..]));
    assert_eq!(
        cluster.get_entry(b"k").unwrap().unwrap().expires,
        Some(T0 + 100)
    );
    assert!(cluster.persist_key(b"k").unwrap());
    assert!(!cluster.persist_key(b"k").unwrap());
    now.store(T0 + 1_000, Ordering::SeqCst);
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"x"[..]));
    // An expiry in the past deletes the key.
    assert!(
        cluster
            .expire(b"k", Expiry::AtMillis(1), ExpireIf::Always)
            .unwrap()
    );
    assert_eq!(cluster.get(b"k").unwrap(), None);
}

/// Two replicas take an expiring write the third missed (it still holds an older value).
/// Once expired, every read answers absent, read repair carries the expiring write (same
/// version, same expiry) to the stale replica, and anti-entropy agrees: the older value
/// never comes back.
#[test]
fn a_replica_that_missed_the_expiring_write_is_repaired_and_nothing_resurrects() {
    let now = Arc::new(AtomicU64::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(MemoryBackend::with_clock(clock(&now, 0)));
    let opts = ClusterOptions::new()
        .clock(clock(&now, 0))
        .backend(Arc::clone(&backend) as Arc<dyn Backend>);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let key = b"token:1";
    cluster.put(key, b"old").unwrap();
    let replicas = cluster.placement_of(key).unwrap().expected;
    let v = Version::from_parts(T0 + 1, 0);
    let w = Write {
        key,
        value: Some(b"new"),
        version: v,
        expires: Some(T0 + 1_000),
    };
    for id in &replicas[..2] {
        let node = backend.open(id, &dir.path().join(id.as_str())).unwrap();
        assert!(node.apply(u64::MAX, w).unwrap());
    }
    let stale = replicas[2].as_str();
    assert_eq!(
        raw(&*backend, dir.path(), stale, key)
            .unwrap()
            .value
            .as_deref(),
        Some(&b"old"[..])
    );
    now.store(T0 + 1_000, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(cluster.get(key).unwrap(), None);
        assert_eq!(cluster.get_with(key, Consistency::All).unwrap(), None);
    }
    let repaired = raw(&*backend, dir.path(), stale, key).unwrap();
    assert_eq!((repaired.version, repaired.expires), (v, Some(T0 + 1_000)));
    cluster.repair().unwrap();
    for id in &replicas {
        let c = raw(&*backend, dir.path(), id.as_str(), key).unwrap();
        assert_eq!(c.version, v, "{id}");
        assert!(!c.is_live_at(cluster.now_millis()), "{id}");
    }
    // Only the stale replica answering: still absent (it holds the expiring write now).
    cluster.fail_node(replicas[0].as_str()).unwrap();
    cluster.fail_node(replicas[1].as_str()).unwrap();
    assert_eq!(cluster.get_with(key, Consistency::One).unwrap(), None);
}

/// A node is down while an expiring write of its key is made (it gets a hint) and while the
/// key expires (and compaction turns it into a tombstone on the others); once back, the hint
/// is delivered with its expiry: no replica answers the older value.
#[test]
fn a_node_down_while_its_keys_expire_comes_back_with_hints_and_nothing_resurrects() {
    let now = Arc::new(AtomicU64::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new()
        .clock(clock(&now, 0))
        .node_options(NodeOptions::new().clock(clock(&now, 0)));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let keys: Vec<Vec<u8>> = (0..50u32)
        .map(|i| format!("session:{i}").into_bytes())
        .collect();
    for k in &keys {
        cluster.put(k, b"old").unwrap();
    }
    cluster.fail_node("node3").unwrap();
    for k in &keys {
        cluster.put_expiring(k, b"short", Some(T0 + 1_000)).unwrap();
    }
    now.store(T0 + 5_000, Ordering::SeqCst);
    cluster.compact().unwrap();
    cluster.recover_node("node3").unwrap();
    for k in &keys {
        assert_eq!(cluster.get(k).unwrap(), None);
        let p = cluster.placement_of(k).unwrap();
        assert_eq!(p.held.len(), 3);
        for (id, value, _) in &p.held {
            assert_eq!(value, &None, "{id} answers a value for {:?}", k);
        }
        let versions: Vec<Version> = p.held.iter().map(|(_, _, v)| *v).collect();
        assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");
    }
    // Only node3 answering: still nothing.
    cluster.fail_node("node1").unwrap();
    cluster.fail_node("node2").unwrap();
    for k in &keys {
        assert_eq!(cluster.get_with(k, Consistency::One).unwrap(), None);
    }
}

/// Replica clocks do not decide: the coordinator judges by its own clock, so replicas
/// skewed either way (within `MAX_SKEW`) give the same answers; and coordinators whose
/// clocks differ by less than the bound agree on every key outside that window around its
/// expiry.
#[test]
fn clock_skew_within_the_bound_gives_the_same_answers_through_every_coordinator() {
    let skew = (MAX_SKEW.as_millis() as i64) - 1;
    for replica_offset in [-skew, 0, skew] {
        let now = Arc::new(AtomicU64::new(T0));
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::with_clock(clock(&now, replica_offset)));
        let open = |offset: i64| {
            let opts = ClusterOptions::new()
                .clock(clock(&now, offset))
                .backend(Arc::clone(&backend) as Arc<dyn Backend>);
            Cluster::open(dir.path(), opts).unwrap()
        };
        let c = open(0);
        c.put_expiring(b"k", b"v", Some(T0 + 60_000)).unwrap();
        drop(c);
        // Coordinators at -skew, 0 and +skew, each reading at times outside the window.
        for coordinator_offset in [-skew, 0, skew] {
            let c = open(coordinator_offset);
            now.store(T0 + 60_000 - skew as u64 - 1, Ordering::SeqCst);
            assert_eq!(
                c.get(b"k").unwrap().as_deref(),
                Some(&b"v"[..]),
                "replica {replica_offset}, coordinator {coordinator_offset}"
            );
            now.store(T0 + 60_000 + skew as u64, Ordering::SeqCst);
            assert_eq!(c.get(b"k").unwrap(), None);
            // Its own clock alone decides at the boundary.
            now.store(
                (T0 as i64 + 60_000 - coordinator_offset - 1) as u64,
                Ordering::SeqCst,
            );
            assert!(c.get(b"k").unwrap().is_some());
            now.store(
                (T0 as i64 + 60_000 - coordinator_offset) as u64,
                Ordering::SeqCst,
            );
            assert_eq!(c.get(b"k").unwrap(), None);
            now.store(T0, Ordering::SeqCst);
            drop(c);
        }
    }
}

/// A batch of expiring writes (a pipelined run of `SET ... EX`): each pair keeps its own
/// expiry on every replica, expires at it, and an out-of-range one refuses the whole batch
/// before anything is written.
#[test]
fn a_batch_of_expiring_writes_keeps_each_expiry() {
    let now = Arc::new(AtomicU64::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::with_clock(clock(&now, 0)));
    let opts = ClusterOptions::new()
        .clock(clock(&now, 0))
        .backend(Arc::clone(&backend));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..20)
        .map(|i| (format!("k{i}").into_bytes(), b"v".to_vec()))
        .collect();
    // Even keys expire after 1 s, odd ones never (a shorter slice: the last ones never).
    let expires: Vec<Option<u64>> = (0..18)
        .map(|i| (i % 2 == 0).then_some(T0 + 1_000))
        .collect();
    cluster.put_many_expiring(&pairs, &expires).unwrap();
    for (i, (k, _)) in pairs.iter().enumerate() {
        let want = expires.get(i).copied().flatten();
        assert_eq!(cluster.get_entry(k).unwrap().unwrap().expires, want, "k{i}");
        for id in ["node1", "node2", "node3"] {
            let cell = raw(backend.as_ref(), dir.path(), id, k).unwrap();
            assert_eq!(cell.expires, want, "k{i} on {id}");
        }
    }
    now.store(T0 + 1_000, Ordering::SeqCst);
    let got = cluster
        .get_many(&pairs.iter().map(|(k, _)| k).collect::<Vec<_>>())
        .unwrap();
    for (i, v) in got.iter().enumerate() {
        let live = i % 2 == 1 || i >= 18;
        assert_eq!(v.is_some(), live, "k{i}");
    }
    let err = cluster
        .put_many_expiring(
            &[(b"x", b"v"), (b"y", b"v")],
            &[None, Some(MAX_EXPIRES + 1)],
        )
        .unwrap_err();
    assert!(matches!(err, Error::ExpiryOutOfRange { .. }), "{err}");
    assert_eq!(cluster.get(b"x").unwrap(), None, "nothing written");
}
