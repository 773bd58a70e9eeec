//! Fault injection: replicas (in memory, or any backend's) whose operations fail on demand.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kv_cluster::{
    Backend, Cell, Error, MemoryBackend, RangeCount, Record, RecordStream, Replica, Result,
    Swapped, Version, Write,
};
use kv_ring::{NodeId, TokenRange};
use parking_lot::Mutex;

/// Switches that make every replica's export or drop fail.
#[derive(Default)]
pub struct Faults {
    pub export: AtomicBool,
    pub drop: AtomicBool,
    /// Nodes whose writes and reads fail.
    pub down: Mutex<Vec<String>>,
    /// Nodes whose exports fail.
    pub export_down: Mutex<Vec<String>>,
    /// Nodes whose syncs fail.
    pub sync_down: Mutex<Vec<String>>,
    /// Nodes the backend cannot open (as if another process held their directory); their
    /// hint stores on other nodes still open.
    pub open_down: Mutex<Vec<String>>,
    /// Nodes whose exports fail once they have yielded this many more batches (counted over
    /// every export of the node): a source that fails midway.
    pub export_budget: Mutex<BTreeMap<String, usize>>,
    /// Every replica's `digests` panics (a replica's bug) while this is set.
    pub panic_digests: AtomicBool,
    /// Every `reserve` hint: (node, ranges, keys, imports into that node before it).
    #[allow(clippy::type_complexity)]
    pub reserved: Mutex<Vec<(String, Vec<TokenRange>, u64, usize)>>,
    /// Imports so far, per node.
    pub imports: Mutex<std::collections::BTreeMap<String, usize>>,
    /// Taken and called with the write before the next `apply_swap` reaches a node (a
    /// racing write lands first).
    #[allow(clippy::type_complexity)]
    pub before_swap: Mutex<Option<Box<dyn FnOnce(Write<'_>) + Send>>>,
    /// Called after each successful `drop_ranges` (a crash test parks there).
    #[allow(clippy::type_complexity)]
    pub after_drop: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    fn is_down(&self, id: &NodeId) -> bool {
        self.down.lock().iter().any(|d| d == id.as_str())
    }
}

pub fn injected() -> Error {
    Error::StaleEpoch {
        node: NodeId::new("injected").unwrap(),
        epoch: 0,
        current: 0,
    }
}

/// A replica that fails on demand.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn Replica>,
    faults: Arc<Faults>,
    /// A hint store (`<holder>/hints/<target>/`) rather than a node: `open_down` and
    /// `export_budget` leave it alone.
    hint_store: bool,
}

impl Replica for Faulty {
    fn id(&self) -> &NodeId {
        self.inner.id()
    }
    fn apply(&self, epoch: u64, write: Write<'_>) -> Result<bool> {
        if self.faults.is_down(self.id()) {
            return Err(injected());
        }
        self.inner.apply(epoch, write)
    }
    fn apply_swap(&self, epoch: u64, write: Write<'_>, read_value: bool) -> Result<Swapped> {
        if self.faults.is_down(self.id()) {
            return Err(injected());
        }
        let hook = self.faults.before_swap.lock().take();
        if let Some(hook) = hook {
            hook(write);
        }
        self.inner.apply_swap(epoch, write, read_value)
    }
    fn apply_batch(&self, epoch: u64, writes: &[Write<'_>]) -> Result<usize> {
        if self.faults.is_down(self.id()) {
            return Err(injected());
        }
        self.inner.apply_batch(epoch, writes)
    }
    fn read(&self, epoch: u64, key: &[u8]) -> Result<Option<Cell>> {
        if self.faults.is_down(self.id()) {
            return Err(injected());
        }
        self.inner.read(epoch, key)
    }
    fn read_version(&self, epoch: u64, key: &[u8]) -> Result<Option<Version>> {
        if self.faults.is_down(self.id()) {
            return Err(injected());
        }
        self.inner.read_version(epoch, key)
    }
    fn export<'a>(&'a self, epoch: u64, r: &[TokenRange], n: usize) -> Result<RecordStream<'a>> {
        let down = self
            .faults
            .export_down
            .lock()
            .iter()
            .any(|d| d == self.id().as_str());
        if down || self.faults.export.load(Ordering::Relaxed) {
            return Err(injected());
        }
        let batches = self.inner.export(epoch, r, n)?;
        if self.hint_store {
            return Ok(batches);
        }
        let (faults, id) = (Arc::clone(&self.faults), self.id().to_string());
        Ok(Box::new(batches.map(move |batch| {
            let mut budget = faults.export_budget.lock();
            match budget.get_mut(&id) {
                Some(0) => Err(injected()),
                Some(left) => {
                    *left -= 1;
                    batch
                }
                None => batch,
            }
        })))
    }
    fn import(&self, epoch: u64, batch: &[Record]) -> Result<usize> {
        *self
            .faults
            .imports
            .lock()
            .entry(self.id().to_string())
            .or_default() += 1;
        self.inner.import(epoch, batch)
    }
    fn drop_ranges(&self, epoch: u64, ranges: &[TokenRange]) -> Result<usize> {
        if self.faults.drop.load(Ordering::Relaxed) {
            return Err(injected());
        }
        let dropped = self.inner.drop_ranges(epoch, ranges)?;
        let hook = self.faults.after_drop.lock().clone();
        if let Some(hook) = hook {
            hook();
        }
        Ok(dropped)
    }
    fn count_in_ranges(&self, ranges: &[TokenRange]) -> Result<RangeCount> {
        self.inner.count_in_ranges(ranges)
    }
    fn held(&self) -> Result<RangeCount> {
        self.inner.held()
    }
    fn reserve(&self, ranges: &[TokenRange], keys: u64) {
        let id = self.id().to_string();
        let before = self.faults.imports.lock().get(&id).copied().unwrap_or(0);
        self.faults
            .reserved
            .lock()
            .push((id, ranges.to_vec(), keys, before));
        self.inner.reserve(ranges, keys)
    }
    fn fence(&self, epoch: u64) {
        self.inner.fence(epoch)
    }
    fn sync(&self) -> Result<()> {
        let down = self.faults.sync_down.lock();
        if down.iter().any(|d| d == self.id().as_str()) {
            return Err(injected());
        }
        drop(down);
        self.inner.sync()
    }
    fn is_down(&self) -> bool {
        self.inner.is_down()
    }
    fn digests(
        &self,
        epoch: u64,
        range: TokenRange,
        leaves: u32,
    ) -> Result<Vec<kv_cluster::Digest>> {
        assert!(
            !self.faults.panic_digests.load(Ordering::Relaxed),
            "injected panic in digests"
        );
        self.inner.digests(epoch, range, leaves)
    }
}

/// Nodes with switchable faults (in memory by default).
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    pub faults: Arc<Faults>,
}

impl Default for FaultyBackend {
    fn default() -> Self {
        FaultyBackend::over(Arc::new(MemoryBackend::default()))
    }
}

impl FaultyBackend {
    /// Faults over the nodes `inner` opens.
    pub fn over(inner: Arc<dyn Backend>) -> Self {
        FaultyBackend {
            inner,
            faults: Arc::default(),
        }
    }
}

impl Backend for FaultyBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> Result<Arc<dyn Replica>> {
        let hint_store = dir.components().any(|c| c.as_os_str() == "hints");
        let open_down = self.faults.open_down.lock();
        if !hint_store && open_down.iter().any(|d| d == id.as_str()) {
            return Err(Error::Node {
                node: id.clone(),
                source: kv_node::Error::Locked {
                    path: dir.to_path_buf(),
                },
            });
        }
        drop(open_down);
        Ok(Arc::new(Faulty {
            inner: self.inner.open(id, dir)?,
            faults: self.faults.clone(),
            hint_store,
        }))
    }

    fn destroy(&self, id: &NodeId, dir: &Path) -> Result<()> {
        self.inner.destroy(id, dir)
    }
}
