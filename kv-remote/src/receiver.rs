//! The destination side of a range stream: [`RangeReceiver`] imports each chunk into this
//! node, syncs it before reporting a checkpoint, and reports progress through a callback
//! (`docs/membership.md` §3.4).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kv_cluster::Replica;
use kv_net::{PeerInfo, StreamSink};
use kv_node::Record;
use kv_ring::TokenRange;
use parking_lot::Mutex;
// tokio's clock, not the machine's: the same instant in a real process (tokio's `Instant`
// wraps std's), and simulated time under turmoil, where when a checkpoint syncs (and so
// when its progress is committed) must not depend on how fast the machine runs.
use tokio::time::Instant;

use crate::range_stream::{CHECKPOINT_EVERY, Chunk, StreamError, StreamHeader, decode_chunk};

/// A checkpoint that arrives this long after the last sync syncs at once (else it waits, at
/// most [`CHECKPOINT_EVERY`] chunks, for the next one that does; see [`RangeReceiver`]).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// Where a stream's records go: the node's import (last-writer-wins, the path of the replica
/// protocol's `Import`) and its sync. Every [`Replica`] is one.
pub trait ImportTarget: Send + Sync {
    /// Imports `records` at `epoch` with last-writer-wins; how many changed anything.
    ///
    /// # Errors
    /// The node's error (a stale epoch, a failed write).
    fn import_chunk(&self, epoch: u64, records: &[Record]) -> kv_cluster::Result<usize>;

    /// Makes everything imported so far durable.
    ///
    /// # Errors
    /// The node's error.
    fn sync_imported(&self) -> kv_cluster::Result<()>;
}

impl<R: Replica + ?Sized> ImportTarget for R {
    fn import_chunk(&self, epoch: u64, records: &[Record]) -> kv_cluster::Result<usize> {
        Replica::import(self, epoch, records)
    }

    fn sync_imported(&self) -> kv_cluster::Result<()> {
        Replica::sync(self)
    }
}

/// What happened on one stream, as [`RangeReceiver`]'s callback is told.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamEvent<'a> {
    /// Everything of `range` through `done_through` is imported **and synced**: the node
    /// forwards it to the metadata leader as the task's progress.
    Checkpoint {
        /// The task's range.
        range: TokenRange,
        /// The last token imported in full.
        done_through: u64,
    },
    /// Every checkpoint one sync covers, the latest per range, in the order they arrived: what
    /// a receiver made with [`RangeReceiver::batch_checkpoints`] reports instead of one
    /// [`Checkpoint`](StreamEvent::Checkpoint) each, so that the node can commit them to the
    /// metadata log as one entry (a task of hundreds of small ranges otherwise commits one
    /// entry per range).
    Checkpoints(&'a [(TokenRange, u64)]),
    /// The stream ended with every chunk imported and synced (`StreamDone`): every range of
    /// the task is finished (each range's end was reported as a checkpoint before, alone or
    /// in a batch).
    Done,
    /// The stream failed here; it is closed and the node serves on.
    Failed(&'a StreamError),
}

/// One report of a stream's progress.
#[derive(Debug)]
pub struct StreamReport<'a> {
    /// The sending node.
    pub from: &'a str,
    /// The stream's header.
    pub header: StreamHeader,
    /// Records imported by this stream so far.
    pub keys: u64,
    /// What happened.
    pub event: StreamEvent<'a>,
}

type OnReport = dyn Fn(&StreamReport<'_>) + Send + Sync;

/// Takes range streams into this node: set on a [`ReplicaServer`](crate::ReplicaServer)
/// with [`set_range_receiver`](crate::ReplicaServer::set_range_receiver).
///
/// Each chunk of records is imported at the header's epoch (last-writer-wins, so a chunk
/// sent twice after a resume is harmless). **A checkpoint is reported only after the node is
/// synced**: on a checkpoint the receiver syncs (if [`CHECKPOINT_EVERY`] chunks or
/// [`SYNC_INTERVAL`] passed since its last sync; otherwise the checkpoint waits for the next
/// sync, so the many range-end checkpoints of a task with small ranges cost one fsync per
/// 64 chunks, not one each), then reports every checkpoint that sync covers: one
/// [`StreamEvent::Checkpoint`] each, or all of them as one [`StreamEvent::Checkpoints`] with
/// [`batch_checkpoints`](RangeReceiver::batch_checkpoints). At the end it syncs, reports what
/// waits, then [`StreamEvent::Done`].
///
/// **At most one stream per task**: a stream whose header names a newer term of a task
/// cancels the older one (its next chunk ends it with [`StreamError::Superseded`]); one of
/// an older term than the running one is refused. Bad input (another format version, a body
/// that does not decode, too many records, a checkpoint outside its range) or a failed
/// import ends the stream with a typed [`StreamError`], reported as
/// [`StreamEvent::Failed`] and sent to the source as the stream's verdict; the node serves
/// on.
pub struct RangeReceiver {
    target: Arc<dyn ImportTarget>,
    on_report: Box<OnReport>,
    /// Whether a sync's checkpoints are reported as one [`StreamEvent::Checkpoints`].
    batched: bool,
    /// The stream running per `(change, task)`.
    active: Mutex<HashMap<(u64, u64), Active>>,
}

struct Active {
    term: u64,
    cancel: Arc<AtomicBool>,
    by: Arc<AtomicU64>,
}

impl std::fmt::Debug for RangeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeReceiver")
            .field("active", &self.active.lock().len())
            .finish_non_exhaustive()
    }
}

impl RangeReceiver {
    /// A receiver importing into `target`, reporting to `on_report` (called on the stream's
    /// blocking thread: keep it short, e.g. hand the report to a channel).
    pub fn new(
        target: Arc<dyn ImportTarget>,
        on_report: impl Fn(&StreamReport<'_>) + Send + Sync + 'static,
    ) -> RangeReceiver {
        RangeReceiver {
            target,
            on_report: Box::new(on_report),
            batched: false,
            active: Mutex::new(HashMap::new()),
        }
    }

    /// This receiver, reporting the checkpoints each sync covers as one
    /// [`StreamEvent::Checkpoints`] (the latest per range) instead of one
    /// [`StreamEvent::Checkpoint`] each.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::MemoryReplica;
    /// use kv_remote::{RangeReceiver, StreamEvent, StreamReport};
    ///
    /// let node = Arc::new(MemoryReplica::new("b")?);
    /// let receiver = RangeReceiver::new(node, |r: &StreamReport<'_>| {
    ///     if let StreamEvent::Checkpoints(done) = r.event {
    ///         println!("{} ranges synced through their checkpoints", done.len());
    ///     }
    /// })
    /// .batch_checkpoints();
    /// assert_eq!(receiver.active_streams(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn batch_checkpoints(mut self) -> RangeReceiver {
        self.batched = true;
        self
    }

    /// Streams running now.
    pub fn active_streams(&self) -> usize {
        self.active.lock().len()
    }

    /// Opens a stream from `from` with `header`: the sink of its chunks. The replica server
    /// calls it for each kv-net stream; it is public so that a transport of another kind (the
    /// deterministic simulation's, where kv-net's blocking stream ends cannot run) can feed
    /// the same receiver.
    ///
    /// # Errors
    /// The header's [`StreamError`]; [`StreamError::Superseded`] if the task runs under a
    /// newer term.
    pub fn open(
        self: &Arc<Self>,
        from: &PeerInfo,
        header: Bytes,
    ) -> Result<Box<dyn StreamSink>, StreamError> {
        let header = match StreamHeader::decode(&header) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(from = %from.node_id, error = %e, "range stream refused");
                return Err(e);
            }
        };
        let (cancel, by) = {
            let mut active = self.active.lock();
            let key = (header.change, header.task);
            if let Some(a) = active.get(&key) {
                if a.term > header.term {
                    let e = StreamError::Superseded {
                        change: header.change,
                        task: header.task,
                        term: header.term,
                        by: a.term,
                    };
                    self.report(&from.node_id, header, 0, StreamEvent::Failed(&e));
                    return Err(e);
                }
                a.by.store(header.term, Ordering::Release);
                a.cancel.store(true, Ordering::Release);
            }
            let cancel = Arc::new(AtomicBool::new(false));
            let by = Arc::new(AtomicU64::new(0));
            active.insert(
                key,
                Active {
                    term: header.term,
                    cancel: Arc::clone(&cancel),
                    by: Arc::clone(&by),
                },
            );
            (cancel, by)
        };
        Ok(Box::new(RangeSink {
            receiver: Arc::clone(self),
            from: from.node_id.clone(),
            header,
            cancel,
            by,
            keys: 0,
            chunks_since_sync: 0,
            last_sync: Instant::now(),
            waiting: Vec::new(),
        }))
    }

    fn report(&self, from: &str, header: StreamHeader, keys: u64, event: StreamEvent<'_>) {
        (self.on_report)(&StreamReport {
            from,
            header,
            keys,
            event,
        });
    }
}

/// One stream's state on the destination.
struct RangeSink {
    receiver: Arc<RangeReceiver>,
    from: String,
    header: StreamHeader,
    cancel: Arc<AtomicBool>,
    by: Arc<AtomicU64>,
    keys: u64,
    chunks_since_sync: u64,
    last_sync: Instant,
    /// Checkpoints received, not yet covered by a sync.
    waiting: Vec<(TokenRange, u64)>,
}

impl RangeSink {
    fn take(&mut self, data: &Bytes) -> Result<(), StreamError> {
        if self.cancel.load(Ordering::Acquire) {
            return Err(self.superseded());
        }
        match decode_chunk(data)? {
            Chunk::Records(records) => {
                self.receiver
                    .target
                    .import_chunk(self.header.epoch, &records)
                    .map_err(StreamError::Node)?;
                self.keys += records.len() as u64;
                self.chunks_since_sync += 1;
            }
            Chunk::Checkpoint {
                range,
                done_through,
            } => {
                self.waiting.push((range.into(), done_through));
                if self.chunks_since_sync >= CHECKPOINT_EVERY
                    || self.last_sync.elapsed() >= SYNC_INTERVAL
                {
                    self.sync_and_report()?;
                }
            }
        }
        Ok(())
    }

    /// Syncs the node, then reports every checkpoint the sync covers.
    fn sync_and_report(&mut self) -> Result<(), StreamError> {
        self.receiver
            .target
            .sync_imported()
            .map_err(StreamError::Node)?;
        self.chunks_since_sync = 0;
        self.last_sync = Instant::now();
        if self.receiver.batched {
            let mut done: Vec<(TokenRange, u64)> = Vec::with_capacity(self.waiting.len());
            for (range, done_through) in std::mem::take(&mut self.waiting) {
                // A range checkpointed twice since the last sync: its later token stands (the
                // stream sends a range's checkpoints in ring order).
                match done.iter_mut().find(|(r, _)| *r == range) {
                    Some(slot) => slot.1 = done_through,
                    None => done.push((range, done_through)),
                }
            }
            if !done.is_empty() {
                self.receiver.report(
                    &self.from,
                    self.header,
                    self.keys,
                    StreamEvent::Checkpoints(&done),
                );
            }
            return Ok(());
        }
        for (range, done_through) in std::mem::take(&mut self.waiting) {
            let event = StreamEvent::Checkpoint {
                range,
                done_through,
            };
            self.receiver
                .report(&self.from, self.header, self.keys, event);
        }
        Ok(())
    }

    fn superseded(&self) -> StreamError {
        StreamError::Superseded {
            change: self.header.change,
            task: self.header.task,
            term: self.header.term,
            by: self.by.load(Ordering::Acquire),
        }
    }

    /// Reports `e` and turns it into the stream's verdict.
    fn fail(&self, e: StreamError) -> String {
        tracing::warn!(from = %self.from, task = self.header.task, error = %e, "range stream failed");
        self.receiver
            .report(&self.from, self.header, self.keys, StreamEvent::Failed(&e));
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl StreamSink for RangeSink {
    fn chunk(&mut self, data: Bytes) -> Result<(), String> {
        self.take(&data).map_err(|e| self.fail(e))
    }

    fn finish(mut self: Box<Self>) -> Result<(), String> {
        let done = if self.cancel.load(Ordering::Acquire) {
            Err(self.superseded())
        } else {
            self.sync_and_report()
        };
        match done {
            Ok(()) => {
                self.receiver
                    .report(&self.from, self.header, self.keys, StreamEvent::Done);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl Drop for RangeSink {
    fn drop(&mut self) {
        let mut active = self.receiver.active.lock();
        let key = (self.header.change, self.header.task);
        if active
            .get(&key)
            .is_some_and(|a| Arc::ptr_eq(&a.cancel, &self.cancel))
        {
            active.remove(&key);
        }
    }
}
