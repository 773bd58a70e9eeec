//! The coordinator's view of a storage node.

use std::fmt;

use kv_ring::{NodeId, TokenRange};

use crate::error::Result;
use crate::pending::{Started, Ticket};
use kv_node::{Cell, CompactionReport, Digest, Node, RangeCount, Record, Swapped, Version, Write};

/// Batches of records streamed out of a replica by [`Replica::export`].
pub type RecordStream<'a> = Box<dyn Iterator<Item = Result<Vec<Record>>> + 'a>;

/// One page of an export read without waiting ([`Replica::start_export_page`]).
///
/// # Example
/// ```
/// use kv_cluster::ExportPage;
///
/// let last = ExportPage { records: Vec::new(), more: None };
/// assert!(last.more.is_none()); // nothing follows
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPage {
    /// The page's records (possibly none while the replica has nothing ready yet).
    pub records: Vec<Record>,
    /// The session to ask for the next page, or `None` when this was the last one.
    pub more: Option<u64>,
}

/// A storage node as the coordinator reaches it: in-process today ([`LocalReplica`] over a
/// `kv_node::Node`, [`MemoryReplica`] for tests), over the network later.
///
/// # Contract
/// - **Idempotent and order-independent.** Writes carry the coordinator's version and the
///   replica keeps the highest version per key (last-writer-wins; an equal version is the same
///   write). Applying a write twice, or a streamed copy before or after a client write, leaves
///   the same state. Redistribution, retries and (later) hinted handoff rely on this.
/// - **Epoch-tagged.** Every data operation carries the epoch of the ring it was routed with.
///   Once [`fence`](Replica::fence)d at epoch `e`, a replica refuses operations tagged below
///   `e` with [`Error::StaleEpoch`](crate::Error::StaleEpoch): after a membership change
///   commits, no write routed by the old ring can land on a node that has dropped the range.
/// - **Object-safe**, so a cluster holds `Arc<dyn Replica>` of any kind.
///
/// [`LocalReplica`]: crate::LocalReplica
/// [`MemoryReplica`]: crate::MemoryReplica
///
/// # Example
/// ```
/// use kv_cluster::{MemoryReplica, Replica, Version, Write};
///
/// let node = MemoryReplica::new("node1")?;
/// let w = Write { key: b"k", value: Some(b"v"), version: Version::new(7), expires: None };
/// assert!(node.apply(1, w)?);
/// assert!(!node.apply(1, w)?); // the same write again changes nothing
/// let cell = node.read(1, b"k")?.unwrap();
/// assert_eq!((cell.value.as_deref(), cell.version), (Some(&b"v"[..]), Version::new(7)));
/// # Ok::<(), kv_cluster::Error>(())
/// ```
pub trait Replica: Send + Sync + fmt::Debug {
    /// The node's id.
    fn id(&self) -> &NodeId;

    /// Applies one write (a value, or a tombstone when `value` is `None`) if its version is
    /// newer than the one held; returns whether anything changed.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`](crate::Error::StaleEpoch), or the node's error.
    fn apply(&self, epoch: u64, write: Write<'_>) -> Result<bool>;

    /// [`apply`](Replica::apply), reporting the record the write replaced, decided
    /// atomically with the write (see [`kv_node::Node::apply_swap`]): what
    /// [`Cluster::delete_existing`](crate::Cluster::delete_existing) and
    /// [`Cluster::swap`](crate::Cluster::swap) ask every replica. With `read_value`, a
    /// replaced value is returned too. There is no default: reading first and writing after
    /// would let two racing writes report the same previous record.
    ///
    /// # Errors
    /// As [`apply`](Replica::apply).
    fn apply_swap(&self, epoch: u64, write: Write<'_>, read_value: bool) -> Result<Swapped>;

    /// Applies several writes as one atomic batch; returns how many changed anything.
    ///
    /// # Errors
    /// As [`apply`](Replica::apply).
    fn apply_batch(&self, epoch: u64, writes: &[Write<'_>]) -> Result<usize>;

    /// The key's newest value or tombstone with its version and expiry, or `None` if the node
    /// holds nothing for it. The expiry is **not judged** by the replica: a value past its
    /// expiry is returned as stored (the coordinator judges it against its own clock,
    /// `docs/design.md`, *Expiring keys*), unless the replica already turned it into a
    /// tombstone (compaction does, once its own clock passed the expiry).
    ///
    /// # Errors
    /// As [`apply`](Replica::apply).
    fn read(&self, epoch: u64, key: &[u8]) -> Result<Option<Cell>>;

    /// The version of `key`'s newest record (tombstones included), or `None`: what a quorum
    /// read asks the replicas beyond the first (a digest read, as Cassandra's). The default
    /// reads the whole record; a storage node answers from its index without reading the
    /// value.
    ///
    /// # Errors
    /// As [`read`](Replica::read).
    fn read_version(&self, epoch: u64, key: &[u8]) -> Result<Option<Version>> {
        Ok(self.read(epoch, key)?.map(|c| c.version))
    }

    /// [`read`](Replica::read) for several keys, answers in order: what
    /// [`Cluster::get_many`](crate::Cluster::get_many) asks a key's first replica. The default
    /// reads one key after the other; a storage node overlaps the keys' cache misses.
    ///
    /// # Errors
    /// As [`read`](Replica::read).
    fn read_many(&self, epoch: u64, keys: &[&[u8]]) -> Result<Vec<Option<Cell>>> {
        keys.iter().map(|k| self.read(epoch, k)).collect()
    }

    /// [`read_version`](Replica::read_version) for several keys, answers in order.
    ///
    /// # Errors
    /// As [`read`](Replica::read).
    fn read_versions(&self, epoch: u64, keys: &[&[u8]]) -> Result<Vec<Option<Version>>> {
        keys.iter().map(|k| self.read_version(epoch, k)).collect()
    }

    /// [`apply`](Replica::apply) without waiting: answers at once ([`Started::Done`], the
    /// default) or [defers](Ticket::defer) the ticket and answers when the node does. The
    /// coordinator submits a write to every replica this way, then collects the first `W`
    /// answers (see [`pending`](crate::pending)).
    fn start_apply(&self, epoch: u64, write: Write<'_>, ticket: Ticket<'_, bool>) -> Started<bool> {
        let _ = ticket;
        Started::Done(self.apply(epoch, write))
    }

    /// [`apply_swap`](Replica::apply_swap) without waiting, as
    /// [`start_apply`](Replica::start_apply).
    fn start_apply_swap(
        &self,
        epoch: u64,
        write: Write<'_>,
        read_value: bool,
        ticket: Ticket<'_, Swapped>,
    ) -> Started<Swapped> {
        let _ = ticket;
        Started::Done(self.apply_swap(epoch, write, read_value))
    }

    /// [`apply_batch`](Replica::apply_batch) without waiting, as
    /// [`start_apply`](Replica::start_apply).
    fn start_apply_batch(
        &self,
        epoch: u64,
        writes: &[Write<'_>],
        ticket: Ticket<'_, usize>,
    ) -> Started<usize> {
        let _ = ticket;
        Started::Done(self.apply_batch(epoch, writes))
    }

    /// [`read`](Replica::read) without waiting, as [`start_apply`](Replica::start_apply).
    fn start_read(
        &self,
        epoch: u64,
        key: &[u8],
        ticket: Ticket<'_, Option<Cell>>,
    ) -> Started<Option<Cell>> {
        let _ = ticket;
        Started::Done(self.read(epoch, key))
    }

    /// [`read_version`](Replica::read_version) without waiting, as
    /// [`start_apply`](Replica::start_apply).
    fn start_read_version(
        &self,
        epoch: u64,
        key: &[u8],
        ticket: Ticket<'_, Option<Version>>,
    ) -> Started<Option<Version>> {
        let _ = ticket;
        Started::Done(self.read_version(epoch, key))
    }

    /// [`read_many`](Replica::read_many) without waiting, as
    /// [`start_apply`](Replica::start_apply).
    fn start_read_many(
        &self,
        epoch: u64,
        keys: &[&[u8]],
        ticket: Ticket<'_, Vec<Option<Cell>>>,
    ) -> Started<Vec<Option<Cell>>> {
        let _ = ticket;
        Started::Done(self.read_many(epoch, keys))
    }

    /// [`read_versions`](Replica::read_versions) without waiting, as
    /// [`start_apply`](Replica::start_apply).
    fn start_read_versions(
        &self,
        epoch: u64,
        keys: &[&[u8]],
        ticket: Ticket<'_, Vec<Option<Version>>>,
    ) -> Started<Vec<Option<Version>>> {
        let _ = ticket;
        Started::Done(self.read_versions(epoch, keys))
    }

    /// [`held`](Replica::held) without waiting, as [`start_apply`](Replica::start_apply): what
    /// a repair asks to size its Merkle trees.
    fn start_held(&self, ticket: Ticket<'_, RangeCount>) -> Started<RangeCount> {
        let _ = ticket;
        Started::Done(self.held())
    }

    /// [`digests`](Replica::digests) without waiting, as
    /// [`start_apply`](Replica::start_apply).
    fn start_digests(
        &self,
        epoch: u64,
        range: TokenRange,
        leaves: u32,
        ticket: Ticket<'_, Vec<Digest>>,
    ) -> Started<Vec<Digest>> {
        let _ = ticket;
        Started::Done(self.digests(epoch, range, leaves))
    }

    /// One page of [`export`](Replica::export) without waiting, as
    /// [`start_apply`](Replica::start_apply): with `session` `None` it opens an export of
    /// `ranges` and answers its first page; with the session a page named
    /// ([`ExportPage::more`]), the next page (`epoch`, `ranges` and `batch_size` are then
    /// ignored). A reader that stops before the last page calls
    /// [`end_export`](Replica::end_export).
    ///
    /// The default answers at once with every record of `ranges` in one page (an in-process
    /// replica: what repair asks is one Merkle leaf, a few dozen keys); a replica across the
    /// network pages through a session on the node.
    fn start_export_page(
        &self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
        session: Option<u64>,
        ticket: Ticket<'_, ExportPage>,
    ) -> Started<ExportPage> {
        let _ = ticket;
        if session.is_some() {
            // The default never names a session, so this is the end of none.
            return Started::Done(Ok(ExportPage::default()));
        }
        let page = self.export(epoch, ranges, batch_size).and_then(|stream| {
            let mut records = Vec::new();
            for batch in stream {
                records.extend(batch?);
            }
            Ok(ExportPage {
                records,
                more: None,
            })
        });
        Started::Done(page)
    }

    /// Ends an export read with [`start_export_page`](Replica::start_export_page) before
    /// its last page, without waiting (the default has nothing to end).
    fn end_export(&self, session: u64) {
        let _ = session;
    }

    /// [`import`](Replica::import) without waiting, as
    /// [`start_apply`](Replica::start_apply).
    fn start_import(
        &self,
        epoch: u64,
        batch: &[Record],
        ticket: Ticket<'_, usize>,
    ) -> Started<usize> {
        let _ = ticket;
        Started::Done(self.import(epoch, batch))
    }

    /// [`sync`](Replica::sync) without waiting, as [`start_apply`](Replica::start_apply).
    fn start_sync(&self, ticket: Ticket<'_, ()>) -> Started<()> {
        let _ = ticket;
        Started::Done(self.sync())
    }

    /// [`fence`](Replica::fence) without waiting, as [`start_apply`](Replica::start_apply);
    /// unlike `fence`, a fence that did not reach the node is an error the caller sees.
    fn start_fence(&self, epoch: u64, ticket: Ticket<'_, ()>) -> Started<()> {
        let _ = ticket;
        self.fence(epoch);
        Started::Done(Ok(()))
    }

    /// Streams every record (tombstones included) whose token lies in `ranges`, in batches of
    /// at most `batch_size`. The cost tracks the keys in the ranges, not the keys held.
    ///
    /// # Errors
    /// As [`apply`](Replica::apply), up front or per batch.
    fn export<'a>(
        &'a self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
    ) -> Result<RecordStream<'a>>;

    /// Applies streamed records with last-writer-wins; returns how many changed anything.
    ///
    /// # Errors
    /// As [`apply`](Replica::apply).
    fn import(&self, epoch: u64, batch: &[Record]) -> Result<usize>;

    /// Forgets every key and tombstone whose token lies in `ranges`, durably; returns how
    /// many keys were dropped.
    ///
    /// # Errors
    /// As [`apply`](Replica::apply).
    fn drop_ranges(&self, epoch: u64, ranges: &[TokenRange]) -> Result<usize>;

    /// Counts what the node holds in `ranges`.
    ///
    /// # Errors
    /// The node's error.
    fn count_in_ranges(&self, ranges: &[TokenRange]) -> Result<RangeCount>;

    /// A hint before an import: about `keys` records whose tokens lie in `ranges` are on
    /// their way, so the node can size its index once instead of growing it as they arrive.
    /// The default ignores it.
    fn reserve(&self, ranges: &[TokenRange], keys: u64) {
        let _ = (ranges, keys);
    }

    /// Everything the node holds, from its counters (cheap: no scan).
    ///
    /// # Errors
    /// The node's error.
    fn held(&self) -> Result<RangeCount>;

    /// The keys written with an expiry that the node still indexes, or `None` when it is not
    /// known (the default). A key counts from its write with an expiry until a later write
    /// without one replaces it, or compaction or active expiry removes it: an expired key
    /// not yet reclaimed still counts. A node counts the keys of every range it holds, as
    /// [`held`](Replica::held) does; [`Cluster::expiring_key_count`] turns the nodes' counts
    /// into a number of keys.
    ///
    /// [`Cluster::expiring_key_count`]: crate::Cluster::expiring_key_count
    fn expiring_keys(&self) -> Option<u64> {
        None
    }

    /// Refuses, from now on, operations tagged with an epoch below `epoch`. Never lowers the
    /// fence.
    fn fence(&self, epoch: u64);

    /// Makes everything applied so far durable.
    ///
    /// # Errors
    /// The node's error.
    fn sync(&self) -> Result<()>;

    /// Compacts the node's storage now (reclaims dead space). Nodes without a log (the
    /// in-memory test double) have nothing to do.
    ///
    /// # Errors
    /// The node's error.
    fn compact(&self) -> Result<CompactionReport> {
        Ok(CompactionReport::default())
    }

    /// When the node last made its writes durable (a flush of its log); `None` if it has
    /// not since it was opened, or keeps nothing on disk (the in-memory test double).
    fn last_flush(&self) -> Option<std::time::SystemTime> {
        None
    }

    /// Whether the coordinator knows this node to be down (its handle refuses every call).
    fn is_down(&self) -> bool {
        false
    }

    /// Whether this replica is reached over the network (a request costs a round trip).
    /// A read asks such replicas after those in this process: the full read goes to a local
    /// replica when there is one, and only digests cross the network, as Cassandra's
    /// coordinator reads itself first. Default: in this process.
    fn is_remote(&self) -> bool {
        false
    }

    /// One [`Digest`] per leaf of `range` cut into `leaves` equal parts
    /// ([`Node::leaf_range`]): what anti-entropy compares between replicas. Two replicas
    /// holding the same `(key, version, tombstone?)` set in a leaf have the same digest.
    ///
    /// The default exports each leaf and hashes it; a storage node computes them in one pass
    /// over its index ([`Node::digests`]).
    ///
    /// # Errors
    /// As [`export`](Replica::export).
    fn digests(&self, epoch: u64, range: TokenRange, leaves: u32) -> Result<Vec<Digest>> {
        let leaves = leaves.clamp(1, 1 << 16);
        (0..leaves)
            .map(|i| {
                let mut d = Digest::default();
                for batch in self.export(epoch, &[Node::leaf_range(range, leaves, i)], 1024)? {
                    for r in batch? {
                        d.hash ^= record_hash(&r);
                        d.keys += 1;
                    }
                }
                Ok(d)
            })
            .collect()
    }
}

/// The hash a record contributes to its leaf's digest: the same as a storage node's
/// ([`Digest::entry_hash`]), so digests from either kind of replica compare.
fn record_hash(r: &Record) -> u64 {
    Digest::entry_hash(kv_ring::token(&r.key), r.version, r.value.is_none())
}
