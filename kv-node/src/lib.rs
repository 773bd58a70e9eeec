//! One storage node: a log-structured hash table (Bitcask-style) on kv-wal, fronted by kv-cache.
//!
//! Not built yet: see the project's open issues.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
