//! The cluster coordinator: replication, quorum reads and writes, smart redistribution.
//!
//! Not built yet: see the project's open issues.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
