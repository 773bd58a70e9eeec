//! Waiting on replicas in the maintenance paths (hint handoff, repair, catch-up).
//!
//! Lock order: none taken here; the callers hold the admin gate (`gate.rs`), never a
//! `std`/`parking_lot` guard across these awaits.
//!
//! Each helper submits with a `start_*` method of [`Replica`] and awaits the answer through a
//! [`Collector`]: an in-process replica answers inside `start_*` (ready at the first poll), a
//! replica across the network completes its ticket from the transport. The wait has no
//! deadline of its own ([`Collector::wait_answer`]): a networked replica times maintenance
//! requests out itself, as the blocking methods always did. The blocking API runs the same
//! futures with [`block_on`](crate::block::block_on) (*one algorithm, two ways to wait*).

use kv_node::{RangeCount, Record};
use kv_ring::TokenRange;

use crate::error::{Error, Result};
use crate::pending::{Collector, Started, Ticket};
use crate::replica::{ExportPage, Replica};

/// One replica's answer to the request `start` submits.
pub(crate) async fn ask<T>(start: impl for<'c> FnOnce(Ticket<'c, T>) -> Started<T>) -> Result<T> {
    let c = Collector::new();
    match start(c.ticket(0)) {
        Started::Done(r) => r,
        Started::Deferred => match c.wait_answer().await {
            Some((_, r)) => r,
            // Answered `Deferred` without deferring its ticket: nothing will come.
            None => Err(Error::Dropped),
        },
    }
}

/// The answers of `n` replicas, in order, each asked by `start` with its ticket (the ticket's
/// [`index`](Ticket::index) says which): every request is submitted before any is awaited,
/// so the replicas work at once.
pub(crate) async fn ask_each<T>(
    n: usize,
    mut start: impl for<'c> FnMut(Ticket<'c, T>) -> Started<T>,
) -> Vec<Result<T>> {
    let c = Collector::new();
    let mut out: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
    for (i, slot) in out.iter_mut().enumerate() {
        if let Started::Done(r) = start(c.ticket(i)) {
            *slot = Some(r);
        }
    }
    while let Some((i, r)) = c.wait_answer().await {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or(Err(Error::Dropped)))
        .collect()
}

/// `node`'s counters ([`Replica::held`]).
pub(crate) async fn held(node: &dyn Replica) -> Result<RangeCount> {
    ask(|t| node.start_held(t)).await
}

/// Every record `node` holds in `ranges`, page by page ([`Replica::start_export_page`]);
/// a session left open by an error is ended.
pub(crate) async fn export_all(
    node: &dyn Replica,
    epoch: u64,
    ranges: &[TokenRange],
    batch: usize,
) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut session = None;
    loop {
        let page: Result<ExportPage> =
            ask(|t| node.start_export_page(epoch, ranges, batch, session, t)).await;
        match page {
            Ok(page) => {
                records.extend(page.records);
                match page.more {
                    Some(s) => session = Some(s),
                    None => return Ok(records),
                }
            }
            Err(e) => {
                if let Some(s) = session {
                    node.end_export(s);
                }
                return Err(e);
            }
        }
    }
}

/// Imports `batch` into `node` ([`Replica::import`]); returns how many records changed it.
pub(crate) async fn import(node: &dyn Replica, epoch: u64, batch: &[Record]) -> Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    ask(|t| node.start_import(epoch, batch, t)).await
}

/// Makes `node`'s writes durable ([`Replica::sync`]).
pub(crate) async fn sync(node: &dyn Replica) -> Result<()> {
    ask(|t| node.start_sync(t)).await
}
