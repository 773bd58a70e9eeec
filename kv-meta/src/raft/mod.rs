//! Everything openraft-specific: the type configuration and the storage implementations.
//! Kept in this one module so that an openraft upgrade (0.10 changes these traits) touches
//! only it (membership.md §6).

mod machine;
mod mem_log;
pub(crate) mod record;
mod types;
mod wal_log;

pub use machine::{MetaMachine, MetaWatch, SNAPSHOT_FILE};
pub use mem_log::MemLog;
pub use record::{LOG_RECORD_VERSION, LogRecord};
pub use types::{MetaNode, MetaTypes};
pub use wal_log::MetaLog;
