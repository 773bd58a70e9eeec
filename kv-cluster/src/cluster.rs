//! The cluster: its state, opening it, and the metadata and routing it keeps.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use kv_ring::{NodeId, Ring};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::meta::{FORMAT_VERSION, Meta, members_of};
use crate::options::ClusterOptions;
use crate::routing::{NodeMap, Routing, RoutingTable};
use kv_node::Hlc;

/// The cluster lock file's name in the data directory.
const LOCK_FILE: &str = "LOCK";

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
///   whether a failing replica fails the write. Replicas that answer later (in other
///   processes) are all sent the write before any answer is awaited; those that have not
///   answered once `W` did are not waited for by the caller, and one that has not answered
///   within [`ClusterOptions::replica_timeout`](crate::ClusterOptions::replica_timeout)
///   counts as failed ([`Error::Timeout`](crate::Error::Timeout)) and gets a hint. Called on
///   a tokio runtime, a write is followed up after it returned: a replica that fails (a
///   transport error) or stays silent past that timeout after `W` was met gets a hint too.
/// - A read asks `R` replicas and returns the newest version (a delete is a newer tombstone).
///   With `R + W > rf` (quorum/quorum, the default) a read sees every acknowledged write,
///   including during a membership change.
/// - A write that fails (fewer than `W` acknowledgements) may still have been applied on some
///   replicas: it is not acknowledged, and a later read may or may not see it (as in Dynamo).
/// - A write with a sloppy quorum ([`put_sloppy`](Cluster::put_sloppy)) counts hints on
///   stand-ins towards `W`: it is on `W` distinct live nodes, but until the hints are handed
///   off a read may miss it.
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
    /// The persisted version lease and its renewal (`lease.rs`): every version handed out is
    /// below it.
    pub(crate) lease: Arc<crate::lease::Lease>,
    /// The previous run's lease (raw) while this coordinator waits it out (see `clock.rs`):
    /// no version below it is handed out. 0 when there is nothing to wait for.
    pub(crate) not_before: AtomicU64,
    /// Opens whose wall clock was behind the persisted lease by more than
    /// [`crate::LEASE_WINDOW`] plus [`crate::MAX_SKEW`] (see [`Cluster::lease_jumps`]).
    pub(crate) lease_jumps: AtomicU64,
    /// The routing snapshot client operations clone. Replaced, never mutated.
    pub(crate) routing: Arc<RoutingTable>,
    /// The persisted metadata, as last written (shared with the lease's renewal thread).
    pub(crate) meta: Arc<Mutex<Meta>>,
    /// The membership change running right now, if any (one at a time).
    pub(crate) running: Mutex<Option<(crate::ChangeKind, NodeId)>>,
    /// Serializes membership changes, failing and recovering nodes, and repair: each of them
    /// swaps node handles or relies on which nodes are up.
    pub(crate) admin: Arc<crate::gate::Gate>,
    /// Down nodes, by id (the coordinator's view; in memory only).
    pub(crate) health: Mutex<std::collections::HashMap<NodeId, crate::health::Down>>,
    /// Open hint stores.
    pub(crate) hints: Arc<crate::hints::HintStores>,
    /// Each node's catch-up: the phase running, the last result (see `catch_up.rs`).
    pub(crate) catch_ups: crate::catch_up::CatchUps,
    /// Why the pending change stopped the last time it was driven (see
    /// [`Cluster::change_error`]).
    pub(crate) change_error: Mutex<Option<String>>,
    /// The background repair thread, if enabled. Stopped and joined first on drop.
    pub(crate) repairer: Option<crate::background::Repairer>,
    /// Serializes the writes that report what they replaced, per key (see `key_locks`).
    pub(crate) key_locks: crate::key_locks::KeyLocks,
    /// Whether the topology comes from outside (`ClusterOptions::external_topology`, or set
    /// by the first `install_topology`): membership changes are refused, stale refusals are
    /// retried after a refresh (`epoch_watch.rs`).
    pub(crate) external: AtomicBool,
    /// The epoch of the routing installed last, and the operations waiting for a newer one.
    pub(crate) epochs: crate::epoch_watch::EpochWatch,
    /// Client operations retried after a stale refusal (see [`Cluster::stale_retries`]).
    pub(crate) stale_retries: AtomicU64,
    /// The topology installed last by `install_topology`, if any.
    pub(crate) topology: Mutex<Option<crate::topology::Topology>>,
    /// A raw version no higher than the wall clock plus `MAX_SKEW` (see `clock.rs`).
    pub(crate) skew_bound: AtomicU64,
    /// Versions seen past that bound (see [`Cluster::clock_skew_events`]).
    pub(crate) skew_events: AtomicU64,
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
    /// says so, [`change_error`](Cluster::change_error) says why, writes go to old and new
    /// replicas) and [`resume_change`](Cluster::resume_change) retries it.
    ///
    /// A joining node of that change that cannot be opened does not stop the cluster from
    /// opening: it is routed as a down node ([`health`](Cluster::health) says so), writes for
    /// it are kept as hints, and `resume_change` opens it again, hands the hints off and
    /// streams it everything again.
    ///
    /// # Errors
    /// [`Error::Locked`] if another `Cluster` has the directory open; [`Error::InvalidOptions`]
    /// for a new cluster with fewer nodes than its replication factor; [`Error::Metadata`] or
    /// [`Error::FormatVersion`] for an unreadable `cluster.json`; a node's error if a member
    /// of the committed ring cannot be opened; [`Error::Io`].
    pub fn open(data_dir: impl AsRef<Path>, opts: ClusterOptions) -> Result<Cluster> {
        let dir = data_dir.as_ref().to_path_buf();
        kv_node::durable::create_dir_all(&dir)?;
        let lock = lock_dir(&dir)?;
        let meta = match Meta::load(&dir)? {
            Some(meta) if reopened_elsewhere(&meta, &opts) => {
                // The topology comes from outside (a node process's metadata), so the members
                // stored at the first open are only the ring it opened with then, and may be
                // gone since (removed, their addresses forgotten): it opens with the caller's
                // members instead, keeping the stored version lease. The first installed
                // topology replaces this ring anyway.
                let mut fresh = new_meta(&opts)?;
                fresh.version_lease = meta.version_lease;
                fresh.store(&dir)?;
                fresh
            }
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
        if opts.sloppy && opts.own_hints.is_some() {
            return Err(Error::InvalidOptions {
                reason: "a sloppy quorum needs hints held by other nodes (stand-ins), but \
                         own_hints keeps every hint on this node"
                    .to_string(),
            });
        }
        let hlc = Hlc::with_slot(Arc::clone(&opts.clock), opts.coordinator_slot).map_err(|_| {
            Error::InvalidOptions {
                reason: format!(
                    "coordinator slot {} is out of range (0..{})",
                    opts.coordinator_slot,
                    kv_node::MAX_SLOTS
                ),
            }
        })?;
        let ring = meta.ring()?;
        let epochs = crate::epoch_watch::EpochWatch::new(ring.epoch());
        let mut nodes = NodeMap::default();
        for id in ring.nodes() {
            let node = opts.backend.open(id, &dir.join(id.as_str()))?;
            node.fence(ring.epoch());
            nodes.insert(id.clone(), node);
        }
        let rf = meta.replication_factor;
        let meta = Arc::new(Mutex::new(meta));
        let mut cluster = Cluster {
            rf,
            hlc,
            lease: crate::lease::Lease::new(
                dir.clone(),
                Arc::clone(&meta),
                opts.renew_lease_in_background,
            ),
            not_before: AtomicU64::new(0),
            lease_jumps: AtomicU64::new(0),
            routing: Arc::new(RoutingTable::new(Routing::new(ring, None, nodes), rf)),
            meta,
            running: Mutex::new(None),
            admin: Arc::new(crate::gate::Gate::default()),
            health: Mutex::default(),
            hints: Arc::default(),
            catch_ups: crate::catch_up::CatchUps::default(),
            change_error: Mutex::new(None),
            repairer: None,
            key_locks: crate::key_locks::KeyLocks::new(),
            external: AtomicBool::new(opts.external_topology),
            epochs,
            stale_retries: AtomicU64::new(0),
            topology: Mutex::new(None),
            skew_bound: AtomicU64::new(0),
            skew_events: AtomicU64::new(0),
            dir,
            opts,
            _lock: lock,
        };
        // Versions after this open must beat every version issued before it, even if the
        // wall clock went back, without running ahead of real time (see `clock.rs`).
        cluster.start_clock()?;
        // A change that was streaming: writes go to old and new replicas from the start, even
        // if the joiner cannot be opened (it is then routed as down: its writes become hints,
        // and what it had streamed is streamed again once it opens).
        if let Some((change, old, new)) = cluster.change_rings()?
            && change.phase == crate::meta::Phase::Streaming
        {
            let (_, unopened) = cluster.enter_pending(&old, &new)?;
            if let Some(e) = unopened {
                *cluster.change_error.lock() = Some(describe(&e));
            }
        }
        // Hints left by a previous process (its nodes are all routed again now, a joiner of a
        // pending change included): hand them off. Best effort: what fails stays on disk for
        // the next open or recovery, and repair covers it meanwhile.
        let _ = cluster.hand_off(&cluster.routing(), &|_, _| true);
        // What is left waits for a target still down: open it, so that it is counted
        // (`hints_pending_for`) before the next hinted write would open it.
        cluster.open_hint_stores();
        if cluster.meta.lock().change.is_some() {
            // Roll the interrupted change forward: streaming again is idempotent (LWW).
            match cluster.resume_change(|_| std::ops::ControlFlow::Continue(())) {
                Ok(_) => {}
                // A node could not serve (or be opened): open anyway, with the change pending
                // (writes reach old and new replicas, hints stand in for a down one), so that
                // clients are served and it can be retried. `change_error` says why.
                Err(
                    Error::Node { .. }
                    | Error::StaleEpoch { .. }
                    | Error::Unavailable { .. }
                    | Error::NodeDown { .. },
                ) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(interval) = cluster.opts.background_repair {
            let ctx = crate::background::RepairContext {
                routing: Arc::clone(&cluster.routing),
                admin: Arc::clone(&cluster.admin),
                rf: cluster.rf,
                batch: cluster.opts.transfer_batch,
                clock: Arc::clone(&cluster.opts.clock),
            };
            cluster.repairer = Some(crate::background::Repairer::start(
                ctx,
                interval,
                &cluster.dir,
            )?);
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

    /// Makes every write acknowledged so far durable on every node, and every hint held for
    /// a down node (a sloppy write may have counted one towards `W`).
    ///
    /// # Errors
    /// The first node or hint store error.
    pub fn sync(&self) -> Result<()> {
        let routing = self.routing();
        // Every node and the hints are flushed even when one fails (a peer process that is
        // gone must not leave this node's hints unflushed); the first error is returned.
        let mut first = None;
        for n in routing.nodes.values().filter(|n| !n.is_down()) {
            if let Err(e) = n.sync() {
                first.get_or_insert(e);
            }
        }
        let hints = self.sync_hints();
        match first {
            Some(e) => Err(e),
            None => hints,
        }
    }

    /// Compacts every node's storage now (each also compacts in the background past its
    /// dead-space threshold). Returns each node's report.
    ///
    /// # Errors
    /// The first node error.
    ///
    /// # Example
    /// ```
    /// use kv_cluster::{Cluster, ClusterOptions};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
    /// cluster.put(b"k", b"v")?;
    /// let reports = cluster.compact()?;
    /// assert_eq!(reports.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(&self) -> Result<Vec<(NodeId, kv_node::CompactionReport)>> {
        let routing = self.routing();
        routing
            .nodes
            .iter()
            .map(|(id, n)| Ok((id.clone(), n.compact()?)))
            .collect()
    }

    /// Stops the background repair (if any), syncs every node and closes the cluster.
    /// Dropping a `Cluster` without `close` is safe (the background repair is stopped and
    /// joined all the same; what the nodes' sync policy has not made durable is up to the OS).
    ///
    /// # Errors
    /// As [`sync`](Cluster::sync).
    pub fn close(mut self) -> Result<()> {
        self.repairer = None;
        self.sync()
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

    /// Installs `next`, publishes its epoch (waking the operations waiting for it, see
    /// `epoch_watch.rs`), and waits until no client operation uses the previous routing.
    pub(crate) fn install(&self, next: Routing) {
        let epoch = next.epoch();
        self.routing.install(next, || self.epochs.publish(epoch));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Before the nodes go: the thread holds the routing table, and with it every node.
        self.repairer = None;
        // Before the directory's lock goes: a renewal must not write after a reopen.
        self.lease.join();
    }
}

/// `e` with its causes, each once: `e`'s own text, then each source whose text it does not
/// already contain.
pub(crate) fn describe(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a cluster whose topology comes from outside is opened with other members than
/// the stored ones (as sets), and no in-process change is stored (that one resumes from the
/// stored rings).
fn reopened_elsewhere(stored: &Meta, opts: &ClusterOptions) -> bool {
    if !opts.external_topology || stored.change.is_some() || opts.initial_nodes.is_empty() {
        return false;
    }
    let mut have: Vec<&str> = stored.members.iter().map(|m| m.id.as_str()).collect();
    let mut want: Vec<&str> = opts.initial_nodes.iter().map(String::as_str).collect();
    have.sort_unstable();
    want.sort_unstable();
    have != want
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
