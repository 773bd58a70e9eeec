//! Cluster parameters.

use std::fmt;
use std::sync::Arc;

use crate::backend::Backend;
use crate::local::KvNodeBackend;
use kv_node::{Clock, SystemClock};
use kv_ring::NodeId;

/// How many replicas must answer a read or acknowledge a write.
///
/// With `N` replicas, reads of `R` and writes of `W` with `R + W > N` see every acknowledged
/// write (quorum/quorum, the default, does).
///
/// # Example
/// ```
/// use kv_cluster::Consistency;
///
/// assert_eq!(Consistency::One.required(3), 1);
/// assert_eq!(Consistency::Quorum.required(3), 2);
/// assert_eq!(Consistency::All.required(3), 3);
/// assert_eq!("quorum".parse::<Consistency>(), Ok(Consistency::Quorum));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Consistency {
    /// One replica.
    One,
    /// A majority: `rf / 2 + 1`.
    #[default]
    Quorum,
    /// Every replica.
    All,
}

impl Consistency {
    /// The number of replicas needed out of `rf`.
    pub fn required(self, rf: usize) -> usize {
        match self {
            Consistency::One => 1.min(rf),
            Consistency::Quorum => rf / 2 + 1,
            Consistency::All => rf,
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        })
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            _ => Err(format!("unknown consistency {s:?} (one, quorum or all)")),
        }
    }
}

/// A cap on redistribution streaming, so that it does not starve client traffic.
///
/// # Example
/// ```
/// use kv_cluster::{ClusterOptions, RateLimit};
///
/// let opts = ClusterOptions::new().rate_limit(Some(RateLimit::KeysPerSec(50_000)));
/// assert_eq!(opts.rate_limit_value(), Some(RateLimit::KeysPerSec(50_000)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// At most this many records streamed per second.
    KeysPerSec(u64),
    /// At most this many key and value bytes streamed per second.
    BytesPerSec(u64),
}

/// The default replication factor.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;
/// The default number of virtual nodes per node.
pub const DEFAULT_VNODES: u32 = kv_ring::DEFAULT_VNODES;
/// The default number of records per streamed batch.
pub const DEFAULT_TRANSFER_BATCH: usize = 1000;
/// The default number of copies a membership change streams at once.
pub const DEFAULT_TRANSFER_STREAMS: usize = 2;
/// How long a coordinator waits for a replica's answer by default.
pub const DEFAULT_REPLICA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Parameters of a [`Cluster`](crate::Cluster), with documented defaults.
///
/// The replication factor, virtual node count and initial nodes shape a *new* cluster; an
/// existing one keeps what its `cluster.json` says. Consistency levels, sloppy quorum,
/// background repair, batch size, rate limit, clock and backend apply to each open.
///
/// # Example
/// ```
/// use kv_cluster::{ClusterOptions, Consistency};
///
/// let opts = ClusterOptions::new()
///     .replication_factor(2)
///     .vnodes(16)
///     .initial_nodes(["a", "b", "c"])
///     .read_consistency(Consistency::One)
///     .transfer_batch(500);
/// assert_eq!(opts.replication_factor_value(), 2);
/// ```
#[derive(Clone)]
pub struct ClusterOptions {
    pub(crate) replication_factor: usize,
    pub(crate) vnodes: u32,
    pub(crate) initial_nodes: Vec<String>,
    pub(crate) read: Consistency,
    pub(crate) write: Consistency,
    pub(crate) sloppy: bool,
    pub(crate) background_repair: Option<std::time::Duration>,
    pub(crate) transfer_batch: usize,
    pub(crate) transfer_streams: usize,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) replica_timeout: std::time::Duration,
    pub(crate) coordinator_slot: u8,
    pub(crate) own_hints: Option<NodeId>,
    pub(crate) external_topology: bool,
    pub(crate) other_coordinators: bool,
    pub(crate) renew_lease_in_background: bool,
    pub(crate) drain_on_timer: bool,
    #[cfg(feature = "testing")]
    pub(crate) sabotage: Option<crate::testing::Sabotage>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions::new()
    }
}

impl fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("replication_factor", &self.replication_factor)
            .field("vnodes", &self.vnodes)
            .field("initial_nodes", &self.initial_nodes)
            .field("read", &self.read)
            .field("write", &self.write)
            .field("sloppy", &self.sloppy)
            .field("background_repair", &self.background_repair)
            .field("transfer_batch", &self.transfer_batch)
            .field("transfer_streams", &self.transfer_streams)
            .field("rate_limit", &self.rate_limit)
            .field("backend", &self.backend)
            .field("replica_timeout", &self.replica_timeout)
            .field("coordinator_slot", &self.coordinator_slot)
            .field("own_hints", &self.own_hints)
            .field("external_topology", &self.external_topology)
            .field("other_coordinators", &self.other_coordinators)
            .field("renew_lease_in_background", &self.renew_lease_in_background)
            .field("drain_on_timer", &self.drain_on_timer)
            .finish_non_exhaustive()
    }
}

impl ClusterOptions {
    /// The defaults: replication factor [`DEFAULT_REPLICATION_FACTOR`] (3),
    /// [`DEFAULT_VNODES`] (100) virtual nodes, initial nodes `node1..node3`, quorum reads and
    /// writes with a strict quorum (hints do not count), no background repair,
    /// [`DEFAULT_TRANSFER_BATCH`] (1000) records per streamed batch,
    /// [`DEFAULT_TRANSFER_STREAMS`] (2) copies streaming at once, no rate limit, the system
    /// clock, storage nodes on disk, [`DEFAULT_REPLICA_TIMEOUT`] (1 s) to wait for a replica,
    /// coordinator slot 0 and the membership kept by the cluster itself (no external
    /// topology).
    pub fn new() -> Self {
        ClusterOptions {
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            vnodes: DEFAULT_VNODES,
            initial_nodes: vec!["node1".into(), "node2".into(), "node3".into()],
            read: Consistency::Quorum,
            write: Consistency::Quorum,
            sloppy: false,
            background_repair: None,
            transfer_batch: DEFAULT_TRANSFER_BATCH,
            transfer_streams: DEFAULT_TRANSFER_STREAMS,
            rate_limit: None,
            clock: Arc::new(SystemClock),
            backend: Arc::new(KvNodeBackend::new(kv_node::NodeOptions::new())),
            replica_timeout: DEFAULT_REPLICA_TIMEOUT,
            coordinator_slot: 0,
            own_hints: None,
            external_topology: false,
            other_coordinators: false,
            renew_lease_in_background: true,
            drain_on_timer: false,
            #[cfg(feature = "testing")]
            sabotage: None,
        }
    }

    /// Sets the replication factor of a new cluster (1..=number of nodes).
    pub fn replication_factor(mut self, rf: usize) -> Self {
        self.replication_factor = rf;
        self
    }

    /// Sets the virtual nodes per node of a new cluster (1..=[`kv_ring::MAX_VNODES`]).
    pub fn vnodes(mut self, vnodes: u32) -> Self {
        self.vnodes = vnodes;
        self
    }

    /// Sets the nodes a new cluster starts with.
    pub fn initial_nodes<I>(mut self, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.initial_nodes = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the read and write consistency together.
    pub fn consistency(self, c: Consistency) -> Self {
        self.read_consistency(c).write_consistency(c)
    }

    /// Sets the read consistency.
    pub fn read_consistency(mut self, c: Consistency) -> Self {
        self.read = c;
        self
    }

    /// Sets the write consistency.
    pub fn write_consistency(mut self, c: Consistency) -> Self {
        self.write = c;
        self
    }

    /// Makes writes that do not name their own mode ([`put`](crate::Cluster::put),
    /// [`put_with`](crate::Cluster::put_with), [`put_many`](crate::Cluster::put_many),
    /// [`delete`](crate::Cluster::delete), ...) use a *sloppy quorum* (default `false`:
    /// strict): a hint stored for a down replica on a live node outside the key's replicas
    /// counts towards `W`, as in Dynamo. See [`Cluster::put_sloppy`](crate::Cluster::put_sloppy)
    /// for what it guarantees and what it gives up.
    ///
    /// # Example
    /// ```
    /// use kv_cluster::ClusterOptions;
    ///
    /// assert!(!ClusterOptions::new().sloppy_quorum_value());
    /// assert!(ClusterOptions::new().sloppy_quorum(true).sloppy_quorum_value());
    /// ```
    pub fn sloppy_quorum(mut self, sloppy: bool) -> Self {
        self.sloppy = sloppy;
        self
    }

    /// Whether writes use a sloppy quorum by default.
    pub fn sloppy_quorum_value(&self) -> bool {
        self.sloppy
    }

    /// Runs anti-entropy in the background every `interval` (`None`, the default: only on
    /// demand, with [`Cluster::repair`](crate::Cluster::repair)). One thread runs a round
    /// (all of [`repair`](crate::Cluster::repair)'s work) `interval` after the cluster opens
    /// and then `interval` after each round finishes; it is stopped and joined when the
    /// cluster is dropped or closed. See
    /// [`Cluster::background_repair`](crate::Cluster::background_repair) for its reports.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use kv_cluster::ClusterOptions;
    ///
    /// let opts = ClusterOptions::new().background_repair(Some(Duration::from_secs(600)));
    /// assert_eq!(opts.background_repair_value(), Some(Duration::from_secs(600)));
    /// ```
    pub fn background_repair(mut self, interval: Option<std::time::Duration>) -> Self {
        self.background_repair = interval;
        self
    }

    /// The background repair interval, if enabled.
    pub fn background_repair_value(&self) -> Option<std::time::Duration> {
        self.background_repair
    }

    /// Sets the number of records per streamed batch (at least 1). Smaller batches let client
    /// operations interleave more finely with a redistribution.
    pub fn transfer_batch(mut self, records: usize) -> Self {
        self.transfer_batch = records.max(1);
        self
    }

    /// Sets how many copies a membership change streams at once (at least 1). Each stream is
    /// an exporting thread on the source and an importing one on the destination; the
    /// change's ranges are dealt to the streams in stretches. More streams finish a change
    /// sooner while cores are free, and take more of them from client operations; a
    /// [`rate_limit`](ClusterOptions::rate_limit) caps all streams together.
    pub fn transfer_streams(mut self, streams: usize) -> Self {
        self.transfer_streams = streams.max(1);
        self
    }

    /// Caps redistribution streaming (`None`: as fast as the nodes go).
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Sets the wall clock under the hybrid logical clock that versions writes (tests skew it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the options every storage node is opened with (cache size, sync policy, ...);
    /// shorthand for a [`KvNodeBackend`] [`backend`](ClusterOptions::backend).
    pub fn node_options(self, options: kv_node::NodeOptions) -> Self {
        self.backend(Arc::new(KvNodeBackend::new(options)))
    }

    /// Sets how member nodes are opened.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = backend;
        self
    }

    /// The replication factor for a new cluster.
    pub fn replication_factor_value(&self) -> usize {
        self.replication_factor
    }

    /// The rate limit.
    pub fn rate_limit_value(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// Sets how long an operation waits for a replica that answers later (one in another
    /// process): past it, the replica counts as failed with
    /// [`Error::Timeout`](crate::Error::Timeout) (a write keeps a hint for it), and an
    /// operation that could not reach its consistency level in time fails with
    /// [`Error::Unavailable`](crate::Error::Unavailable). A read that has to ask another
    /// replica after one failed waits up to this long again for it. In-process replicas
    /// answer at once, so it never applies to them.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use kv_cluster::ClusterOptions;
    ///
    /// let opts = ClusterOptions::new().replica_timeout(Duration::from_millis(250));
    /// assert_eq!(opts.replica_timeout_value(), Duration::from_millis(250));
    /// ```
    pub fn replica_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.replica_timeout = timeout;
        self
    }

    /// How long an operation waits for a replica.
    pub fn replica_timeout_value(&self) -> std::time::Duration {
        self.replica_timeout
    }

    /// Sets this coordinator's slot (below [`kv_node::MAX_SLOTS`], 64): the low bits of every
    /// version it mints ([`kv_node::Hlc::with_slot`]), so that coordinators with different
    /// slots never mint the same version, even within one millisecond. Every coordinator of
    /// a cluster needs its own; [`Cluster::open`](crate::Cluster::open) refuses a slot out of
    /// range with [`Error::InvalidOptions`](crate::Error::InvalidOptions).
    ///
    /// # Example
    /// ```
    /// use kv_cluster::ClusterOptions;
    ///
    /// assert_eq!(ClusterOptions::new().coordinator_slot_value(), 0);
    /// assert_eq!(ClusterOptions::new().coordinator_slot(3).coordinator_slot_value(), 3);
    /// ```
    pub fn coordinator_slot(mut self, slot: u8) -> Self {
        self.coordinator_slot = slot;
        self
    }

    /// This coordinator's slot.
    pub fn coordinator_slot_value(&self) -> u8 {
        self.coordinator_slot
    }

    /// Every hint this coordinator keeps is held by node `me`, itself: a node process, whose
    /// hint stores are on its own disk whichever node they are named for. Without it a hint
    /// is held by a live node walking the ring past the key's replicas (in one process every
    /// node's stores share the disk), and the handoff waits for that node to be up, which in
    /// a node process could keep a hint from a returned target while an unrelated node is
    /// down. A sloppy quorum (whose stand-ins must be other nodes) cannot be combined with it:
    /// [`Cluster::open`](crate::Cluster::open) refuses both with
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions).
    ///
    /// # Example
    /// ```
    /// use kv_cluster::ClusterOptions;
    ///
    /// let me: kv_ring::NodeId = "n1".parse()?;
    /// assert_eq!(ClusterOptions::new().own_hints(me.clone()).own_hints_value(), Some(&me));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn own_hints(mut self, me: NodeId) -> Self {
        self.own_hints = Some(me);
        self
    }

    /// The node holding every hint, if set ([`own_hints`](ClusterOptions::own_hints)).
    pub fn own_hints_value(&self) -> Option<&NodeId> {
        self.own_hints.as_ref()
    }

    /// Whether the membership comes from outside (default `false`): a node process whose
    /// metadata service (kv-meta, `docs/membership.md`) installs each routing step with
    /// [`Cluster::install_topology`](crate::Cluster::install_topology). Such a cluster
    /// refuses [`Cluster::add_node`](crate::Cluster::add_node) and
    /// [`remove_node`](crate::Cluster::remove_node)
    /// ([`Error::ExternalMetadata`](crate::Error::ExternalMetadata)), and a client operation
    /// that a replica refuses as stale ([`Error::StaleEpoch`](crate::Error::StaleEpoch))
    /// waits (up to [`replica_timeout`](ClusterOptions::replica_timeout)) for the newer
    /// topology and is retried once on it. The first `install_topology` turns this on for
    /// the open cluster whatever the option says.
    ///
    /// # Example
    /// ```
    /// use kv_cluster::ClusterOptions;
    ///
    /// assert!(!ClusterOptions::new().external_topology_value());
    /// assert!(ClusterOptions::new().external_topology(true).external_topology_value());
    /// ```
    pub fn external_topology(mut self, external: bool) -> Self {
        self.external_topology = external;
        self
    }

    /// Whether the membership comes from outside
    /// ([`external_topology`](ClusterOptions::external_topology)).
    pub fn external_topology_value(&self) -> bool {
        self.external_topology
    }

    /// Whether other coordinators (other processes, each with its own
    /// [`coordinator_slot`](ClusterOptions::coordinator_slot)) mint versions for the same
    /// data. Default `false` (the in-process cluster is the only coordinator). A node process
    /// sets it and awaits [`Cluster::lease_wait`](crate::Cluster::lease_wait) before it serves
    /// clients; one that sets it without waiting has writes refused for up to a second after
    /// a quick restart.
    ///
    /// It decides what a reopened coordinator does while its wall clock has not yet passed
    /// the version lease its previous run persisted (`docs/design.md`, versions):
    /// - `true`: it *waits*. [`Cluster::open`](crate::Cluster::open) does not sleep; writes
    ///   are refused with [`Error::LeaseWait`](crate::Error::LeaseWait) until the clock passes
    ///   the lease (at most the lease window plus [`MAX_SKEW`](crate::MAX_SKEW)), and
    ///   [`Cluster::lease_wait`](crate::Cluster::lease_wait) says how long that is, for the
    ///   caller to wait before serving clients. Its versions never run ahead of real time
    ///   because it restarted, so its writes never beat later writes made elsewhere.
    /// - `false`: it starts its clock at the lease (up to a lease window ahead of the wall
    ///   clock). Harmless when nobody else mints versions, and no reopen waits.
    ///
    /// Either way a wall clock that stepped back by more than that bound starts the clock at
    /// the lease ([`Cluster::lease_jumps`](crate::Cluster::lease_jumps) counts it): new
    /// versions stay above every old one.
    ///
    /// # Example
    /// ```
    /// use kv_cluster::ClusterOptions;
    ///
    /// assert!(!ClusterOptions::new().other_coordinators_value());
    /// assert!(ClusterOptions::new().other_coordinators(true).other_coordinators_value());
    /// ```
    pub fn other_coordinators(mut self, others: bool) -> Self {
        self.other_coordinators = others;
        self
    }

    /// Whether other coordinators mint versions too
    /// ([`other_coordinators`](ClusterOptions::other_coordinators)).
    pub fn other_coordinators_value(&self) -> bool {
        self.other_coordinators
    }

    /// Whether the persisted version lease is renewed on a short-lived thread half a lease
    /// window before writes reach it (`true`, the default: a write waits for the
    /// `cluster.json` write and its `fsync`s only if a renewal has not landed in half a
    /// window), or by the write that reaches it (`false`: one write per window waits, which a
    /// deterministic simulation wants, since a thread's timing is not simulated).
    ///
    /// # Example
    /// ```
    /// use kv_cluster::ClusterOptions;
    ///
    /// assert!(ClusterOptions::new().renew_lease_in_background_value());
    /// let sim = ClusterOptions::new().renew_lease_in_background(false);
    /// assert!(!sim.renew_lease_in_background_value());
    /// ```
    pub fn renew_lease_in_background(mut self, background: bool) -> Self {
        self.renew_lease_in_background = background;
        self
    }

    /// Whether the version lease is renewed in the background
    /// ([`renew_lease_in_background`](ClusterOptions::renew_lease_in_background)).
    pub fn renew_lease_in_background_value(&self) -> bool {
        self.renew_lease_in_background
    }

    /// Whether [`install_topology_async`](crate::Cluster::install_topology_async) waits for
    /// the old routing's operations on the timer of the runtime it runs on (a look every
    /// millisecond, holding no reference to the old routing) instead of handing the wait to
    /// a short-lived thread. Default `false`.
    ///
    /// For a deterministic simulation (kv-sim on turmoil, whose hosts' clocks are their
    /// runtimes' paused timers): a thread ends the wait, and drops the old routing, at a
    /// moment the machine decides, so two runs of one seed would differ. An install polled
    /// on a runtime must then have the runtime's time driver enabled (tokio panics on a
    /// timer without one); outside a runtime (the blocking
    /// [`install_topology`](crate::Cluster::install_topology)) the thread is used as
    /// before. A real process keeps the default.
    ///
    /// # Example
    /// ```
    /// use kv_cluster::ClusterOptions;
    ///
    /// assert!(!ClusterOptions::new().drain_on_timer_value());
    /// assert!(ClusterOptions::new().drain_on_timer(true).drain_on_timer_value());
    /// ```
    pub fn drain_on_timer(mut self, on_timer: bool) -> Self {
        self.drain_on_timer = on_timer;
        self
    }

    /// Whether installs drain on the runtime's timer
    /// ([`drain_on_timer`](ClusterOptions::drain_on_timer)).
    pub fn drain_on_timer_value(&self) -> bool {
        self.drain_on_timer
    }

    /// Breaks a mechanism on purpose (feature `testing` only): see
    /// [`Sabotage`](crate::testing::Sabotage). Default: none.
    ///
    /// # Example
    /// ```
    /// use kv_cluster::ClusterOptions;
    /// use kv_cluster::testing::Sabotage;
    ///
    /// let opts = ClusterOptions::new().sabotage(Some(Sabotage::SkipPendingDualWrite));
    /// assert_eq!(opts.sabotage_value(), Some(Sabotage::SkipPendingDualWrite));
    /// ```
    #[cfg(feature = "testing")]
    pub fn sabotage(mut self, sabotage: Option<crate::testing::Sabotage>) -> Self {
        self.sabotage = sabotage;
        self
    }

    /// The sabotage set, if any (feature `testing` only).
    #[cfg(feature = "testing")]
    pub fn sabotage_value(&self) -> Option<crate::testing::Sabotage> {
        self.sabotage
    }
}
