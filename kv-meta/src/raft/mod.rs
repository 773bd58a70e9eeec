//! Everything openraft-specific: the type configuration and the storage implementations.
//! Kept in this one module so that an openraft upgrade (0.10 changes these traits) touches
//! only it (membership.md §6).

mod machine;
mod mem_log;
mod network;
pub(crate) mod record;
mod runner;
mod runtime;
mod service;
mod types;
mod voters;
mod wal_log;

pub use machine::{MetaMachine, MetaWatch, SNAPSHOT_FILE};
pub use mem_log::MemLog;
pub use network::{
    BoxFuture, MetaConnection, MetaNetwork, MetaPeer, MetaTransport, TransportError,
};
pub use record::{LOG_RECORD_VERSION, LogRecord};
pub use runner::{
    FORWARD_WINDOW, JOINED_FILE, JoinRequest, Joined, MAX_FORWARD_HOPS, MAX_VOTERS, MetaRaft,
    meta_config,
};
pub use runtime::{KvRng, KvRuntime, seed_raft_rng};
pub use service::MetaService;
pub use types::{MetaNode, MetaTypes};
pub use voters::{Liveness, VoterStep, voter_target};
pub use wal_log::MetaLog;
