//! The cluster: opening it, and client reads and writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use kv_ring::{NodeId, Ring, token};
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::meta::{FORMAT_VERSION, Meta, members_of};
use crate::options::ClusterOptions;
use crate::replica::Replica;
use crate::routing::{NodeMap, Routing, RoutingTable};
use kv_node::{Hlc, Version, Write};

/// The cluster lock file's name in the data directory.
const LOCK_FILE: &str = "LOCK";

/// How far ahead of the clock the persisted version lease is pushed.
const LEASE_MILLIS: u64 = 60_000;

/// A replicated key-value cluster: nodes on a consistent-hash ring, `rf` replicas per key,
/// quorum reads and writes, and membership changes that move only what must move while
/// clients keep going.
///
/// `Cluster` is `Send + Sync`: share it (`&Cluster` or `Arc<Cluster>`) between client threads;
/// [`add_node`](Cluster::add_node) and [`remove_node`](Cluster::remove_node) run alongside
/// them.
///
/// # Guarantees
/// - A write returns once `W` replicas (the write consistency) have applied it; in-process,
///   every replica of the preference list is written before it returns, and `W` decides
///   whether a failing replica fails the write.
/// - A read asks `R` replicas and returns the newest version (a delete is a newer tombstone).
///   With `R + W > rf` (quorum/quorum, the default) a read sees every acknowledged write,
///   including during a membership change.
/// - A write that fails (fewer than `W` acknowledgements) may still have been applied on some
///   replicas: it is not acknowledged, and a later read may or may not see it (as in Dynamo).
/// - How durable an acknowledged write is depends on the nodes' sync policy.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
///
/// let dir = tempfile::tempdir()?;
/// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
/// let cluster = Cluster::open(dir.path(), opts)?;
/// cluster.put(b"user:1001", b"Alice")?;
/// assert_eq!(cluster.get(b"user:1001")?.as_deref(), Some(&b"Alice"[..]));
/// cluster.delete(b"user:1001")?;
/// assert_eq!(cluster.get(b"user:1001")?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Cluster {
    pub(crate) dir: PathBuf,
    pub(crate) opts: ClusterOptions,
    pub(crate) rf: usize,
    pub(crate) hlc: Hlc,
    /// The persisted version lease (raw): every version handed out is below it.
    lease: AtomicU64,
    /// The routing snapshot client operations clone. Replaced, never mutated.
    pub(crate) routing: RoutingTable,
    /// The persisted metadata, as last written.
    pub(crate) meta: Mutex<Meta>,
    /// The membership change running right now, if any (one at a time).
    pub(crate) running: Mutex<Option<(crate::ChangeKind, NodeId)>>,
    /// Held for the cluster's lifetime: one process per data directory.
    _lock: fs::File,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("rf", &self.rf)
            .field("ring", &self.routing().ring)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Opens the cluster in `data_dir`, creating it with the options' initial nodes if the
    /// directory holds no `cluster.json`. A membership change found in progress (the process
    /// stopped midway) is completed before this returns; if a node error stops it, the cluster
    /// opens anyway with the change still pending ([`pending_change`](Cluster::pending_change)
    /// says so, writes go to old and new replicas) and
    /// [`resume_change`](Cluster::resume_change) retries it.
    ///
    /// # Errors
    /// [`Error::Locked`] if another `Cluster` has the directory open; [`Error::InvalidOptions`]
    /// for a new cluster with fewer nodes than its replication factor; [`Error::Metadata`] or
    /// [`Error::FormatVersion`] for an unreadable `cluster.json`; a node's error if one cannot
    /// be opened; [`Error::Io`].
    pub fn open(data_dir: impl AsRef<Path>, opts: ClusterOptions) -> Result<Cluster> {
        let dir = data_dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = lock_dir(&dir)?;
        let meta = match Meta::load(&dir)? {
            Some(meta) => meta,
            None => {
                let meta = new_meta(&opts)?;
                meta.store(&dir)?;
                meta
            }
        };
        if meta.replication_factor == 0 || meta.members.len() < meta.replication_factor {
            return Err(Error::Metadata {
                path: dir.join(crate::meta::FILE_NAME),
                reason: format!(
                    "{} members cannot hold {} replicas",
                    meta.members.len(),
                    meta.replication_factor
                ),
            });
        }
        let ring = meta.ring()?;
        let mut nodes = NodeMap::default();
        for id in ring.nodes() {
            let node = opts.backend.open(id, &dir.join(id.as_str()))?;
            node.fence(ring.epoch());
            nodes.insert(id.clone(), node);
        }
        let cluster = Cluster {
            rf: meta.replication_factor,
            hlc: Hlc::with_clock(Arc::clone(&opts.clock)),
            lease: AtomicU64::new(0),
            routing: RoutingTable::new(Routing {
                ring,
                pending: None,
                nodes,
            }),
            meta: Mutex::new(meta),
            running: Mutex::new(None),
            dir,
            opts,
            _lock: lock,
        };
        // Versions after this open must beat every version issued before it, even if the
        // wall clock went back: start above the persisted lease, and persist a new one.
        let lease = cluster.meta.lock().version_lease;
        cluster.hlc.observe(Version::new(lease));
        cluster.extend_lease(cluster.hlc.now())?;
        if cluster.meta.lock().change.is_some() {
            // Roll the interrupted change forward: streaming again is idempotent (LWW).
            match cluster.resume_change(|_| std::ops::ControlFlow::Continue(())) {
                Ok(_) => {}
                // A node could not serve: open anyway, with the change pending (writes reach
                // old and new replicas), so that clients are served and it can be retried.
                Err(Error::Node { .. } | Error::StaleEpoch { .. } | Error::Unavailable { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(cluster)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The replication factor.
    pub fn replication_factor(&self) -> usize {
        self.rf
    }

    /// The ring reads are routed with (the committed one).
    pub fn ring(&self) -> Ring {
        self.routing().ring.clone()
    }

    /// Stores `value` under `key` on the key's replicas; returns the write's version.
    ///
    /// # Errors
    /// [`Error::Node`] for an empty or oversized key or value
    /// ([`Error::is_invalid_request`]); [`Error::Unavailable`] (with the first replica error as
    /// its cause) when fewer than `W` replicas acknowledged.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        self.write(&routing, key, Some(value), version)?;
        Ok(version)
    }

    /// Deletes `key` (writes a tombstone on its replicas); returns the delete's version.
    ///
    /// # Errors
    /// As [`put`](Cluster::put).
    pub fn delete(&self, key: &[u8]) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        self.write(&routing, key, None, version)?;
        Ok(version)
    }

    /// The value of `key`, or `None` if it is absent or deleted.
    ///
    /// # Errors
    /// [`Error::Node`] for an invalid key; [`Error::Unavailable`] when fewer than `R` replicas
    /// answered.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(key)?.map(|(v, _)| v))
    }

    /// The value of `key` with its version, or `None` if it is absent or deleted.
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_versioned(&self, key: &[u8]) -> Result<Option<(Bytes, Version)>> {
        let routing = self.routing();
        let newest = self.read(&routing, key)?;
        Ok(newest.and_then(|(value, version)| value.map(|v| (v, version))))
    }

    /// Stores several pairs, one batch per node; returns each write's version, in order.
    ///
    /// # Errors
    /// As [`put`](Cluster::put); some pairs may have been stored when it fails.
    pub fn put_many<K, V>(&self, pairs: &[(K, V)]) -> Result<Vec<Version>>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let routing = self.routing();
        let versions: Vec<Version> = pairs
            .iter()
            .map(|_| self.next_version())
            .collect::<Result<_>>()?;
        // Each node gets one batch holding every pair it replicates.
        let mut batches: Vec<(NodeId, Vec<usize>)> = Vec::new();
        let mut targets: Vec<SmallVec<[usize; 8]>> = Vec::with_capacity(pairs.len());
        for (i, (k, _)) in pairs.iter().enumerate() {
            let mut mine = SmallVec::new();
            for id in self.targets(&routing, token(k.as_ref()))? {
                let b = match batches.iter().position(|(n, _)| *n == id) {
                    Some(b) => b,
                    None => {
                        batches.push((id, Vec::new()));
                        batches.len() - 1
                    }
                };
                batches[b].1.push(i);
                mine.push(b);
            }
            targets.push(mine);
        }
        let mut ok = vec![false; batches.len()];
        let mut first_err = None;
        for (b, (id, items)) in batches.iter().enumerate() {
            let writes: Vec<Write<'_>> = items
                .iter()
                .map(|&i| Write {
                    key: pairs[i].0.as_ref(),
                    value: Some(pairs[i].1.as_ref()),
                    version: versions[i],
                })
                .collect();
            match self
                .node_of(&routing, id)?
                .apply_batch(routing.epoch(), &writes)
            {
                Ok(_) => ok[b] = true,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for (i, (k, _)) in pairs.iter().enumerate() {
            let acked: SmallVec<[&NodeId; 8]> = targets[i]
                .iter()
                .filter(|&&b| ok[b])
                .map(|&b| &batches[b].0)
                .collect();
            self.check_acks(&routing, token(k.as_ref()), &acked, &mut first_err)?;
        }
        Ok(versions)
    }

    /// The values of several keys, in order (`None` for absent or deleted ones).
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let routing = self.routing();
        keys.iter()
            .map(|k| Ok(self.read(&routing, k.as_ref())?.and_then(|(v, _)| v)))
            .collect()
    }

    /// Makes every write acknowledged so far durable on every node.
    ///
    /// # Errors
    /// The first node error.
    pub fn sync(&self) -> Result<()> {
        let routing = self.routing();
        routing.nodes.values().try_for_each(|n| n.sync())
    }

    /// Syncs every node and closes the cluster. Dropping a `Cluster` without `close` is safe
    /// (what the nodes' sync policy has not made durable is up to the OS).
    ///
    /// # Errors
    /// As [`sync`](Cluster::sync).
    pub fn close(self) -> Result<()> {
        self.sync()
    }

    /// A version for a new write: from the hybrid logical clock, and below the persisted
    /// lease, which is pushed [`LEASE_MILLIS`] ahead (one `cluster.json` write) whenever the
    /// clock reaches it.
    #[inline]
    fn next_version(&self) -> Result<Version> {
        let version = self.hlc.now();
        if version.as_u64() >= self.lease.load(Ordering::Acquire) {
            self.extend_lease(version)?;
        }
        Ok(version)
    }

    #[cold]
    fn extend_lease(&self, version: Version) -> Result<()> {
        let mut meta = self.meta.lock();
        if version.as_u64() < self.lease.load(Ordering::Acquire) {
            return Ok(());
        }
        let lease = Version::from_parts(version.millis() + LEASE_MILLIS, 0).as_u64();
        let mut next = meta.clone();
        next.version_lease = lease;
        next.store(&self.dir)?;
        *meta = next;
        self.lease.store(lease, Ordering::Release);
        Ok(())
    }

    /// Writes `meta` to `cluster.json` (keeping the newest version lease), then keeps it as
    /// the current metadata. Holds the metadata lock throughout, so writers never interleave.
    pub(crate) fn persist(&self, mut meta: Meta) -> Result<()> {
        let mut current = self.meta.lock();
        meta.version_lease = meta.version_lease.max(current.version_lease);
        meta.store(&self.dir)?;
        *current = meta;
        Ok(())
    }

    /// The current routing snapshot.
    #[inline]
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.routing.load()
    }

    /// Installs `next` and waits until no client operation uses the previous routing.
    pub(crate) fn install(&self, next: Routing) {
        self.routing.install(next);
    }

    /// The nodes a write of `token` goes to: the ring's replicas, plus the pending ring's
    /// during a change.
    fn targets(&self, routing: &Routing, token: u64) -> Result<SmallVec<[NodeId; 8]>> {
        let mut out: SmallVec<[NodeId; 8]> = routing
            .ring
            .preference_list(token, self.rf)?
            .iter()
            .cloned()
            .collect();
        if let Some(pending) = &routing.pending {
            for id in pending.preference_list(token, self.rf)?.iter() {
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
        }
        Ok(out)
    }

    fn node_of<'r>(&self, routing: &'r Routing, id: &NodeId) -> Result<&'r Arc<dyn Replica>> {
        routing.node(id).ok_or_else(|| Error::UnknownNode {
            node: id.to_string(),
        })
    }

    fn write(
        &self,
        routing: &Routing,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> Result<()> {
        let token = token(key);
        let write = Write {
            key,
            value,
            version,
        };
        let epoch = routing.epoch();
        let mut acked: SmallVec<[&NodeId; 8]> = SmallVec::new();
        let mut first_err = None;
        let mut apply = |id: &NodeId| match self.node_of(routing, id)?.apply(epoch, write) {
            Ok(_) => Ok(true),
            Err(e) => {
                first_err.get_or_insert(e);
                Ok::<bool, Error>(false)
            }
        };
        let old = routing.ring.preference_list(token, self.rf)?;
        for id in old.iter() {
            if apply(id)? {
                acked.push(id);
            }
        }
        if let Some(pending) = &routing.pending {
            for id in pending.preference_list(token, self.rf)?.iter() {
                if !old.contains(id.as_str()) && apply(id)? {
                    acked.push(id);
                }
            }
        }
        self.check_acks(routing, token, &acked, &mut first_err)
    }

    /// Fails unless `W` replicas of the ring, and of the pending ring if any, are in `acked`.
    fn check_acks(
        &self,
        routing: &Routing,
        token: u64,
        acked: &[&NodeId],
        first_err: &mut Option<Error>,
    ) -> Result<()> {
        let needed = self.opts.write.required(self.rf);
        let count = |ring: &Ring| -> Result<usize> {
            Ok(ring
                .preference_list(token, self.rf)?
                .iter()
                .filter(|id| acked.contains(id))
                .count())
        };
        let mut got = count(&routing.ring)?;
        if let Some(pending) = &routing.pending {
            got = got.min(count(pending)?);
        }
        if got >= needed {
            return Ok(());
        }
        Err(Error::unavailable(needed, got, first_err.take()))
    }

    /// The newest record of `key` among `R` replicas of the ring (tombstones included).
    fn read(&self, routing: &Routing, key: &[u8]) -> Result<Option<(Option<Bytes>, Version)>> {
        let needed = self.opts.read.required(self.rf);
        let epoch = routing.epoch();
        let mut answered = 0;
        let mut newest: Option<(Option<Bytes>, Version)> = None;
        let mut first_err = None;
        for id in routing.ring.preference_list(token(key), self.rf)?.iter() {
            if answered == needed {
                break;
            }
            match self.node_of(routing, id)?.read(epoch, key) {
                Ok(found) => {
                    answered += 1;
                    if let Some((value, version)) = found
                        && newest.as_ref().is_none_or(|(_, v)| version > *v)
                    {
                        newest = Some((value, version));
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if answered < needed {
            return Err(Error::unavailable(needed, answered, first_err));
        }
        Ok(newest)
    }
}

/// A fresh cluster's metadata from the options.
fn new_meta(opts: &ClusterOptions) -> Result<Meta> {
    let rf = opts.replication_factor;
    if rf == 0 || opts.initial_nodes.len() < rf {
        return Err(Error::InvalidOptions {
            reason: format!(
                "{} initial nodes cannot hold replication factor {rf} (it must be 1..=nodes)",
                opts.initial_nodes.len()
            ),
        });
    }
    let mut meta = Meta {
        format_version: FORMAT_VERSION,
        replication_factor: rf,
        vnodes: opts.vnodes,
        epoch: 0,
        members: Vec::new(),
        version_lease: 0,
        change: None,
    };
    let ring = Ring::with_nodes(meta.ring_options()?, &opts.initial_nodes)?;
    meta.epoch = ring.epoch();
    meta.members = members_of(&ring);
    Ok(meta)
}

/// Takes the data directory's exclusive lock.
fn lock_dir(dir: &Path) -> Result<fs::File> {
    use fs2::FileExt;
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock_exclusive() {
        Ok(()) => Ok(file),
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(Error::io("lock", &path, e)),
    }
}
