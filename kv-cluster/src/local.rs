//! The in-process replica: a `kv_node::Node` in this process.

use std::path::Path;
use std::sync::Arc;

use kv_node::{Cell, Node, NodeOptions, RangeCount, Record, Swapped, Version, Write};
use kv_ring::{NodeId, TokenRange};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::replica::{RecordStream, Replica};

/// A [`Replica`] over a storage node in this process: every call is a direct method call on
/// the shared [`Node`], behind the epoch [fence](Replica::fence).
///
/// # Example
/// ```
/// use kv_cluster::{LocalReplica, NodeOptions, Replica, Version, Write};
///
/// let dir = tempfile::tempdir()?;
/// let node = LocalReplica::open("node1", dir.path(), NodeOptions::new())?;
/// node.apply(1, Write { key: b"k", value: Some(b"v"), version: Version::new(5), expires: None })?;
/// assert_eq!(node.read(1, b"k")?.unwrap().version, Version::new(5));
/// // The expiry goes to the node with the write, and comes back with the read.
/// let w = Write { key: b"s", value: Some(b"v"), version: Version::new(6), expires: Some(1) };
/// node.apply(1, w)?;
/// assert_eq!(node.read(1, b"s")?.unwrap().expires, Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LocalReplica {
    id: NodeId,
    node: Arc<Node>,
    fence: Fence,
}

impl LocalReplica {
    /// Wraps an open node.
    pub fn new(id: NodeId, node: Arc<Node>) -> Self {
        LocalReplica {
            id,
            node,
            fence: Fence::default(),
        }
    }

    /// Opens (creating if needed) the node whose own directory is `dir`.
    ///
    /// # Errors
    /// [`Error::Ring`] for an invalid id; [`Error::Node`] if the node cannot be opened (its
    /// directory is locked by another process, its log is corrupt, ...).
    pub fn open(id: &str, dir: impl AsRef<Path>, options: NodeOptions) -> Result<Self> {
        let id = NodeId::new(id)?;
        let node = Node::open(dir, options).map_err(|source| Error::Node {
            node: id.clone(),
            source,
        })?;
        Ok(LocalReplica::new(id, Arc::new(node)))
    }

    /// The storage node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    fn err(&self) -> impl Fn(kv_node::Error) -> Error + '_ {
        |source| Error::Node {
            node: self.id.clone(),
            source,
        }
    }
}

impl Replica for LocalReplica {
    fn id(&self) -> &NodeId {
        &self.id
    }

    fn apply(&self, epoch: u64, write: Write<'_>) -> Result<bool> {
        self.fence.check(&self.id, epoch)?;
        self.node
            .apply_expiring(write.key, write.value, write.version, write.expires)
            .map_err(self.err())
    }

    fn apply_swap(&self, epoch: u64, write: Write<'_>, read_value: bool) -> Result<Swapped> {
        self.fence.check(&self.id, epoch)?;
        self.node
            .apply_swap_expiring(
                write.key,
                write.value,
                write.version,
                write.expires,
                read_value,
            )
            .map_err(self.err())
    }

    fn apply_batch(&self, epoch: u64, writes: &[Write<'_>]) -> Result<usize> {
        self.fence.check(&self.id, epoch)?;
        self.node.apply_batch(writes).map_err(self.err())
    }

    fn read(&self, epoch: u64, key: &[u8]) -> Result<Option<Cell>> {
        self.fence.check(&self.id, epoch)?;
        self.node.get_cell(key).map_err(self.err())
    }

    fn read_many(&self, epoch: u64, keys: &[&[u8]]) -> Result<Vec<Option<Cell>>> {
        self.fence.check(&self.id, epoch)?;
        self.node.get_many_cells(keys).map_err(self.err())
    }

    fn read_version(&self, epoch: u64, key: &[u8]) -> Result<Option<Version>> {
        self.fence.check(&self.id, epoch)?;
        Ok(self.node.version_of(key))
    }

    fn read_versions(&self, epoch: u64, keys: &[&[u8]]) -> Result<Vec<Option<Version>>> {
        self.fence.check(&self.id, epoch)?;
        Ok(self.node.versions_of(keys))
    }

    fn export<'a>(
        &'a self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
    ) -> Result<RecordStream<'a>> {
        self.fence.check(&self.id, epoch)?;
        let err = self.err();
        Ok(Box::new(
            self.node
                .export(ranges, batch_size)
                .map(move |batch| batch.map_err(&err)),
        ))
    }

    fn import(&self, epoch: u64, batch: &[Record]) -> Result<usize> {
        self.fence.check(&self.id, epoch)?;
        self.node.import(batch).map_err(self.err())
    }

    fn drop_ranges(&self, epoch: u64, ranges: &[TokenRange]) -> Result<usize> {
        self.fence.check(&self.id, epoch)?;
        self.node.drop_ranges(ranges).map_err(self.err())
    }

    fn count_in_ranges(&self, ranges: &[TokenRange]) -> Result<RangeCount> {
        Ok(self.node.count_in_ranges(ranges))
    }

    fn reserve(&self, ranges: &[TokenRange], keys: u64) {
        self.node.reserve(ranges, keys);
    }

    fn last_flush(&self) -> Option<std::time::SystemTime> {
        self.node.last_flush()
    }

    fn held(&self) -> Result<RangeCount> {
        let s = self.node.stats();
        Ok(RangeCount {
            live: s.live_keys,
            tombstones: s.tombstones,
            live_bytes: s.live_bytes,
        })
    }

    fn expiring_keys(&self) -> Option<u64> {
        Some(self.node.stats().expiring_keys)
    }

    fn fence(&self, epoch: u64) {
        self.fence.raise(epoch);
    }

    fn sync(&self) -> Result<()> {
        self.node.sync().map_err(self.err())
    }

    fn compact(&self) -> Result<kv_node::CompactionReport> {
        self.node.compact().map_err(self.err())
    }

    fn digests(&self, epoch: u64, range: TokenRange, leaves: u32) -> Result<Vec<kv_node::Digest>> {
        self.fence.check(&self.id, epoch)?;
        Ok(self.node.digests(range, leaves))
    }
}

/// The default [`Backend`]: a `kv_node::Node` per member, in `<data-dir>/<node-id>/`, all
/// opened with the same options.
///
/// # Example
/// ```
/// use kv_cluster::{Cluster, ClusterOptions, NodeOptions};
///
/// let dir = tempfile::tempdir()?;
/// let opts = ClusterOptions::new().node_options(NodeOptions::new().cache_entries(10_000));
/// let cluster = Cluster::open(dir.path(), opts)?;
/// cluster.put(b"k", b"v")?;
/// assert!(dir.path().join("node1").join("wal").is_dir());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct KvNodeBackend {
    options: NodeOptions,
}

impl KvNodeBackend {
    /// A backend opening every node with `options`.
    pub fn new(options: NodeOptions) -> Self {
        KvNodeBackend { options }
    }
}

impl Backend for KvNodeBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> Result<Arc<dyn Replica>> {
        let node = Node::open(dir, self.options.clone()).map_err(|source| Error::Node {
            node: id.clone(),
            source,
        })?;
        Ok(Arc::new(LocalReplica::new(id.clone(), Arc::new(node))))
    }

    /// Renames `dir` to `<id>~removed` next to it (`~` cannot appear in a node id), makes the
    /// rename durable, then deletes the renamed tree: a crash leaves either the whole node
    /// directory or none of it at `dir`.
    fn destroy(&self, id: &NodeId, dir: &Path) -> Result<()> {
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        let trash = parent.join(format!("{id}~removed"));
        // A previous attempt may have stopped after its rename.
        remove_tree(&trash)?;
        match std::fs::rename(dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("rename", dir, e)),
        }
        kv_node::durable::sync_dir(parent)?;
        remove_tree(&trash)
    }
}

/// Deletes a directory tree; a missing one is fine.
fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove directory", path, e)),
    }
}
