//! Memory-mapped, segmented, append-only log with CRC32C framing and group commit.
//!
//! Not built yet: see the project's open issues.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
