//! The command line.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use kv_cluster::Consistency;

/// A distributed key-value store: a guided demo (default) or an interactive REPL.
#[derive(Parser, Debug, Clone)]
#[command(name = "kvstore", version, about, long_about = None)]
pub struct Args {
    /// Open the interactive REPL instead of running the demo (reads commands from stdin when
    /// it is not a terminal).
    #[arg(long)]
    pub interactive: bool,

    /// Where the cluster keeps its data. The REPL defaults to ./kvstore-data; the demo to a
    /// fresh temporary directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Nodes of a new cluster (node1..nodeN) [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub nodes: Option<u32>,

    /// Replication factor of a new cluster [default: 3]
    #[arg(long, value_name = "RF", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub replication: Option<u32>,

    /// Virtual nodes per node of a new cluster [default: 100]
    #[arg(long, value_name = "V", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub vnodes: Option<u32>,

    /// Cache entries per node.
    #[arg(long, value_name = "C", default_value_t = 1000)]
    pub cache_capacity: u64,

    /// When the write-ahead logs are flushed to disk.
    #[arg(long, value_enum, default_value_t = SyncMode::Periodic)]
    pub sync: SyncMode,

    /// Replicas that must answer a read: one, quorum or all.
    #[arg(long, value_name = "LEVEL", default_value = "quorum")]
    pub read_consistency: Consistency,

    /// Replicas that must acknowledge a write: one, quorum or all.
    #[arg(long, value_name = "LEVEL", default_value = "quorum")]
    pub write_consistency: Consistency,

    /// Sloppy quorum (as Dynamo): while replicas are down, a hint kept for one on another
    /// live node counts towards the write consistency level.
    #[arg(long)]
    pub sloppy_quorum: bool,

    /// Run anti-entropy repair in the background, this many seconds after the last round.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
    pub repair_interval: Option<u64>,

    /// A smaller demo (for tests).
    #[arg(long, hide = true)]
    pub quick: bool,
}

/// `--sync`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every write is on disk before it is acknowledged (group commit).
    Always,
    /// Flushed every second in the background (a crash of the process loses nothing).
    Periodic,
    /// The operating system decides.
    Never,
}

impl SyncMode {
    /// The log's policy.
    pub fn policy(self) -> kv_wal::SyncPolicy {
        match self {
            SyncMode::Always => kv_wal::SyncPolicy::Always,
            SyncMode::Periodic => kv_wal::SyncPolicy::Periodic(std::time::Duration::from_secs(1)),
            SyncMode::Never => kv_wal::SyncPolicy::Never,
        }
    }
}

/// Defaults for a new cluster.
pub const DEFAULT_NODES: u32 = 3;
/// Default replication factor.
pub const DEFAULT_RF: u32 = 3;
/// Default virtual nodes per node.
pub const DEFAULT_VNODES: u32 = 100;
