//! The kvstore cluster on the network, speaking the Redis protocol: `redis-cli`,
//! `redis-benchmark` and any Redis client library are kvstore clients.
//!
//! - [`Server`] binds a TCP address and serves a [`kv_cluster::Cluster`]: an accept loop
//!   with a cap on clients (the extra client gets `-ERR max number of clients reached`, as in
//!   Redis), one tokio task per connection, graceful shutdown (stop accepting, finish the
//!   batches in flight, close the connections; the caller then flushes and closes the cluster).
//! - Commands, with Redis 7's replies: `PING`, `ECHO`, `GET`, `SET key value [GET]`, `DEL`,
//!   `UNLINK`, `EXISTS`, `MGET`, `MSET`, `GETDEL`, `STRLEN`, `DBSIZE`, `QUIT`, `RESET`,
//!   `SCAN cursor [MATCH p] [COUNT n] [TYPE t]` (through [`kv_cluster::Cluster::scan`]),
//!   `HELLO [2|3] [AUTH user pass] [SETNAME name]`, `AUTH`, `CLIENT ID|SETNAME|GETNAME|INFO|LIST|SETINFO`,
//!   `SELECT 0`, `COMMAND [INFO|COUNT|DOCS]`, `INFO [section ...]`, `KVSTORE ...` (cluster
//!   administration, the REPL's texts), `CONFIG GET` (what
//!   `redis-benchmark` asks). Unknown commands and wrong arity answer with Redis's exact texts;
//!   `SET` options the store does not support are refused by name, never ignored.
//! - A password ([`ServerOptions::requirepass`]): until a client authenticates, every command
//!   but `AUTH`, `HELLO`, `QUIT` and `RESET` answers `-NOAUTH Authentication required.`, and
//!   its commands are held to Redis's unauthenticated limits (10 arguments of 16 KiB).
//!
//! # The design decision that matters: a pipelined batch is one unit
//!
//! A connection's task decodes *every* complete command already in its read buffer
//! ([`kv_resp::CommandDecoder`], arguments as slices of the buffer), executes them in order,
//! and writes all their replies with one write, as Redis does (mini-redis writes and flushes
//! per frame). The batch runs on the connection's task when none of its commands can hold
//! the thread for long, and on a storage thread (`spawn_blocking`), once for the whole batch,
//! when one can (`may_block` in `commands.rs`): a write under `--sync always` waits for an
//! fsync, `SCAN` and `KVSTORE` walk the store or change the cluster, and those must not hold one of the
//! runtime's workers. Reads never wait for an fsync, and under periodic sync neither do
//! writes (the write that fills a log segment flushes what the last periodic flush left, at
//! most one interval's worth): they run inline, because the hop to a storage thread and back
//! cost more than half the throughput of unpipelined clients (see `BENCHMARKS.md`).
//! Within the batch, consecutive `GET`s become one `get_many` and consecutive `SET`s one
//! `put_many` (one batch per node instead of one round per command).
//!
//! Backpressure: the next batch is not executed, and the socket not read, until the previous
//! replies are written; replies are written early once they pass
//! [`ServerOptions::max_pending_reply_bytes`] (a run of `GET`s that passes it puts its
//! unanswered commands back, to be executed after the write). A client that stops reading its replies stops
//! being read. The read buffer holds at most one incomplete command beyond a batch, bounded by
//! the parser's [`kv_resp::Limits`].
//!
//! Anchors: mini-redis's `server.rs` (semaphore for max clients, shutdown broadcast, one task
//! per connection) and `connection.rs` (the `BytesMut` read buffer); Redis's `networking.c`
//! (whole-batch replies, protocol errors closing the connection) and `server.c` (arity and
//! unknown-command texts).
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use kv_cluster::{Cluster, ClusterOptions};
//! use kv_server::{Server, ServerOptions};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Arc::new(Cluster::open("kvstore-data", ClusterOptions::new())?);
//! let server = Server::bind("127.0.0.1:6379", Arc::clone(&cluster), ServerOptions::new()).await?;
//! println!("ready to accept connections on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! // Every connection is closed: flush and close the store.
//! if let Ok(cluster) = Arc::try_unwrap(cluster) {
//!     cluster.close()?;
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod admin;
mod client_cmd;
mod clients;
mod command_info;
mod commands;
mod connection;
mod docs;
mod error;
mod expire_args;
mod expire_cmd;
mod extension;
mod info;
mod kvstore_cmd;
mod options;
mod scan;
mod server;
mod session;
mod shared;
mod stats;

pub use error::{Error, Result};
pub use extension::KvstoreExtension;
pub use options::{
    DEFAULT_MAX_BATCH, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_PENDING_REPLY_BYTES,
    DEFAULT_SHUTDOWN_GRACE, ServerOptions,
};
pub use server::Server;

/// Compiles the README's example as a doctest, so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
