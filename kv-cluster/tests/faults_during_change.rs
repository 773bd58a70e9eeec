//! A node error in the middle of a membership change leaves the change pending and the
//! cluster serving; resuming (or reopening) completes it. Covers both phases: a failure while
//! streaming (before the commit) and while cleaning up (after it).
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use kv_cluster::{
    Backend, ChangeKind, Cluster, Error, MemoryBackend, RangeCount, Record, RecordStream, Replica,
    Result, Version, Write,
};
use kv_ring::{NodeId, TokenRange};

/// Switches that make every replica's export or drop fail.
#[derive(Debug, Default)]
struct Faults {
    export: AtomicBool,
    drop: AtomicBool,
}

fn injected() -> Error {
    Error::Unavailable {
        needed: 1,
        acknowledged: 0,
    }
}

#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn Replica>,
    faults: Arc<Faults>,
}

impl Replica for Faulty {
    fn id(&self) -> &NodeId {
        self.inner.id()
    }
    fn apply(&self, epoch: u64, write: Write<'_>) -> Result<bool> {
        self.inner.apply(epoch, write)
    }
    fn apply_batch(&self, epoch: u64, writes: &[Write<'_>]) -> Result<usize> {
        self.inner.apply_batch(epoch, writes)
    }
    fn read(&self, epoch: u64, key: &[u8]) -> Result<Option<(Option<Bytes>, Version)>> {
        self.inner.read(epoch, key)
    }
    fn export<'a>(&'a self, epoch: u64, r: &[TokenRange], n: usize) -> Result<RecordStream<'a>> {
        if self.faults.export.load(Ordering::Relaxed) {
            return Err(injected());
        }
        self.inner.export(epoch, r, n)
    }
    fn import(&self, epoch: u64, batch: &[Record]) -> Result<usize> {
        self.inner.import(epoch, batch)
    }
    fn drop_ranges(&self, epoch: u64, ranges: &[TokenRange]) -> Result<usize> {
        if self.faults.drop.load(Ordering::Relaxed) {
            return Err(injected());
        }
        self.inner.drop_ranges(epoch, ranges)
    }
    fn count_in_ranges(&self, ranges: &[TokenRange]) -> Result<RangeCount> {
        self.inner.count_in_ranges(ranges)
    }
    fn held(&self) -> Result<RangeCount> {
        self.inner.held()
    }
    fn fence(&self, epoch: u64) {
        self.inner.fence(epoch)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
}

#[derive(Debug, Default)]
struct FaultyBackend {
    memory: MemoryBackend,
    faults: Arc<Faults>,
}

impl Backend for FaultyBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> Result<Arc<dyn Replica>> {
        Ok(Arc::new(Faulty {
            inner: self.memory.open(id, dir)?,
            faults: self.faults.clone(),
        }))
    }
}

fn setup() -> (
    tempfile::TempDir,
    Arc<FaultyBackend>,
    Cluster,
    common::Model,
) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let opts = common::memory_opts().backend(backend.clone());
    let cluster = Cluster::open(dir.path(), opts).unwrap();
    let model = common::Model::default();
    for i in 0..2_000 {
        let k = common::key(i);
        model.acked(&k, Some(b"v"), cluster.put(&k, b"v").unwrap());
    }
    (dir, backend, cluster, model)
}

fn write_some(cluster: &Cluster, model: &common::Model, value: &[u8]) {
    for i in (0..2_000).step_by(13) {
        let k = common::key(i);
        model.acked(&k, Some(value), cluster.put(&k, value).unwrap());
    }
}

#[test]
fn a_failed_export_leaves_the_change_pending_and_resume_completes_it() {
    let (_dir, backend, cluster, model) = setup();
    backend.faults.export.store(true, Ordering::Relaxed);
    assert!(matches!(
        cluster.add_node("node4"),
        Err(Error::Unavailable { .. })
    ));
    assert_eq!(cluster.pending_change().unwrap().0, ChangeKind::Add);
    // Still serving, with writes going to node4 too.
    write_some(&cluster, &model, b"while pending");
    assert!(matches!(
        cluster.remove_node("node1"),
        Err(Error::ChangeInProgress { .. })
    ));

    backend.faults.export.store(false, Ordering::Relaxed);
    cluster
        .resume_change(|_| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    common::check(&cluster, &model);
}

#[test]
fn a_failed_cleanup_is_redone_on_reopen() {
    let (dir, backend, cluster, model) = setup();
    backend.faults.drop.store(true, Ordering::Relaxed);
    assert!(matches!(
        cluster.add_node("node4"),
        Err(Error::Unavailable { .. })
    ));
    // Committed: node4 serves reads already; the old replicas still hold their copies.
    assert_eq!(cluster.ring().len(), 4);
    assert_eq!(cluster.pending_change().unwrap().0, ChangeKind::Add);
    write_some(&cluster, &model, b"after commit");
    drop(cluster);

    backend.faults.drop.store(false, Ordering::Relaxed);
    let cluster = Cluster::open(dir.path(), common::memory_opts().backend(backend)).unwrap();
    assert_eq!(cluster.nodes().len(), 4);
    common::check(&cluster, &model);
}
