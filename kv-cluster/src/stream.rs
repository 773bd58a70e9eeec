//! Moving data between replicas: the copy pipeline, cleanup, and pacing.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::mpsc;

use kv_node::Record;
use kv_ring::{NodeId, Ring, TokenRange, TransferPlan};

use crate::error::{Error, Result};
use crate::replica::Replica;
use crate::routing::NodeMap;
pub(crate) use crate::stream_plan::coalesce;

/// Batches exported ahead of the importer: enough to keep both sides busy, few enough to
/// bound memory (`transfer_batch` records each).
const PIPELINE_DEPTH: usize = 4;

/// Which side of a copy failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// Exporting from the source failed: the other replicas of the data serve instead.
    Source(Error),
    /// Importing into the destination failed: the copy cannot go on.
    Destination(Error),
}

/// One destination's copy during a membership change: what it copies from (the old ring's
/// replicas, by handle), where to, and how. Its methods pick the sources.
pub(crate) struct Transfer<'a> {
    /// The ring the data is copied out of.
    pub(crate) old: &'a Ring,
    /// The replication factor.
    pub(crate) rf: usize,
    /// Handles of every member of either ring.
    pub(crate) nodes: &'a NodeMap,
    /// The node that receives the copy.
    pub(crate) dst: &'a dyn Replica,
    /// The epoch every call is tagged with.
    pub(crate) epoch: u64,
    /// Records per batch.
    pub(crate) batch_size: usize,
}

impl Transfer<'_> {
    /// Copies `ranges` to the destination from `from`, a live old replica of them. If `from`
    /// fails midway, each part of the ranges (a stretch between two of the old ring's
    /// tokens, where the replica set is constant) is copied again from **every** other old
    /// replica of the part, as [`copy_from_survivors`](Transfer::copy_from_survivors) does for a dead
    /// source: the one that failed may have acknowledged writes that some other replica
    /// missed, and only the union of the others is sure to hold each of them. Copying a part
    /// again after a partial copy is harmless (last-writer-wins).
    ///
    /// Returns `Break` if `on_batch` stopped the copy.
    ///
    /// # Errors
    /// The destination's error; `from`'s error if some part has no other old replica;
    /// [`Error::NodeDown`] if another old replica of a part is down; the error of another
    /// replica that fails too.
    pub(crate) fn copy_from_live(
        &self,
        from: &NodeId,
        ranges: &[TokenRange],
        on_batch: &mut dyn FnMut(&[Record]) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let outcome = match self.nodes.get(from) {
            Some(src) => copy_ranges(
                src.as_ref(),
                self.dst,
                self.epoch,
                ranges,
                self.batch_size,
                on_batch,
            ),
            None => Err(CopyError::Source(Error::UnknownNode {
                node: from.to_string(),
            })),
        };
        match outcome {
            Ok(flow) => Ok(flow),
            Err(CopyError::Destination(e)) => Err(e),
            Err(CopyError::Source(e)) => {
                self.copy_from_all_but(std::slice::from_ref(from), e, ranges, on_batch)
            }
        }
    }

    /// Copies `ranges`, which the down node `down` should have been the source of, to the
    /// destination from **every** other old replica of each part: a single survivor may have
    /// missed the last write of a key that the down node and another survivor acknowledged,
    /// and last-writer-wins makes the union the newest version any of them holds. So a
    /// removed dead node costs no key a replica at its latest version (Cassandra's
    /// `removenode` streams from one replica and asks for a repair); while another replica of
    /// a part is down too, the copy waits for it.
    ///
    /// Returns `Break` if `on_batch` stopped the copy.
    ///
    /// # Errors
    /// [`Error::NodeDown`] (the down node) if some part has no old replica besides it and the
    /// destination; [`Error::NodeDown`] naming another old replica of a part that is down, or
    /// the error of a survivor that fails (either way the union would be incomplete); the
    /// destination's error.
    pub(crate) fn copy_from_survivors(
        &self,
        down: &NodeId,
        ranges: &[TokenRange],
        on_batch: &mut dyn FnMut(&[Record]) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let cause = Error::NodeDown { node: down.clone() };
        self.copy_from_all_but(std::slice::from_ref(down), cause, ranges, on_batch)
    }

    /// Copies each part of `ranges` to the destination from every old replica of the part
    /// except `excluded` (a source that is down or failed) and the destination. Fails with
    /// `cause` if some part has no such replica, with [`Error::NodeDown`] if one of them is
    /// down, and with a source's error if one of them fails: without it the union may lack a
    /// write that only it and an excluded replica acknowledged, so the copy would not be
    /// complete (the change stays pending and is retried once it is back).
    fn copy_from_all_but(
        &self,
        excluded: &[NodeId],
        cause: Error,
        ranges: &[TokenRange],
        on_batch: &mut dyn FnMut(&[Record]) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        // Another replica down: it may hold a write that only it and an excluded one
        // acknowledged, so the copy waits for it.
        let by_source = crate::stream_plan::survivor_sources(
            self.old,
            self.rf,
            ranges,
            excluded,
            self.dst.id(),
            |id| self.nodes.get(id).is_some_and(|n| !n.is_down()),
            cause,
        )?;
        for (id, parts) in &by_source {
            let Some(src) = self.nodes.get(id) else {
                return Err(Error::UnknownNode {
                    node: id.to_string(),
                });
            };
            let (epoch, batch) = (self.epoch, self.batch_size);
            match copy_ranges(src.as_ref(), self.dst, epoch, parts, batch, on_batch) {
                Ok(ControlFlow::Break(())) => return Ok(ControlFlow::Break(())),
                Ok(ControlFlow::Continue(())) => {}
                Err(CopyError::Destination(e) | CopyError::Source(e)) => return Err(e),
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// Copies the records of `ranges` from `src` to `dst`: one thread exports batches while this
/// one imports them, so the two costs overlap. `on_batch` sees each imported batch; `Break`
/// stops the copy (the exporter stops at its next batch).
///
/// Returns `Break` if stopped, `Continue` once every batch is imported (not yet synced).
pub(crate) fn copy_ranges(
    src: &dyn Replica,
    dst: &dyn Replica,
    epoch: u64,
    ranges: &[TokenRange],
    batch_size: usize,
    on_batch: &mut dyn FnMut(&[Record]) -> ControlFlow<()>,
) -> std::result::Result<ControlFlow<()>, CopyError> {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<Record>>>(PIPELINE_DEPTH);
        // The importer hangs up when it stops or fails: the exporter then stops too.
        s.spawn(move || {
            export_chunked(src, epoch, ranges, batch_size, &mut |b| tx.send(b).is_ok())
        });
        for batch in rx {
            let batch = batch.map_err(CopyError::Source)?;
            dst.import(epoch, &batch).map_err(CopyError::Destination)?;
            if on_batch(&batch).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    })
}

/// Ranges handed to one [`Replica::export`] or [`Replica::drop_ranges`] call at most.
///
/// A storage node tests each index entry it scans against every range of the call (a linear
/// `any`), and a transfer pair carries hundreds of vnode ranges spread over the ring, so one
/// call with all of them costs a few hundred comparisons per record. Consecutive ranges,
/// a few at a time, keep that to a handful while each index partition is still scanned about
/// once (the chunks are disjoint stretches of the ring, in token order).
const RANGES_PER_CALL: usize = 4;

/// `ranges` sorted by token, adjacent ones merged (`(a, b]` and `(b, c]` become `(a, c]`),
/// cut into chunks of at most [`RANGES_PER_CALL`]. The union of the chunks is the union of
/// `ranges`.
pub(crate) fn range_chunks(ranges: &[TokenRange]) -> Vec<Vec<TokenRange>> {
    coalesce(ranges)
        .chunks(RANGES_PER_CALL)
        .map(<[_]>::to_vec)
        .collect()
}

/// Key and value bytes in a batch (what progress reports and a byte rate limit count).
pub(crate) fn batch_bytes(batch: &[Record]) -> u64 {
    batch
        .iter()
        .map(|r| (r.key.len() + r.value.as_ref().map_or(0, |v| v.len())) as u64)
        .sum()
}

/// Exports `ranges` from `src` a chunk of ranges at a time ([`range_chunks`]), regrouped into
/// batches of `batch_size` (the last may be short), each handed to `send`; stops when `send`
/// returns false or after sending an error.
fn export_chunked(
    src: &dyn Replica,
    epoch: u64,
    ranges: &[TokenRange],
    batch_size: usize,
    send: &mut dyn FnMut(Result<Vec<Record>>) -> bool,
) {
    let batch_size = batch_size.max(1);
    let mut carry: Vec<Record> = Vec::new();
    for chunk in range_chunks(ranges) {
        let batches = match src.export(epoch, &chunk, batch_size) {
            Ok(b) => b,
            Err(e) => {
                send(Err(e));
                return;
            }
        };
        for batch in batches {
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    send(Err(e));
                    return;
                }
            };
            if carry.is_empty() && batch.len() == batch_size {
                if !send(Ok(batch)) {
                    return;
                }
                continue;
            }
            carry.append(&mut batch);
            if carry.len() >= batch_size {
                let rest = carry.split_off(batch_size);
                if !send(Ok(std::mem::replace(&mut carry, rest))) {
                    return;
                }
            }
        }
    }
    if !carry.is_empty() {
        send(Ok(carry));
    }
}

/// Drops each node's lost ranges, the nodes in parallel, each synced after; returns the
/// number of keys dropped.
pub(crate) fn drop_lost(nodes: &NodeMap, plan: &TransferPlan, epoch: u64) -> Result<u64> {
    let mut lost: BTreeMap<NodeId, Vec<TokenRange>> = BTreeMap::new();
    for c in &plan.cleanups {
        lost.entry(c.node.clone()).or_default().push(c.range);
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = lost
            .iter()
            .filter_map(|(id, ranges)| {
                let node = nodes.get(id)?;
                Some(s.spawn(move || -> Result<u64> {
                    let mut dropped = 0;
                    for chunk in range_chunks(ranges) {
                        dropped += node.drop_ranges(epoch, &chunk)?;
                    }
                    node.sync()?;
                    Ok(dropped as u64)
                }))
            })
            .collect();
        let mut dropped = 0;
        for w in workers {
            dropped += w.join().map_err(|_| Error::WorkerPanicked)??;
        }
        Ok(dropped)
    })
}

/// The plan's transfers grouped by `(from, to)` pair, in plan order.
pub(crate) fn pairs(plan: &TransferPlan) -> Vec<((NodeId, NodeId), Vec<TokenRange>)> {
    let mut out: Vec<((NodeId, NodeId), Vec<TokenRange>)> = Vec::new();
    for t in &plan.transfers {
        match out.last_mut() {
            Some((pair, ranges)) if pair.0 == t.from && pair.1 == t.to => ranges.push(t.range),
            _ => out.push(((t.from.clone(), t.to.clone()), vec![t.range])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryReplica;
    use crate::stream_plan::split_at;
    use kv_node::{Version, Write};

    /// Puts 1,000 keys into `a`.
    fn fill(a: &MemoryReplica) {
        for i in 0..1000u32 {
            let k = i.to_be_bytes();
            let w = Write {
                key: &k,
                value: Some(b"v"),
                version: Version::new(1),
                expires: None,
            };
            a.apply(0, w).unwrap();
        }
    }

    #[test]
    fn copies_everything_in_range_and_stops_on_break() {
        let (a, b) = (
            MemoryReplica::new("a").unwrap(),
            MemoryReplica::new("b").unwrap(),
        );
        fill(&a);
        let mut seen = 0;
        let flow = copy_ranges(&a, &b, 0, &[TokenRange::FULL], 64, &mut |batch| {
            seen += batch.len();
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            (flow, seen, b.len()),
            (ControlFlow::Continue(()), 1000, 1000)
        );

        let c = MemoryReplica::new("c").unwrap();
        let flow = copy_ranges(&a, &c, 0, &[TokenRange::FULL], 64, &mut |_| {
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!((flow, c.len()), (ControlFlow::Break(()), 64));
    }

    #[test]
    fn export_errors_reach_the_importer() {
        let (a, b) = (
            MemoryReplica::new("a").unwrap(),
            MemoryReplica::new("b").unwrap(),
        );
        a.fence(5);
        let r = copy_ranges(&a, &b, 1, &[TokenRange::FULL], 64, &mut |_| {
            ControlFlow::Continue(())
        });
        assert!(matches!(
            r,
            Err(CopyError::Source(Error::StaleEpoch { .. }))
        ));
    }

    /// A pair's hundreds of vnode ranges go to the node in a few sorted, merged chunks: in one
    /// call, every scanned entry would be tested against all of them (export and drop ~2x).
    #[test]
    fn range_chunks_sort_merge_and_cut() {
        let r = TokenRange::new;
        // Adjacent ranges merge; a wrapping one stays last and is never extended.
        let chunks = range_chunks(&[
            r(30, 40),
            r(10, 20),
            r(20, 30),
            r(50, 60),
            r(u64::MAX - 5, 3),
        ]);
        assert_eq!(chunks, vec![vec![r(10, 40), r(50, 60), r(u64::MAX - 5, 3)]]);
        assert_eq!(
            range_chunks(&[r(1, 2), TokenRange::FULL]),
            vec![vec![TokenRange::FULL]]
        );
        // Two halves that meet on both sides merge into the full ring.
        assert_eq!(
            range_chunks(&[r(0, 9), r(9, 0)]),
            vec![vec![TokenRange::FULL]]
        );
        let many: Vec<TokenRange> = (0..10u64).map(|i| r(i * 100, i * 100 + 50)).collect();
        let chunks = range_chunks(&many);
        assert_eq!(chunks.len(), 10usize.div_ceil(RANGES_PER_CALL));
        assert!(chunks.iter().all(|c| c.len() <= RANGES_PER_CALL));
        assert_eq!(chunks.concat(), many);
    }

    #[test]
    fn chunked_export_keeps_full_batches() {
        let a = MemoryReplica::new("a").unwrap();
        fill(&a);
        // Many small ranges: several export calls, batches regrouped across them.
        let ranges: Vec<TokenRange> = (0..64u64)
            .map(|i| TokenRange::new(i << 58, (i << 58) + (1 << 57)))
            .collect();
        let expected = a.count_in_ranges(&ranges).unwrap().live as usize;
        let mut sizes = Vec::new();
        export_chunked(&a, 0, &ranges, 100, &mut |b| {
            sizes.push(b.unwrap().len());
            true
        });
        assert_eq!(sizes.iter().sum::<usize>(), expected);
        let (last, full) = sizes.split_last().unwrap();
        assert!(full.iter().all(|&n| n == 100) && *last <= 100);
    }

    /// Removing a dead node while another replica of its ranges is down: the one live
    /// survivor may lack writes that only the two down nodes took, so the copy refuses to
    /// complete from it alone.
    #[test]
    fn a_copy_from_survivors_waits_for_a_survivor_that_is_down() {
        let id = |s: &str| NodeId::new(s).unwrap();
        let ring = Ring::with_nodes(kv_ring::RingOptions::default(), ["a", "b", "c"]).unwrap();
        let c = std::sync::Arc::new(MemoryReplica::new("c").unwrap());
        fill(&c);
        let mut nodes = NodeMap::default();
        for down in ["a", "b"] {
            let handle = crate::health::DownReplica { id: id(down) };
            nodes.insert(id(down), std::sync::Arc::new(handle));
        }
        nodes.insert(id("c"), c);
        let dst = MemoryReplica::new("d").unwrap();
        let transfer = Transfer {
            old: &ring,
            rf: 3,
            nodes: &nodes,
            dst: &dst,
            epoch: 0,
            batch_size: 64,
        };
        let r = transfer.copy_from_survivors(&id("a"), &[TokenRange::FULL], &mut |_| {
            ControlFlow::Continue(())
        });
        assert!(
            matches!(&r, Err(Error::NodeDown { node }) if node.as_str() == "b"),
            "{r:?}"
        );
        assert!(dst.is_empty());
    }

    #[test]
    fn split_at_cuts_in_ring_order() {
        let r = TokenRange::new(u64::MAX - 10, 20);
        let parts = split_at(r, &[5, u64::MAX - 2, 20, 30, u64::MAX - 10]);
        assert_eq!(
            parts,
            vec![
                TokenRange::new(u64::MAX - 10, u64::MAX - 2),
                TokenRange::new(u64::MAX - 2, 5),
                TokenRange::new(5, 20),
            ]
        );
        assert_eq!(
            split_at(TokenRange::new(1, 2), &[7]),
            vec![TokenRange::new(1, 2)]
        );
    }
}
