//! A consistent-hash ring with virtual nodes: where each key lives, and what must move when the
//! membership changes.
//!
//! - [`token()`] maps a key to its position on the ring (`xxh3_64`, part of kvstore's on-disk
//!   contract).
//! - [`Ring`] is an immutable membership snapshot: each node has `vnodes` virtual nodes (default
//!   100, optionally weighted); [`Ring::preference_list`] gives a token's replicas, the first `rf`
//!   *distinct* nodes clockwise; [`Ring::ownership`] the share of the token space each node holds.
//! - [`transfer_plan`] diffs two rings into `(range, from, to)` copies and the ranges to drop
//!   afterwards, touching only ranges whose replica set changed.
//!
//! # The design decision: rings are values
//! Adding or removing a node returns a *new* ring with the next epoch; nothing is mutated. A
//! coordinator swaps the current `Ring` (an `Arc` inside, so a clone is one increment) while
//! readers finish lookups on the snapshot they hold, and a redistribution keeps both the old and
//! the new ring in hand to plan and route dual writes.
//!
//! Two placements: [`Placement::Random`] derives every virtual node position from the node id, so
//! the ring is a pure function of its membership (busiest node ~1.1-1.2x the mean at 100 vnodes);
//! [`Placement::Balanced`] deals out equal fixed partitions with distinct replica windows, so
//! every node holds its share counting all replicas to within 1% at 100 vnodes, and is persisted
//! by its tokens. Both move only what a join or leave must move.
//!
//! Learned from: the Dynamo paper (virtual nodes, preference lists that skip repeated physical
//! nodes, strategy 3's equal fixed partitions), Riak (a claim that keeps a node's partitions
//! `n_val` apart), Cassandra (`(previous, token]` ownership; not its replication-aware token
//! allocator, which cannot undo the skew of earlier joins, see `balanced.rs`; epoch-numbered
//! cluster metadata from CEP-21).
//!
//! # Example
//! ```
//! use kv_ring::{Placement, Ring, RingOptions, transfer_plan};
//!
//! let options = RingOptions::default().placement(Placement::Balanced { replication_factor: 3 });
//! let ring = Ring::with_nodes(options, ["node1", "node2", "node3", "node4"])?;
//!
//! let replicas = ring.replicas_for_key(b"user:1001", 3)?;
//! println!("user:1001 lives on {:?}", replicas);
//!
//! let grown = ring.add_node("node5")?;
//! let plan = transfer_plan(&ring, &grown, 3)?;
//! for t in &plan.transfers {
//!     assert_eq!(t.to.as_str(), "node5");
//!     assert!(ring.preference_list(t.range.end, 3)?.contains(t.from.as_str()));
//! }
//! # Ok::<(), kv_ring::Error>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod balanced;
mod error;
mod node_id;
mod options;
mod plan;
mod replicas;
mod ring;
mod token;

pub use error::{Error, Result};
pub use node_id::{MAX_NODE_ID_LEN, NodeId};
pub use options::{DEFAULT_VNODES, MAX_VNODES, Placement, RingOptions};
pub use plan::{Cleanup, Transfer, TransferPlan, transfer_plan};
pub use replicas::Replicas;
pub use ring::{Ownership, Ring, VnodeRange};
pub use token::{TokenRange, token};

/// The README's example, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
