//! The routing steps of a join installed from outside (`docs/membership.md` §3.1), counted
//! per replica: `Pending` reads the old ring and writes both, `Mid` reads only the new ring
//! and still writes both, `Final` reads and writes the new ring only; a topology of a lower
//! epoch moves nothing back; membership changes are refused on an external topology.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::remote::{Behaviour, RemoteBackend};
use kv_cluster::{Cluster, ClusterOptions, Error, RingMember, Topology};
use kv_ring::{Ring, token};

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];
const RF: usize = 3;

struct Join {
    cluster: Cluster,
    backend: Arc<RemoteBackend>,
    old: Ring,
    new: Ring,
    _dir: tempfile::TempDir,
}

/// Three nodes at epoch 10, and the ring with `n4` joined, not installed yet.
fn join() -> Join {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(RemoteBackend::new());
    for n in NODES {
        backend.net.set(n, Behaviour::Now);
    }
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .initial_nodes(NODES[..3].iter().copied())
        .replication_factor(RF)
        .external_topology(true);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let old = cluster.ring();
    let new = old.add_node("n4").unwrap();
    cluster
        .install_topology(Topology::stable(10, RingMember::of_ring(&old)))
        .unwrap();
    Join {
        cluster,
        backend,
        old,
        new,
        _dir: dir,
    }
}

/// The ids of `ring`'s replicas of `key`.
fn replicas(ring: &Ring, key: &[u8]) -> BTreeSet<String> {
    ring.preference_list(token(key), RF)
        .unwrap()
        .iter()
        .map(|id| id.to_string())
        .collect()
}

impl Join {
    fn step(&self, epoch: u64, read: &Ring, extra: Option<&Ring>) {
        let t = Topology {
            epoch,
            read: RingMember::of_ring(read),
            extra_write: extra.map(RingMember::of_ring),
            mid: epoch == 12,
            slots: Default::default(),
        };
        assert!(self.cluster.install_topology(t).unwrap());
        assert_eq!(self.cluster.topology_epoch(), epoch);
    }

    /// The nodes whose storage holds `key`.
    fn holders(&self, key: &[u8]) -> BTreeSet<String> {
        NODES
            .iter()
            .filter(|n| {
                self.backend
                    .net
                    .storage(n)
                    .read(u64::MAX, key)
                    .unwrap()
                    .is_some()
            })
            .map(|n| n.to_string())
            .collect()
    }

    /// The nodes asked to read anything since the last reset.
    fn read_from(&self) -> BTreeSet<String> {
        NODES
            .iter()
            .filter(|n| self.backend.net.reads(n) > 0)
            .map(|n| n.to_string())
            .collect()
    }

    /// The nodes sent a write since the last reset.
    fn written_to(&self) -> BTreeSet<String> {
        NODES
            .iter()
            .filter(|n| self.backend.net.writes(n) > 0)
            .map(|n| n.to_string())
            .collect()
    }

    /// Writes `key`, checking it went to exactly `expected` replicas; then reads it,
    /// checking only `readers` were asked.
    fn write_and_read(&self, key: &[u8], writers: &BTreeSet<String>, readers: &BTreeSet<String>) {
        self.backend.net.reset_counts();
        self.cluster.put(key, key).unwrap();
        assert_eq!(&self.written_to(), writers, "writes of {key:?}");
        self.backend.net.reset_counts();
        assert_eq!(self.cluster.get(key).unwrap().as_deref(), Some(key));
        let asked = self.read_from();
        assert!(
            asked.is_subset(readers),
            "{key:?}: read {asked:?}, not only {readers:?}"
        );
        assert_eq!(asked.len(), 2, "a quorum read asks R = 2");
    }
}

#[test]
fn pending_mid_and_final_route_reads_and_writes_as_planned() {
    let j = join();
    let keys: Vec<Vec<u8>> = (0..200u32)
        .map(|i| format!("key{i}").into_bytes())
        .collect();
    // The test bites only if some keys change replica sets, losing an old replica.
    let moving = keys
        .iter()
        .filter(|k| !replicas(&j.old, k).is_subset(&replicas(&j.new, k)))
        .count();
    assert!(moving > 20, "{moving} keys move");

    // Pending (epoch 11): writes reach old ∪ new, reads only old.
    j.step(11, &j.old, Some(&j.new));
    for k in &keys {
        let both = &replicas(&j.old, k) | &replicas(&j.new, k);
        j.write_and_read(k, &both, &replicas(&j.old, k));
        assert_eq!(j.holders(k), both);
    }

    let joining = |c: &Cluster| -> Vec<String> {
        c.nodes()
            .into_iter()
            .filter(|n| n.state == kv_cluster::NodeState::Joining)
            .map(|n| n.id.to_string())
            .collect()
    };
    assert_eq!(joining(&j.cluster), ["n4"]);

    // Mid (epoch 12): reads only the new ring, writes still both.
    j.step(12, &j.new, Some(&j.old));
    assert_eq!(
        joining(&j.cluster),
        ["n4"],
        "still joining, though read from"
    );
    let mut old_only_skipped = 0;
    for k in &keys {
        let (old, new) = (replicas(&j.old, k), replicas(&j.new, k));
        let both = &old | &new;
        j.write_and_read(k, &both, &new);
        assert_eq!(j.holders(k), both);
        if !old.is_subset(&new) {
            old_only_skipped += 1;
        }
    }
    assert_eq!(old_only_skipped, moving);

    // A topology of a lower epoch changes nothing.
    let e = j
        .cluster
        .install_topology(Topology::stable(11, RingMember::of_ring(&j.old)))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::EpochRegressed {
                installed: 12,
                offered: 11
            }
        ),
        "{e:?}"
    );
    assert_eq!(j.cluster.topology_epoch(), 12);
    assert_eq!(j.cluster.ring().len(), 4, "still reading the new ring");
    for k in keys.iter().take(20) {
        let (old, new) = (replicas(&j.old, k), replicas(&j.new, k));
        j.write_and_read(k, &(&old | &new), &new);
    }
    // The same epoch again: nothing installed.
    let mid = j.cluster.topology().unwrap();
    assert!(!j.cluster.install_topology(mid).unwrap());

    // Final (epoch 13): the new ring only.
    j.step(13, &j.new, None);
    for k in &keys {
        let new = replicas(&j.new, k);
        j.write_and_read(k, &new, &new);
    }
}

/// A write in `Mid` needs `W` of each set: with two of a key's old replicas failing (one of
/// them in the new set too), the old set cannot reach `W` and the write fails, though the
/// new set alone could have acknowledged it.
#[test]
fn a_mid_write_needs_w_of_the_old_set_too() {
    let j = join();
    j.step(11, &j.old, Some(&j.new));
    j.step(12, &j.new, Some(&j.old));
    let key = (0..1000u32)
        .map(|i| format!("key{i}").into_bytes())
        .find(|k| !replicas(&j.old, k).is_subset(&replicas(&j.new, k)))
        .unwrap();
    let (old, new) = (replicas(&j.old, &key), replicas(&j.new, &key));
    let old_only = old.difference(&new).next().unwrap().clone();
    let shared = old.intersection(&new).next().unwrap().clone();
    j.backend.net.set(&old_only, Behaviour::Fail);
    j.backend.net.set(&shared, Behaviour::Fail);
    // New set: 2 of 3 up (W met); old set: 1 of 3 up.
    let e = j.cluster.put(&key, b"v").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unavailable {
                needed: 2,
                acknowledged: 1,
                ..
            }
        ),
        "{e:?}"
    );
    // One old-only replica failing: both sets still reach W.
    j.backend.net.set(&shared, Behaviour::Now);
    j.cluster.put(&key, b"v").unwrap();
}

#[test]
fn membership_changes_are_refused_on_an_external_topology() {
    let j = join();
    for e in [
        j.cluster.add_node("n5").unwrap_err(),
        j.cluster.remove_node("n1").unwrap_err(),
    ] {
        assert!(matches!(e, Error::ExternalMetadata { .. }), "{e:?}");
    }
    assert!(j.cluster.has_external_topology());
    // Without the option, the first install turns it on.
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions::new().backend(Arc::new(kv_cluster::MemoryBackend::default()));
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let members = RingMember::of_ring(&cluster.ring());
    cluster
        .install_topology(Topology::stable(5, members))
        .unwrap();
    let e = cluster.add_node("node4").unwrap_err();
    assert!(
        matches!(e, Error::ExternalMetadata { op: "add_node" }),
        "{e:?}"
    );
}

#[test]
fn a_topology_that_cannot_route_is_refused_and_changes_nothing() {
    let j = join();
    let mut two = RingMember::of_ring(&j.old);
    two.pop();
    let e = j
        .cluster
        .install_topology(Topology::stable(20, two))
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidTopology { epoch: 20, .. }),
        "{e:?}"
    );
    let mut t = Topology::stable(20, RingMember::of_ring(&j.old));
    t.slots.insert("n1".parse().unwrap(), 3);
    t.slots.insert("n2".parse().unwrap(), 3);
    let e = j.cluster.install_topology(t).unwrap_err();
    assert!(matches!(e, Error::InvalidTopology { .. }), "{e:?}");
    // Two members on one token.
    let mut clash = RingMember::of_ring(&j.old);
    clash[1].tokens[0] = clash[0].tokens[0];
    let e = j
        .cluster
        .install_topology(Topology::stable(20, clash))
        .unwrap_err();
    assert!(matches!(e, Error::Ring(_)), "{e:?}");
    assert_eq!(j.cluster.topology_epoch(), 10);
}
