//! kv-meta: the cluster metadata that every node of a kvstore cluster agrees on, as a raft
//! state machine, and the storage openraft needs for it.
//!
//! What it **is**: [`ClusterMeta`] (members and their addresses, raft ids and coordinator
//! slots, ring tokens, the ring epoch, the change in progress with its stream plan and
//! recorded progress), the [`Command`]s that change it and the pure
//! [`ClusterMeta::apply`] that validates and applies them; the versioned snapshot format
//! ([`MetaSnapshot`]); and openraft 0.9's storage-v2 implementations over it (see the `raft`
//! types re-exported below).
//!
//! It also runs the raft between nodes: the meta protocol ([`MetaRequest`], [`MetaReply`]),
//! [`MetaNetwork`] (openraft's network over a [`MetaTransport`] the node provides),
//! [`MetaService`] (answers other nodes' bodies) and [`MetaRaft`], one node's raft with
//! bootstrap, join, proposals and read-index from any node (forwarded to the leader), and the
//! voter reconciler.
//!
//! What it is **not** (yet): the change driver, the barriers and the streaming (membership.md
//! §3, step 8); the node process's use of the metadata is kv-cli's (step 7). It depends on no
//! transport and not on kv-cluster: mapping a `cluster.json` into a `ClusterMeta` belongs to
//! the crate that reads both, and kv-remote's `MetaClient` and `ReplicaServer` plug into
//! [`MetaTransport`] and [`MetaService`] in the node.
//!
//! # The design decision that matters
//!
//! `apply` is a pure function of the state and the command (no clock, no randomness, no
//! I/O), and **validates every command against the state** before touching it: a command
//! proposed twice, or by a leader deposed meanwhile, is committed like any other and then
//! refused with a typed [`MetaError`] on every node alike, never applied twice. Rings are
//! stored as tokens and rebuilt with kv-ring, never recomputed: a balanced ring depends on
//! the order of past changes.
//!
//! Anchors: openraft's `examples/raft-kv-memstore` (the storage shape), Cassandra's
//! transactional cluster metadata (CEP-21: epochs and the change steps).
//!
//! # Example
//!
//! ```
//! use kv_meta::{ClusterMeta, Command, MetaResponse, NewMember};
//!
//! let mut meta = ClusterMeta::default();
//! let members = (1..=3)
//!     .map(|i| NewMember {
//!         id: format!("n{i}"),
//!         cluster_addr: format!("127.0.0.1:700{i}"),
//!         client_addr: format!("127.0.0.1:637{i}"),
//!         weight: 1.0,
//!         tokens: vec![i * 1000, i * 1000 + 1],
//!     })
//!     .collect();
//! let cmd = Command::Bootstrap { uuid: 42, name: "demo".into(), rf: 3, vnodes: 2, members };
//! assert_eq!(meta.apply(1, &cmd), MetaResponse::Ok { epoch: 1 });
//!
//! let join = Command::Register {
//!     id: "n4".into(),
//!     cluster_addr: "127.0.0.1:7004".into(),
//!     client_addr: "127.0.0.1:6374".into(),
//! };
//! assert!(meta.apply(2, &join).is_ok());
//! assert_eq!((meta.members["n4"].raft_id, meta.members["n4"].slot), (4, 3));
//! assert!(meta.check_invariants().is_ok());
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod apply;
mod change;
mod command;
mod error;
mod plan;
mod protocol;
mod raft;
mod snapshot;
mod state;

pub use change::{Change, ChangeKind, Source, Step, StreamTask};
pub use command::{Command, MetaResponse, NewMember};
pub use error::{Error, MetaError, Result};
pub use plan::{MovedRanges, moved_ranges, plan_change};
pub use protocol::{
    MAX_META_BODY, META_PROTOCOL_VERSION, META_REQUEST_ENVELOPE, MetaReply, MetaRequest,
    MetaStatus, request_cluster_uuid,
};
pub use raft::{
    BoxFuture, FORWARD_WINDOW, JOINED_FILE, JoinRequest, Joined, KvRng, KvRuntime,
    LOG_RECORD_VERSION, Liveness, LogRecord, MAX_FORWARD_HOPS, MAX_VOTERS, MemLog, MetaConnection,
    MetaLog, MetaMachine, MetaNetwork, MetaNode, MetaPeer, MetaRaft, MetaService, MetaTransport,
    MetaTypes, MetaWatch, SNAPSHOT_FILE, TransportError, VoterStep, meta_config, seed_raft_rng,
    voter_target,
};
pub use snapshot::{MAX_SNAPSHOT_LEN, MetaSnapshot, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
pub use state::{ClusterMeta, MAX_MEMBERS, Member, MemberState, RateLimit, RingMember};

/// The README's example, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
