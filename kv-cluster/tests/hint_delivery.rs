//! A hint is as durable as the write it carries and reaches its target by some path: hint
//! stores are synced by `sync`/`close`, hints stranded by a failed handoff are delivered by
//! `repair`, and a sloppy write acknowledged by stand-ins only reaches its replicas through
//! the handoff itself.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::*;
use kv_ring::{NodeId, TokenRange};
use parking_lot::Mutex;

/// A replica that logs the directory of every store it syncs.
#[derive(Debug)]
struct Probe {
    inner: Arc<dyn Replica>,
    dir: PathBuf,
    synced: Arc<Mutex<Vec<PathBuf>>>,
}

impl Replica for Probe {
    fn id(&self) -> &NodeId {
        self.inner.id()
    }
    fn apply(&self, e: u64, w: Write<'_>) -> Result<bool> {
        self.inner.apply(e, w)
    }
    fn apply_swap(&self, e: u64, w: Write<'_>, v: bool) -> Result<Swapped> {
        self.inner.apply_swap(e, w, v)
    }
    fn apply_batch(&self, e: u64, w: &[Write<'_>]) -> Result<usize> {
        self.inner.apply_batch(e, w)
    }
    fn read(&self, e: u64, k: &[u8]) -> Result<Option<Cell>> {
        self.inner.read(e, k)
    }
    fn export<'a>(&'a self, e: u64, r: &[TokenRange], n: usize) -> Result<RecordStream<'a>> {
        self.inner.export(e, r, n)
    }
    fn import(&self, e: u64, b: &[Record]) -> Result<usize> {
        self.inner.import(e, b)
    }
    fn drop_ranges(&self, e: u64, r: &[TokenRange]) -> Result<usize> {
        self.inner.drop_ranges(e, r)
    }
    fn count_in_ranges(&self, r: &[TokenRange]) -> Result<RangeCount> {
        self.inner.count_in_ranges(r)
    }
    fn held(&self) -> Result<RangeCount> {
        self.inner.held()
    }
    fn fence(&self, e: u64) {
        self.inner.fence(e)
    }
    fn sync(&self) -> Result<()> {
        self.synced.lock().push(self.dir.clone());
        self.inner.sync()
    }
    fn is_down(&self) -> bool {
        self.inner.is_down()
    }
    fn digests(&self, e: u64, r: TokenRange, l: u32) -> Result<Vec<Digest>> {
        self.inner.digests(e, r, l)
    }
}

/// In-memory nodes behind probes that share one log of synced directories.
#[derive(Debug, Default)]
struct ProbeBackend {
    inner: MemoryBackend,
    synced: Arc<Mutex<Vec<PathBuf>>>,
}

impl Backend for ProbeBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> Result<Arc<dyn Replica>> {
        Ok(Arc::new(Probe {
            inner: self.inner.open(id, dir)?,
            dir: dir.to_path_buf(),
            synced: Arc::clone(&self.synced),
        }))
    }
    fn destroy(&self, id: &NodeId, dir: &Path) -> Result<()> {
        self.inner.destroy(id, dir)
    }
}

/// A sloppy write with two of three replicas down lives on one replica and one hint:
/// `close` promises every acknowledged write durable, so it must sync the hint store too.
#[test]
fn close_syncs_the_hint_store_of_a_sloppy_write() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(ProbeBackend::default());
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .initial_nodes(["n1", "n2", "n3", "n4"]);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let r = cluster.placement_of(b"k").unwrap().expected;
    cluster.fail_node(r[0].as_str()).unwrap();
    cluster.fail_node(r[1].as_str()).unwrap();
    cluster.put_sloppy(b"k", b"v", Consistency::Quorum).unwrap();
    backend.synced.lock().clear();
    cluster.close().unwrap();
    let synced = backend.synced.lock().clone();
    assert!(
        synced
            .iter()
            .any(|p| p.components().any(|c| c.as_os_str() == "hints")),
        "no hint store synced: {synced:?}"
    );
}

/// A handoff that fails after the node is back leaves hints on their holder with the target
/// up (`recover_node` cannot be retried: the node is up). `repair` hands them off.
#[test]
fn hints_stranded_by_a_failed_handoff_are_handed_off_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = ClusterOptions::new()
        .backend(backend.clone())
        .vnodes(16)
        .initial_nodes(["n1", "n2", "n3", "n4", "n5"]);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    cluster.fail_node("n1").unwrap();
    for i in 0..200u64 {
        cluster.put(&common::key(i), b"x").unwrap();
    }
    backend.faults.export_down.lock().push("n1".into());
    assert!(cluster.recover_node("n1").is_err());
    backend.faults.export_down.lock().clear();
    let before = cluster.stats().unwrap().hints;
    assert!(before > 0);
    let summary = cluster.repair().unwrap();
    assert!(summary.hints_applied > 0, "{summary:?}");
    assert_eq!(cluster.stats().unwrap().hints, 0, "hints stranded");
}

/// Every replica of the key down: a sloppy quorum write is acknowledged by stand-ins only
/// (hints are its only copies). Recovering the replicas hands the hints off: the value is
/// back through the handoff itself, not through repair.
#[test]
fn a_write_acknowledged_by_stand_ins_only_reaches_its_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (1..=6).map(|i| format!("n{i}")).collect();
    let opts = common::memory_opts().vnodes(16).initial_nodes(names);
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    cluster.put(b"k", b"old").unwrap();
    let r = cluster.placement_of(b"k").unwrap().expected;
    for id in &r {
        cluster.fail_node(id.as_str()).unwrap();
    }
    cluster
        .put_sloppy(b"k", b"new", Consistency::Quorum)
        .unwrap();
    let mut handed_off = 0;
    let mut repaired = 0;
    for id in &r {
        let s = cluster.recover_node(id.as_str()).unwrap();
        handed_off += s.hints_applied;
        repaired += s.repair.keys_repaired;
    }
    assert!(
        handed_off >= 2,
        "the hints themselves carried the write: {handed_off}"
    );
    assert_eq!(repaired, 0, "nothing left for repair");
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(cluster.stats().unwrap().hints, 0);
}
