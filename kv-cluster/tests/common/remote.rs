//! A stand-in for a replica in another process: in-memory nodes whose `start_*` answers come
//! later from another thread, after a delay, or never (a black hole), or as a transport
//! failure ([`Error::Remote`]), switchable per node while a test runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kv_cluster::{
    Backend, Cell, Deferred, Digest, Error, ExportPage, MemoryBackend, RangeCount, Record,
    RecordStream, Replica, Result, Started, Swapped, Ticket, Version, Write,
};
use kv_ring::{NodeId, TokenRange};
use parking_lot::Mutex;

/// How a node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Inside `start_*`, as an in-process replica.
    Now,
    /// From another thread, after this delay (the operation runs after it).
    After(Duration),
    /// Never: requests are lost, their answers neither come nor are dropped.
    BlackHole,
    /// From another thread, at once, with [`Error::Remote`] (nothing applied).
    Fail,
    /// From another thread, after this delay, with [`Error::Remote`] (nothing applied): a
    /// node that dies or restarts while the request is in flight.
    FailAfter(Duration),
    /// The handle reports the node down ([`Replica::is_down`]) and refuses every call.
    Down,
}

/// The switches of every node a [`RemoteBackend`] opened, by node id (`After(0)` unless
/// set).
#[derive(Default)]
pub struct Network {
    behaviour: Mutex<HashMap<String, Behaviour>>,
    /// Answers held back by black holes (kept so that they are not dropped).
    lost: Mutex<Vec<Box<dyn Send>>>,
    /// `start_*` calls made, over all nodes.
    pub started: AtomicUsize,
    /// Nodes whose handle says it is across the network ([`Replica::is_remote`]).
    remote: Mutex<std::collections::HashSet<String>>,
    /// Full reads (`start_read`, keys of `start_read_many`) each node was asked, by node id.
    full_reads: Mutex<HashMap<String, usize>>,
    /// Version (digest) reads each node was asked, by node id (keys of batches counted).
    version_reads: Mutex<HashMap<String, usize>>,
    /// Writes each node was sent, by node id (keys of batches counted; refused ones too).
    writes: Mutex<HashMap<String, usize>>,
    /// The storage behind every node opened, by node id: a test fences it as a metadata
    /// barrier would.
    opened: Mutex<HashMap<String, Arc<dyn Replica>>>,
}

impl Network {
    /// Sets how `node` answers from now on.
    pub fn set(&self, node: &str, b: Behaviour) {
        self.behaviour.lock().insert(node.to_string(), b);
    }

    /// Makes `node`'s handle report it as remote ([`Replica::is_remote`]).
    pub fn set_remote(&self, node: &str) {
        self.remote.lock().insert(node.to_string());
    }

    /// Full reads `node` was asked (single keys and keys of batches).
    pub fn full_reads(&self, node: &str) -> usize {
        self.full_reads.lock().get(node).copied().unwrap_or(0)
    }

    /// Reads of any kind (full and version) `node` was asked.
    pub fn reads(&self, node: &str) -> usize {
        self.full_reads(node) + self.version_reads.lock().get(node).copied().unwrap_or(0)
    }

    /// Writes `node` was sent (refused ones too).
    pub fn writes(&self, node: &str) -> usize {
        self.writes.lock().get(node).copied().unwrap_or(0)
    }

    /// Forgets every read and write counted so far.
    pub fn reset_counts(&self) {
        self.full_reads.lock().clear();
        self.version_reads.lock().clear();
        self.writes.lock().clear();
    }

    /// Raises `node`'s fence to `epoch`, as a metadata barrier does (panics if the node was
    /// never opened).
    pub fn fence(&self, node: &str, epoch: u64) {
        self.opened.lock()[node].fence(epoch);
    }

    /// The node's storage, read directly (no coordinator, no fence check of its own).
    pub fn storage(&self, node: &str) -> Arc<dyn Replica> {
        Arc::clone(&self.opened.lock()[node])
    }

    fn count_full(&self, node: &NodeId, keys: usize) {
        *self.full_reads.lock().entry(node.to_string()).or_default() += keys;
    }

    fn count_versions(&self, node: &NodeId, keys: usize) {
        *self
            .version_reads
            .lock()
            .entry(node.to_string())
            .or_default() += keys;
    }

    fn count_writes(&self, node: &NodeId, keys: usize) {
        *self.writes.lock().entry(node.to_string()).or_default() += keys;
    }

    fn of(&self, node: &NodeId) -> Behaviour {
        self.behaviour
            .lock()
            .get(node.as_str())
            .copied()
            .unwrap_or(Behaviour::After(Duration::ZERO))
    }
}

/// Opens in-memory nodes wrapped as [`Remote`]s (hint stores stay plain: they live with the
/// coordinator).
#[derive(Debug)]
pub struct RemoteBackend {
    inner: MemoryBackend,
    pub net: Arc<Network>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").finish_non_exhaustive()
    }
}

impl RemoteBackend {
    pub fn new() -> RemoteBackend {
        RemoteBackend {
            inner: MemoryBackend::default(),
            net: Arc::new(Network::default()),
        }
    }
}

impl Backend for RemoteBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> Result<Arc<dyn Replica>> {
        let inner = self.inner.open(id, dir)?;
        if dir.components().any(|c| c.as_os_str() == "hints") {
            return Ok(inner);
        }
        self.net
            .opened
            .lock()
            .insert(id.to_string(), Arc::clone(&inner));
        Ok(Arc::new(Remote {
            id: id.clone(),
            inner,
            net: Arc::clone(&self.net),
        }))
    }

    fn destroy(&self, id: &NodeId, dir: &Path) -> Result<()> {
        self.inner.destroy(id, dir)
    }
}

/// One node as a remote coordinator sees it.
#[derive(Debug)]
pub struct Remote {
    id: NodeId,
    inner: Arc<dyn Replica>,
    net: Arc<Network>,
}

fn injected(node: &NodeId) -> Error {
    Error::Remote {
        node: node.clone(),
        source: "injected transport failure".into(),
    }
}

impl Remote {
    /// A blocking call: refused unless the node answers (`Now` or `After`).
    fn blocking<T>(&self, op: impl FnOnce(&dyn Replica) -> Result<T>) -> Result<T> {
        match self.net.of(&self.id) {
            Behaviour::Now | Behaviour::After(_) => op(self.inner.as_ref()),
            _ => Err(injected(&self.id)),
        }
    }

    /// A `start_*` call: answers as the node's behaviour says.
    fn start<T: Send + 'static>(
        &self,
        ticket: Ticket<'_, T>,
        op: impl FnOnce(&dyn Replica) -> Result<T> + Send + 'static,
    ) -> Started<T> {
        self.net.started.fetch_add(1, Ordering::SeqCst);
        match self.net.of(&self.id) {
            Behaviour::Now => Started::Done(op(self.inner.as_ref())),
            Behaviour::Down => Started::Done(Err(injected(&self.id))),
            Behaviour::BlackHole => {
                let lost: Deferred<T> = ticket.defer();
                self.net.lost.lock().push(Box::new(lost));
                Started::Deferred
            }
            Behaviour::Fail => {
                let answer = ticket.defer();
                let e = injected(&self.id);
                std::thread::spawn(move || answer.complete(Err(e)));
                Started::Deferred
            }
            Behaviour::FailAfter(delay) => {
                let answer = ticket.defer();
                let e = injected(&self.id);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    answer.complete(Err(e));
                });
                Started::Deferred
            }
            Behaviour::After(delay) => {
                let answer = ticket.defer();
                let inner = Arc::clone(&self.inner);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    answer.complete(op(inner.as_ref()));
                });
                Started::Deferred
            }
        }
    }
}

/// A write's bytes, owned, to apply on another thread.
struct Owned {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    version: Version,
}

impl Owned {
    fn of(w: &Write<'_>) -> Owned {
        Owned {
            key: w.key.to_vec(),
            value: w.value.map(<[u8]>::to_vec),
            version: w.version,
        }
    }
    fn write(&self) -> Write<'_> {
        Write {
            key: &self.key,
            value: self.value.as_deref(),
            version: self.version,
            expires: None,
        }
    }
}

impl Replica for Remote {
    fn id(&self) -> &NodeId {
        &self.id
    }
    fn is_remote(&self) -> bool {
        self.net.remote.lock().contains(self.id.as_str())
    }
    fn apply(&self, epoch: u64, write: Write<'_>) -> Result<bool> {
        self.blocking(|r| r.apply(epoch, write))
    }
    fn apply_swap(&self, epoch: u64, write: Write<'_>, read_value: bool) -> Result<Swapped> {
        self.blocking(|r| r.apply_swap(epoch, write, read_value))
    }
    fn apply_batch(&self, epoch: u64, writes: &[Write<'_>]) -> Result<usize> {
        self.blocking(|r| r.apply_batch(epoch, writes))
    }
    fn read(&self, epoch: u64, key: &[u8]) -> Result<Option<Cell>> {
        self.blocking(|r| r.read(epoch, key))
    }
    fn start_apply(&self, epoch: u64, write: Write<'_>, ticket: Ticket<'_, bool>) -> Started<bool> {
        self.net.count_writes(&self.id, 1);
        let w = Owned::of(&write);
        self.start(ticket, move |r| r.apply(epoch, w.write()))
    }
    fn start_apply_swap(
        &self,
        epoch: u64,
        write: Write<'_>,
        read_value: bool,
        ticket: Ticket<'_, Swapped>,
    ) -> Started<Swapped> {
        self.net.count_writes(&self.id, 1);
        let w = Owned::of(&write);
        self.start(ticket, move |r| r.apply_swap(epoch, w.write(), read_value))
    }
    fn start_apply_batch(
        &self,
        epoch: u64,
        writes: &[Write<'_>],
        ticket: Ticket<'_, usize>,
    ) -> Started<usize> {
        self.net.count_writes(&self.id, writes.len());
        let ws: Vec<Owned> = writes.iter().map(Owned::of).collect();
        self.start(ticket, move |r| {
            let writes: Vec<Write<'_>> = ws.iter().map(Owned::write).collect();
            r.apply_batch(epoch, &writes)
        })
    }
    fn start_read(
        &self,
        epoch: u64,
        key: &[u8],
        ticket: Ticket<'_, Option<Cell>>,
    ) -> Started<Option<Cell>> {
        self.net.count_full(&self.id, 1);
        let key = key.to_vec();
        self.start(ticket, move |r| r.read(epoch, &key))
    }
    fn start_read_version(
        &self,
        epoch: u64,
        key: &[u8],
        ticket: Ticket<'_, Option<Version>>,
    ) -> Started<Option<Version>> {
        self.net.count_versions(&self.id, 1);
        let key = key.to_vec();
        self.start(ticket, move |r| r.read_version(epoch, &key))
    }
    fn start_read_many(
        &self,
        epoch: u64,
        keys: &[&[u8]],
        ticket: Ticket<'_, Vec<Option<Cell>>>,
    ) -> Started<Vec<Option<Cell>>> {
        self.net.count_full(&self.id, keys.len());
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        self.start(ticket, move |r| {
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            r.read_many(epoch, &keys)
        })
    }
    fn start_read_versions(
        &self,
        epoch: u64,
        keys: &[&[u8]],
        ticket: Ticket<'_, Vec<Option<Version>>>,
    ) -> Started<Vec<Option<Version>>> {
        self.net.count_versions(&self.id, keys.len());
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        self.start(ticket, move |r| {
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            r.read_versions(epoch, &keys)
        })
    }
    fn export<'a>(
        &'a self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
    ) -> Result<RecordStream<'a>> {
        self.blocking(|_| Ok(()))?;
        self.inner.export(epoch, ranges, batch_size)
    }
    fn import(&self, epoch: u64, batch: &[Record]) -> Result<usize> {
        self.blocking(|r| r.import(epoch, batch))
    }
    fn drop_ranges(&self, epoch: u64, ranges: &[TokenRange]) -> Result<usize> {
        self.blocking(|r| r.drop_ranges(epoch, ranges))
    }
    fn count_in_ranges(&self, ranges: &[TokenRange]) -> Result<RangeCount> {
        self.blocking(|r| r.count_in_ranges(ranges))
    }
    fn held(&self) -> Result<RangeCount> {
        self.blocking(|r| r.held())
    }
    fn fence(&self, epoch: u64) {
        self.inner.fence(epoch)
    }
    fn sync(&self) -> Result<()> {
        self.blocking(|r| r.sync())
    }
    fn is_down(&self) -> bool {
        self.net.of(&self.id) == Behaviour::Down
    }
    fn digests(&self, epoch: u64, range: TokenRange, leaves: u32) -> Result<Vec<Digest>> {
        self.blocking(|r| r.digests(epoch, range, leaves))
    }
    // The maintenance forms answer as the node's behaviour says, as the data ones do.
    fn start_held(&self, ticket: Ticket<'_, RangeCount>) -> Started<RangeCount> {
        self.start(ticket, |r| r.held())
    }
    fn start_digests(
        &self,
        epoch: u64,
        range: TokenRange,
        leaves: u32,
        ticket: Ticket<'_, Vec<Digest>>,
    ) -> Started<Vec<Digest>> {
        self.start(ticket, move |r| r.digests(epoch, range, leaves))
    }
    fn start_export_page(
        &self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
        session: Option<u64>,
        ticket: Ticket<'_, ExportPage>,
    ) -> Started<ExportPage> {
        let ranges = ranges.to_vec();
        self.start(ticket, move |r| {
            // One page: the whole export (no session on the node to keep).
            let mut page = ExportPage::default();
            if session.is_none() {
                for batch in r.export(epoch, &ranges, batch_size)? {
                    page.records.extend(batch?);
                }
            }
            Ok(page)
        })
    }
    fn start_import(
        &self,
        epoch: u64,
        batch: &[Record],
        ticket: Ticket<'_, usize>,
    ) -> Started<usize> {
        let batch = batch.to_vec();
        self.start(ticket, move |r| r.import(epoch, &batch))
    }
    fn start_sync(&self, ticket: Ticket<'_, ()>) -> Started<()> {
        self.start(ticket, |r| r.sync())
    }
}
