//! Everything openraft-specific: the type configuration and the storage implementations.
//! Kept in this one module so that an openraft upgrade (0.10 changes these traits) touches
//! only it (membership.md §6).

mod types;

pub use types::{MetaNode, MetaTypes};
