//! The cluster coordinator: replication, quorum reads and writes, and membership changes that
//! move only the affected keys while clients keep reading and writing.
//!
//! - [`Cluster`] places each key on `rf` nodes of a [`kv_ring::Ring`] (balanced placement,
//!   persisted by its tokens), versions every write with a hybrid logical clock, writes to the
//!   key's replicas and acknowledges after `W`, reads `R` and returns the newest version.
//! - [`Cluster::add_node`] / [`Cluster::remove_node`] redistribute with a
//!   [`kv_ring::transfer_plan`]: only ranges whose replica set changes are copied.
//! - [`Cluster::delete_existing`], [`Cluster::take`] and [`Cluster::swap`] report what the
//!   write replaced, as the replicas saw it when they applied it (Redis's `DEL` count,
//!   `GETDEL`, `SET ... GET`); [`Cluster::key_count`] counts keys from the nodes' counters;
//!   [`Cluster::scan`] reads the key space in token order.
//! - A node is reached through the [`Replica`] trait: [`LocalReplica`] over a storage node in
//!   this process, [`MemoryReplica`] for tests, a remote node later. [`Backend`] opens them.
//!   Every data operation is submitted to all the replicas it needs (`Replica::start_*`)
//!   before any answer is awaited, then answers are collected ([`pending`]) until `R`/`W`, or
//!   until [`ClusterOptions::replica_timeout`]: an in-process replica answers at once, one in
//!   another process does not stall the operation past the deadline.
//!
//! # The design decision: last-writer-wins makes every copy commute
//! The coordinator assigns each write one version; replicas keep the highest version per key
//! and treat an equal one as the same write. So a client write and a streamed copy of the
//! same key can arrive in either order, twice, or after a crash and a restart, and the replica
//! ends up the same. Redistribution is then just "write to both, copy, switch, drop", with no
//! locks against clients, and recovering from a crash mid-change is "do it again".
//!
//! # Membership changes
//! ```text
//!   Stable(old) --plan--> Pending{old, new} --stream--> Committed(new) --cleanup--> Stable(new)
//!                          writes: old ∪ new                 writes, reads: new
//!                          reads:  old                       losers drop ranges
//! ```
//! 1. **Plan**: `transfer_plan(old, new, rf)`: `(range, from, to)` copies and the ranges each
//!    node loses. `cluster.json` records the change (old and new members, phase `streaming`).
//! 2. **Pending**: a routing snapshot with both rings is installed; writes go to the union of
//!    old and new replicas (acknowledged when `W` of each set have them); reads use old. The
//!    coordinator waits until no operation routed by the previous snapshot is still running
//!    (each operation holds its snapshot's `Arc`), so no write can miss the new replica.
//! 3. **Stream**: per `(from, to)` pair, `export` the ranges from the old replica in batches
//!    (default 1000 records, optionally rate limited) and `import` them on the new one, on
//!    [`ClusterOptions::transfer_streams`] streams at once (default 2: each an exporting and
//!    an importing thread, taking stretches of the pairs' ranges); a finished pair is synced
//!    on `to` and recorded in `cluster.json`. Progress goes to a callback after each batch.
//!    A source that fails midway is replaced by *every* other live old replica of its
//!    ranges (newest wins): any single one may have missed a write the source acknowledged.
//! 4. **Commit**: `cluster.json` gets the new ring (phase `cleanup`); the new routing is
//!    installed, the old one drained, and every node *fenced* at the new epoch: replica
//!    operations carry the epoch they were routed with, and a stale one is refused from now
//!    on (in-process the drain already guarantees it; across a network the fence does).
//! 5. **Cleanup**: nodes that lost ranges `drop_ranges` them; a node that left is closed and
//!    its directory deleted ([`Backend::destroy`]); `cluster.json` is marked stable.
//!
//! **Topology from outside.** A node process whose membership is kept by a metadata service
//! (kv-meta, `docs/membership.md`) routes by what it installs instead:
//! [`Cluster::install_topology`] takes each step as a [`Topology`] (rings rebuilt from
//! stored tokens, the metadata epoch, a second write ring during a change: `Pending` reads
//! the old ring, `Mid` the new one, both write both), epochs only rising. Such a cluster
//! refuses `add_node`/`remove_node` ([`Error::ExternalMetadata`]), and an operation a replica
//! refuses as stale waits for the newer topology and is retried once on it, with the same
//! version ([`Error::StaleCoordinator`] if it does not come within the replica timeout).
//!
//! One change runs at a time. `cluster.json` is replaced atomically (temporary file, `fsync`,
//! rename, `fsync` of the directory) at each step, and [`Cluster::open`] rolls a recorded
//! change forward: streaming again is idempotent, and nothing is dropped before the commit,
//! so a crash never costs a key a replica it had.
//!
//! # Failures
//! - **Down nodes.** [`Cluster::fail_node`] cuts a node off (its routed handle refuses every
//!   call with [`Error::NodeDown`]); [`Cluster::crash_node`] also drops it without clean
//!   shutdown. Health (up, or down since when) is in [`Cluster::nodes`] and
//!   [`Cluster::health`]; it is the coordinator's view, in memory: a reopened cluster opens
//!   every member.
//! - **Consistency counts real replicas only.** An operation whose key has fewer than `R` or
//!   `W` replicas up fails at once with [`Error::Unavailable`] (cause [`Error::NodeDown`])
//!   and writes nothing; it never waits. [`Cluster::put_with`] and friends pick a level per
//!   operation (e.g. [`Consistency::One`] while two of three replicas are down). Hinted
//!   writes do not count towards `W` unless the caller asks for it.
//! - **Sloppy quorum, opt in.** [`Cluster::put_sloppy`] / [`Cluster::delete_sloppy`] (or
//!   [`ClusterOptions::sloppy_quorum`] for every write) give each down replica its own
//!   *stand-in*: a distinct live node walking the ring past the key's replicas, which keeps
//!   the write as a hint for it, and that hint counts towards `W` (Dynamo's sloppy quorum).
//!   An acknowledged write is then on `W` distinct live nodes, but stand-ins serve no reads:
//!   until handoff, `R + W > N` no longer implies read-your-writes.
//! - **Hinted handoff.** A write for a down replica is kept, durably, as a *hint* on the next
//!   live node walking the ring past the key's replicas (on a ring with no node beyond them,
//!   a live replica), in `<data-dir>/<holder>/hints/<target>/`: a replica of its own, opened
//!   through the [`Backend`] (a `kv_node::Node` by default), holding the missed writes under
//!   their keys and versions. [`Cluster::recover_node`] reopens the node (a crashed one from
//!   its own directory: WAL recovery first), routes to it again, replays the hint stores held
//!   for it (and those it holds for others) into their targets, syncs, deletes them, then
//!   repairs the node's ranges. LWW makes a replay idempotent and lets it race client writes.
//! - **Digest reads.** A read asks its first replica for the record and the other `R - 1`
//!   only for their version ([`Replica::read_version`]: a storage node answers from its
//!   index, without reading the value out of its log); a replica with a newer version is
//!   then read in full (Cassandra's digest reads).
//! - **Read repair, synchronous.** A read that sees its `R` replicas disagree writes the
//!   newest record (value or tombstone, same version) to the stale ones before it returns.
//! - **Anti-entropy.** [`Cluster::repair`] compares replicas per run of ring ranges with the
//!   same replica set: each builds a Merkle tree over leaf digests (about
//!   [`REPAIR_KEYS_PER_LEAF`] keys a leaf, 16 bytes each), trees are compared top-down, and
//!   only differing leaves are exported, merged newest-wins and imported where stale.
//!   Identical replicas exchange only their roots (see [`RepairSummary`]).
//! - **Maintenance awaits, too.** [`Cluster::catch_up_async`], [`Cluster::repair_async`] and
//!   [`Cluster::hand_off_hints_async`] wait on replicas across the network (through the
//!   maintenance `start_*` forms of [`Replica`]) and for the admin gate without blocking a
//!   worker; the blocking [`Cluster::catch_up`], [`Cluster::repair`] and
//!   [`Cluster::hand_off_hints`] run the same futures on the calling thread.
//! - **Background anti-entropy, opt in.** [`ClusterOptions::background_repair`] starts one
//!   thread that runs the same repair every interval (an interval after the previous round
//!   finished, under the admin lock, so never during a membership change), reports its
//!   rounds in [`Cluster::background_repair`] and [`ClusterStats`], and is stopped (between
//!   replica runs) and joined when the cluster is dropped or closed.
//! - **Tombstones outlive every repair.** A delete is a tombstone, and a storage node purges
//!   one only in compaction, once it is older than `NodeOptions::tombstone_grace` (default 10
//!   days). A replica that missed a delete gets the tombstone from a hint or a repair; if it
//!   came back after the others had purged it, its old value would look newer than nothing
//!   and be copied back. So: **recover or remove a down node, and run a repair, within the
//!   grace period** (as in Cassandra's `gc_grace_seconds`). A node down for longer must be
//!   removed and added again, not recovered.
//! - **Removing a dead node** (Cassandra's `removenode`). [`Cluster::remove_node`] of a down
//!   node streams each of its ranges to the new replica from *every* surviving replica of the
//!   range (newest wins), not from the dead node, so no key loses a replica at its latest
//!   version even if one survivor had missed a write; its directory is then deleted. While
//!   another replica of one of its ranges is down too (or a survivor fails to export), the
//!   removal stops, pending, until that node is back: a single survivor may lack a write.
//! - **Limits.** A membership change that needs a down node as a destination of streamed
//!   ranges, or as one that must drop ranges, stops with the change pending (writes reach old
//!   and new replicas); recover the node and [`Cluster::resume_change`].
//! - **A joiner that cannot be opened** on reopen does not stop [`Cluster::open`]: it is
//!   routed as a down node of the pending ring (writes for it become hints), the change stays
//!   pending with [`Cluster::change_error`] saying why, and [`Cluster::resume_change`] opens
//!   it again, hands its hints off and streams it every range again. Hints held for a member
//!   of either ring of a pending change are never deleted before they are handed off.
//! - **A leaver's hints are handed over.** Before the directory of a node that leaves is
//!   deleted, the hints it holds go to their targets if up (only keys they still replicate),
//!   else into hint stores on the live nodes that would hold them now
//!   ([`ChangeSummary::hints_handed_over`]); hints *for* it go to their keys' replicas now
//!   (as does any hint whose target no longer replicates its key). A leaver that is
//!   down cannot hand anything over: its hints go with it (a strict write was acknowledged
//!   by `W` real replicas besides; a sloppy write that counted the hint is down to `W - 1`
//!   copies, as after any lost replica; repair restores its target).
//!
//! # Versions
//! One hybrid logical clock per cluster ([`Hlc`], over a [`Clock`] that tests can skew)
//! versions every write. `cluster.json` holds a *version lease*, a version above every one the
//! cluster has issued, pushed [`LEASE_WINDOW`] (1 s) ahead whenever the clock reaches it. A
//! reopened cluster never mints below the lease, so a wall clock that went back across a
//! restart cannot make new writes lose to old ones; with other coordinators
//! ([`ClusterOptions::other_coordinators`]) it waits until its wall clock passes the lease
//! ([`Cluster::lease_wait`]) rather than starting its clock ahead of real time.
//!
//! # On disk
//! ```text
//! <data-dir>/cluster.json     members with their ring tokens, rf, vnodes, format version,
//!                             version lease, change in progress
//! <data-dir>/LOCK             held while the cluster is open
//! <data-dir>/<node-id>/wal/   that node's log
//! <data-dir>/<node-id>/hints/<target>/
//!                             hints it holds for down node <target> (a store of its own)
//! ```
//!
//! Learned from: the Dynamo paper (preference lists, `R + W > N`, hinted handoff, Merkle-tree
//! anti-entropy),
//! Cassandra (pending ranges written to during bootstrap, CEP-21's epoch-tagged metadata),
//! and the Redis Cluster and ScyllaDB complaints that rebalancing starves clients (batches and
//! a rate limit).
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
//!
//! let dir = tempfile::tempdir()?;
//! let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
//! let cluster = Cluster::open(dir.path(), opts)?; // node1..node3, rf 3
//! cluster.put(b"user:1001", b"Alice")?;
//!
//! let summary = cluster.add_node("node4")?;
//! println!("moved {} keys in {:?}", summary.keys_moved, summary.elapsed);
//! assert_eq!(cluster.get(b"user:1001")?.as_deref(), Some(&b"Alice"[..]));
//! assert_eq!(cluster.nodes().len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod background;
mod block;
mod catch_up;
mod change;
mod clock;
mod cluster;
mod count;
mod epoch_watch;
mod error;
mod expiry;
mod failure;
mod fence;
mod follow_up;
mod gate;
mod health;
mod hints;
mod key_locks;
mod last_flush;
mod lease;
mod local;
mod maintain;
mod memory;
mod merkle;
mod meta;
mod ops;
mod options;
pub mod pending;
mod progress;
mod rate;
mod read;
mod read_many;
mod repair;
mod replica;
pub mod report;
mod routing;
mod scan;
mod stats;
mod stream;
mod stream_plan;
mod swap;
#[cfg(feature = "testing")]
pub mod testing;
mod topology;
mod write;

pub use backend::Backend;
pub use background::BackgroundRepairStatus;
pub use catch_up::{CatchUpOutcome, CatchUpPhase, CatchUpStatus};
pub use clock::{LEASE_WINDOW, MAX_SKEW};
pub use cluster::Cluster;
pub use count::{ExpiringCount, KeyCount};
pub use error::{Error, Result};
pub use expiry::{Entry, ExpireIf, Expiry, MAX_EXPIRES};
pub use failure::RecoverySummary;
pub use health::Health;
pub use kv_node::Digest;
pub use kv_node::{
    Cell, Clock, Hlc, NodeOptions, Previous, RangeCount, Record, Swapped, SystemClock, Version,
    Versioned, Write,
};
pub use local::{KvNodeBackend, LocalReplica};
pub use memory::{MemoryBackend, MemoryReplica};
pub use options::{
    ClusterOptions, Consistency, DEFAULT_REPLICA_TIMEOUT, DEFAULT_REPLICATION_FACTOR,
    DEFAULT_TRANSFER_BATCH, DEFAULT_TRANSFER_STREAMS, DEFAULT_VNODES, RateLimit,
};
pub use pending::{Collector, Deferred, Next, Started, Ticket};
pub use progress::{ChangeKind, ChangeSummary, PairSummary, Progress};
pub use rate::{BURST, RateLimiter, StreamRate};
pub use repair::{REPAIR_KEYS_PER_LEAF, RepairSummary};
pub use replica::{ExportPage, RecordStream, Replica};
pub use scan::ScanPage;
pub use stats::{ClusterStats, KeyPlacement, NodeInfo, NodeState, NodeStats};
pub use stream_plan::{Source, choose_source, coalesce, survivor_sources};
pub use swap::SWAP_ATTEMPTS;
pub use topology::{RingMember, Topology};

/// The README's example, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
