//! Concurrent LRU cache whose reads take no lock (crossbeam-epoch).
//!
//! Not built yet: see the project's open issues.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
