//! The source side of a range stream: [`RangeStreamer`] exports this node's data over a
//! task's ranges and sends it to the destination (`docs/membership.md` §3.4).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kv_cluster::{RateLimiter, Replica};
use kv_ring::TokenRange;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use kv_node::Record;

use crate::protocol::Range;
use crate::range_stream::{
    CHECKPOINT_EVERY, MAX_CHUNK_BYTES, MAX_CHUNK_RECORDS, StreamHeader, StreamMessage,
    encode_records,
};
use crate::replica::ReplicaPeers;

/// Tokens per export piece: 2^54, so the ring is 1,024 pieces, each exactly one index
/// partition of a node with the default 2^10 partitions. A piece is the unit a checkpoint
/// can name (`done_through` is a piece's end, or a range's), and exporting piece by piece
/// scans each partition once.
const PIECE_SHIFT: u32 = 54;

/// How long [`RangeStreamer::stream`] waits for the destination's verdict after its last
/// chunk (the destination syncs before it answers).
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// One range of a task, with how far an earlier stream of the task got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRange {
    /// The range.
    pub range: TokenRange,
    /// The last token a destination reported synced (`None`: nothing yet; the range's end:
    /// finished). The stream resumes right after it.
    pub done_through: Option<u64>,
}

/// A task as its source runs it: what to stream where, under which change, term and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTask {
    /// The header the stream opens with (change, task, term, epoch).
    pub header: StreamHeader,
    /// The destination node (a peer of the source's [`ReplicaPeers`]).
    pub destination: String,
    /// The ranges, each from its `done_through`.
    pub ranges: Vec<StreamRange>,
}

/// What a finished stream sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamSummary {
    /// Records sent.
    pub keys: u64,
    /// Key and value bytes sent.
    pub bytes: u64,
    /// Chunks of records sent.
    pub chunks: u64,
    /// Checkpoints sent.
    pub checkpoints: u64,
    /// How long it took, the destination's final sync included.
    pub elapsed: Duration,
}

/// Streams a node's ranges to other nodes: the source side of a membership change's tasks,
/// one per process, shared by its tasks.
///
/// [`stream`](RangeStreamer::stream) exports the local replica over a task's ranges piece by
/// piece (its own disk: no RPC), sends chunks of at most [`MAX_CHUNK_RECORDS`] records /
/// [`MAX_CHUNK_BYTES`] over a kv-net bulk stream of its own, a checkpoint at the first piece
/// boundary after every [`CHECKPOINT_EVERY`] chunks and one for each range's end (right after
/// the chunk holding the range's last records: small ranges share full chunks), paces itself
/// with the process's shared [`RateLimiter`], and returns once the destination has imported
/// and synced everything. **At most one stream per task**: a call for a task already
/// streaming under an older term cancels that one (it ends with [`Error::Superseded`] at its
/// next chunk); a call under an older term than the running one is refused the same way.
///
/// Blocking: run it on a thread of its own (or `spawn_blocking`), never on an async
/// runtime's worker (kv-net's stream sender blocks, and panics there).
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kv_cluster::{MemoryReplica, RateLimiter, Replica, Version, Write};
/// use kv_net::{Identity, Peers, PeersOptions, ServerOptions};
/// use kv_remote::*;
/// use kv_ring::TokenRange;
///
/// let (a, b) = (Arc::new(MemoryReplica::new("a")?), Arc::new(MemoryReplica::new("b")?));
/// for i in 0..100u32 {
///     let w = Write { key: &i.to_be_bytes(), value: Some(b"v"), version: Version::new(1), expires: None };
///     a.apply(0, w)?;
/// }
/// let server = ReplicaServer::start(Identity::new(1, "b"), ServerOptions::new(), b.clone())?;
/// server.set_range_receiver(Some(Arc::new(RangeReceiver::new(b.clone(), |_r: &StreamReport<'_>| {}))));
/// let peers = Arc::new(Peers::start(Identity::new(1, "a"), PeersOptions::new())?);
/// peers.add_peer("b", server.local_addr())?;
///
/// let streamer = RangeStreamer::new(a, peers, Arc::new(RateLimiter::unlimited()));
/// let task = StreamTask {
///     header: StreamHeader { change: 1, task: 1, term: 1, epoch: 0 },
///     destination: "b".into(),
///     ranges: vec![StreamRange { range: TokenRange::FULL, done_through: None }],
/// };
/// assert_eq!(streamer.stream(&task)?.keys, 100);
/// assert_eq!(b.len(), 100);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RangeStreamer {
    replica: Arc<dyn Replica>,
    peers: Arc<ReplicaPeers>,
    limiter: Arc<RateLimiter>,
    /// The stream running per `(change, task)`: its term and cancel flag.
    running: Mutex<HashMap<(u64, u64), Running>>,
}

struct Running {
    term: u64,
    cancel: Arc<AtomicBool>,
    /// The newer term that cancelled it, for its error.
    by: Arc<AtomicU64>,
}

impl std::fmt::Debug for RangeStreamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeStreamer")
            .field("replica", &self.replica.id())
            .field("running", &self.running.lock().len())
            .finish_non_exhaustive()
    }
}

impl RangeStreamer {
    /// A streamer exporting `replica` (this node's own), sending through `peers`, paced by
    /// `limiter` (shared by every stream of the process; change its rate to change theirs).
    pub fn new(
        replica: Arc<dyn Replica>,
        peers: Arc<ReplicaPeers>,
        limiter: Arc<RateLimiter>,
    ) -> RangeStreamer {
        RangeStreamer {
            replica,
            peers,
            limiter,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The shared rate limiter.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// Streams `task` to its destination; see [`RangeStreamer`].
    ///
    /// # Errors
    /// [`Error::Superseded`] if a newer term of the task took over (before or during the
    /// stream); [`Error::Transport`] if the stream cannot be opened or is cut (the
    /// destination's refusal travels as `kv_net::Error::Stream` with its reason); the local
    /// replica's export error as [`Error::Failed`]. What the destination reported synced
    /// before the error stands: resume from it.
    ///
    /// # Panics
    /// If called on an async runtime's worker thread (kv-net's stream sender blocks).
    pub fn stream(&self, task: &StreamTask) -> Result<StreamSummary> {
        let h = task.header;
        let (cancel, by) = self.register(&h)?;
        let out = self.run(task, &cancel, &by);
        let mut running = self.running.lock();
        if running
            .get(&(h.change, h.task))
            .is_some_and(|r| Arc::ptr_eq(&r.cancel, &cancel))
        {
            running.remove(&(h.change, h.task));
        }
        out
    }

    /// Cancels the stream of `(change, task)`, if one runs: it ends with
    /// [`Error::Superseded`] at its next chunk. Returns whether one ran.
    pub fn cancel(&self, change: u64, task: u64) -> bool {
        match self.running.lock().remove(&(change, task)) {
            Some(r) => {
                r.by.store(r.term, Ordering::Release);
                r.cancel.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Records `h`'s stream as the task's, cancelling one of an older term; its cancel flag
    /// and the slot for the term that cancels it.
    fn register(&self, h: &StreamHeader) -> Result<(Arc<AtomicBool>, Arc<AtomicU64>)> {
        let mut running = self.running.lock();
        if let Some(r) = running.get(&(h.change, h.task)) {
            if r.term > h.term {
                return Err(Error::Superseded {
                    change: h.change,
                    task: h.task,
                    term: h.term,
                    by: r.term,
                });
            }
            r.by.store(h.term, Ordering::Release);
            r.cancel.store(true, Ordering::Release);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let by = Arc::new(AtomicU64::new(0));
        running.insert(
            (h.change, h.task),
            Running {
                term: h.term,
                cancel: Arc::clone(&cancel),
                by: Arc::clone(&by),
            },
        );
        Ok((cancel, by))
    }

    fn run(&self, task: &StreamTask, cancel: &AtomicBool, by: &AtomicU64) -> Result<StreamSummary> {
        let started = Instant::now();
        let h = task.header;
        let mut sender = self
            .peers
            .open_stream(&task.destination, &h.encode())
            .map_err(Error::Transport)?;
        let mut out = Chunker {
            sender: &mut sender,
            limiter: &self.limiter,
            records: Vec::with_capacity(MAX_CHUNK_RECORDS),
            bytes: 0,
            since_checkpoint: 0,
            finished: Vec::new(),
            summary: StreamSummary::default(),
            max_records: MAX_CHUNK_RECORDS,
            max_bytes: MAX_CHUNK_BYTES,
        };
        out.fit_to_rate();
        let check = |h: &StreamHeader| -> Result<()> {
            if cancel.load(Ordering::Acquire) {
                return Err(Error::Superseded {
                    change: h.change,
                    task: h.task,
                    term: h.term,
                    by: by.load(Ordering::Acquire),
                });
            }
            Ok(())
        };
        for r in &task.ranges {
            let Some(rest) = remaining(r) else { continue };
            let wire = Range::from(r.range);
            for piece in pieces(rest) {
                check(&h)?;
                let batches = self
                    .replica
                    .export(h.epoch, &[piece], MAX_CHUNK_RECORDS)
                    .map_err(|e| failed(&e))?;
                for batch in batches {
                    for record in batch.map_err(|e| failed(&e))? {
                        out.push(record)?;
                    }
                    check(&h)?;
                }
                if out.since_checkpoint >= CHECKPOINT_EVERY - 1 && piece.end != r.range.end {
                    out.checkpoint(wire, piece.end)?;
                }
            }
            // Sent after the chunk that holds the range's last records, not at once: a range
            // of a few hundred keys (a real join's task is hundreds of such ranges, one per
            // vnode) does not cut a chunk short.
            out.finished.push(wire);
            if out.records.is_empty() {
                out.send_finished()?;
            }
        }
        out.flush()?;
        let mut summary = out.summary;
        check(&h)?;
        sender.finish(FINISH_TIMEOUT).map_err(Error::Transport)?;
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}

/// The local replica's export error, with its causes.
fn failed(e: &kv_cluster::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Failed { message }
}

/// Groups records into chunks and sends them, paced.
struct Chunker<'s> {
    sender: &'s mut kv_net::StreamSender,
    limiter: &'s RateLimiter,
    records: Vec<Record>,
    bytes: usize,
    since_checkpoint: u64,
    /// Ranges whose every record is in `records` or sent: their end checkpoints follow the
    /// next chunk.
    finished: Vec<Range>,
    summary: StreamSummary,
    /// The chunk limits at the limiter's rate ([`Chunker::fit_to_rate`]).
    max_records: usize,
    max_bytes: usize,
}

impl Chunker<'_> {
    /// Limits the next chunks to what the rate allows in [`kv_cluster::BURST`] (at least one
    /// record), so a slow rate sends small chunks often instead of a full chunk and then a
    /// long wait: the destination's progress moves smoothly at the rate. Read once per chunk
    /// (a committed rate applies from the next one).
    fn fit_to_rate(&mut self) {
        let rate = self.limiter.rate();
        let per_burst = |per_sec: Option<u64>, most: usize| -> usize {
            per_sec.filter(|&r| r > 0).map_or(most, |r| {
                let burst = u128::from(r) * kv_cluster::BURST.as_millis() / 1000;
                usize::try_from(burst).unwrap_or(most).clamp(1, most)
            })
        };
        self.max_records = per_burst(rate.keys_per_sec, MAX_CHUNK_RECORDS);
        self.max_bytes = per_burst(rate.bytes_per_sec, MAX_CHUNK_BYTES);
    }

    fn push(&mut self, e: Record) -> Result<()> {
        let len = e.key.len() + e.value.as_ref().map_or(0, |v| v.len());
        if !self.records.is_empty() && self.bytes + len > self.max_bytes {
            self.flush()?;
        }
        self.records.push(e);
        self.bytes += len;
        if self.records.len() >= self.max_records {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the records gathered, if any, then the end checkpoints they complete.
    fn flush(&mut self) -> Result<()> {
        if self.records.is_empty() {
            return self.send_finished();
        }
        let (keys, bytes) = (self.records.len() as u64, self.bytes as u64);
        let msg = encode_records(&self.records);
        // Cleared, not replaced: the vector's room serves the next chunk.
        self.records.clear();
        self.bytes = 0;
        // Paid before sending: the bucket lends, so only a debt waits.
        self.limiter.pace(keys, bytes);
        self.sender.send(&msg).map_err(Error::Transport)?;
        self.summary.keys += keys;
        self.summary.bytes += bytes;
        self.summary.chunks += 1;
        self.since_checkpoint += 1;
        self.fit_to_rate();
        self.send_finished()
    }

    /// Sends the end checkpoint of every range in `finished` (their records are all sent).
    fn send_finished(&mut self) -> Result<()> {
        for range in std::mem::take(&mut self.finished) {
            self.send_checkpoint(range, range.end)?;
        }
        Ok(())
    }

    /// Sends what is gathered, then a checkpoint through `done_through`.
    fn checkpoint(&mut self, range: Range, done_through: u64) -> Result<()> {
        self.flush()?;
        self.send_checkpoint(range, done_through)
    }

    fn send_checkpoint(&mut self, range: Range, done_through: u64) -> Result<()> {
        let msg = StreamMessage::Checkpoint {
            range,
            done_through,
        };
        self.sender.send(&msg.encode()).map_err(Error::Transport)?;
        self.summary.checkpoints += 1;
        self.since_checkpoint = 0;
        Ok(())
    }
}

/// What is left of `r` after its `done_through`, or `None` if it is finished.
fn remaining(r: &StreamRange) -> Option<TokenRange> {
    match r.done_through {
        None => Some(r.range),
        Some(d) if d == r.range.end => None,
        Some(d) => Some(TokenRange::new(d, r.range.end)),
    }
}

/// `r` cut at every multiple of `2^PIECE_SHIFT`, in ring order.
fn pieces(r: TokenRange) -> Vec<TokenRange> {
    let mut out = Vec::new();
    let mut cur = r.start;
    loop {
        // The next boundary clockwise from `cur` (0 after the last piece of the ring).
        let boundary = ((cur >> PIECE_SHIFT).wrapping_add(1)).wrapping_shl(PIECE_SHIFT);
        let to_boundary = u128::from(boundary.wrapping_sub(cur));
        let to_boundary = if to_boundary == 0 {
            1 << 64
        } else {
            to_boundary
        };
        let to_end = match r.end.wrapping_sub(cur) {
            0 => 1u128 << 64,
            d => u128::from(d),
        };
        if to_end <= to_boundary {
            out.push(TokenRange {
                start: cur,
                end: r.end,
            });
            return out;
        }
        out.push(TokenRange {
            start: cur,
            end: boundary,
        });
        cur = boundary;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_in_order_at_partition_boundaries() {
        let p = 1u64 << PIECE_SHIFT;
        assert_eq!(pieces(TokenRange::FULL).len(), 1024);
        assert_eq!(
            pieces(TokenRange::FULL)[1023],
            TokenRange {
                start: 1023 * p,
                end: 0
            }
        );
        assert_eq!(
            pieces(TokenRange::new(p - 5, 2 * p + 7)),
            vec![
                TokenRange::new(p - 5, p),
                TokenRange::new(p, 2 * p),
                TokenRange::new(2 * p, 2 * p + 7)
            ]
        );
        assert_eq!(pieces(TokenRange::new(3, 9)), vec![TokenRange::new(3, 9)]);
        // Wrapping past the top of the ring.
        let w = pieces(TokenRange::new(u64::MAX - 4, 6));
        assert_eq!(
            w,
            vec![TokenRange::new(u64::MAX - 4, 0), TokenRange::new(0, 6)]
        );
        // A resumed full ring: from the done token round to 0.
        let r = remaining(&StreamRange {
            range: TokenRange::FULL,
            done_through: Some(5 * p),
        })
        .unwrap();
        assert_eq!(pieces(r).len(), 1019);
        assert!(
            remaining(&StreamRange {
                range: TokenRange::new(1, 9),
                done_through: Some(9)
            })
            .is_none()
        );
    }
}
