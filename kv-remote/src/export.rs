//! The serving side of [`Replica::export`]: export sessions, each read page by page.
//!
//! kv-net's bulk streams flow from the dialer to the listener, but an export's records flow
//! the other way (from the node that listens to the coordinator that dialed), so an export is
//! paged over ordinary requests instead: `ExportOpen` starts a session and answers its first
//! page, `ExportNext` answers the next, `ExportClose` ends it early.
//!
//! A session is a thread that owns a handle on the replica, runs its export iterator and hands
//! pages over a channel of two: the replica's iterator borrows the replica, so it cannot be
//! kept in a map between requests, and the channel's bound keeps the thread at most two pages
//! ahead of the reader (the export stays lazy on the node too). A session that nobody reads
//! for [`IDLE`] is dropped at the next open; its thread ends when it next tries to hand over a
//! page.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use kv_cluster::Replica;
use kv_node::Record;
use kv_ring::TokenRange;
use parking_lot::Mutex;

use crate::protocol::{Entry, RemoteError, Response};

/// Most export sessions open at once on one server; one more is refused.
pub const MAX_EXPORT_SESSIONS: usize = 64;
/// Most records per page, whatever batch size is asked.
pub const MAX_PAGE_RECORDS: u32 = 1 << 16;
/// A page holds records up to about this many key and value bytes (at least one record), so
/// that it fits in a frame whatever the batch size.
pub const PAGE_BYTES: usize = 4 << 20;
/// How long a request waits for its page before it answers an empty one ("ask again"), so a
/// slow export never runs into the caller's deadline.
pub const PAGE_WAIT: Duration = Duration::from_secs(2);
/// A session not read for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(60);

type Page = kv_cluster::Result<Vec<Record>>;

struct Session {
    pages: Receiver<Page>,
    last_used: Instant,
}

/// The export sessions of one server.
pub(crate) struct Exports {
    replica: Arc<dyn Replica>,
    sessions: Mutex<HashMap<u64, Session>>,
    next_id: AtomicU64,
}

impl Exports {
    pub(crate) fn new(replica: Arc<dyn Replica>) -> Self {
        Exports {
            replica,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Starts a session and answers its first page.
    pub(crate) fn open(&self, epoch: u64, ranges: Vec<TokenRange>, batch_size: u32) -> Response {
        let batch = batch_size.clamp(1, MAX_PAGE_RECORDS) as usize;
        {
            let mut sessions = self.sessions.lock();
            sessions.retain(|_, s| s.last_used.elapsed() < IDLE);
            if sessions.len() >= MAX_EXPORT_SESSIONS {
                return Response::Failed(RemoteError::Failed {
                    message: format!(
                        "{MAX_EXPORT_SESSIONS} exports are open on this node already; try again later"
                    ),
                });
            }
        }
        let (tx, rx) = sync_channel(2);
        let replica = Arc::clone(&self.replica);
        let spawned = std::thread::Builder::new()
            .name("kv-remote-export".into())
            .spawn(move || produce(replica.as_ref(), epoch, &ranges, batch, &tx));
        if let Err(e) = spawned {
            return Response::Failed(RemoteError::Failed {
                message: format!("cannot start an export thread: {e}"),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().insert(
            id,
            Session {
                pages: rx,
                last_used: Instant::now(),
            },
        );
        self.next(id)
    }

    /// The session's next page: records, an empty page if none came within [`PAGE_WAIT`],
    /// or `done` at the end (the session is then gone).
    pub(crate) fn next(&self, id: u64) -> Response {
        // Out of the map while waiting, so other sessions are served meanwhile.
        let Some(mut session) = self.sessions.lock().remove(&id) else {
            return Response::Failed(RemoteError::BadRequest {
                reason: format!("no export session {id} (finished, closed or idle too long)"),
            });
        };
        let page = |records: Vec<Record>, done| Response::Page {
            session: id,
            records: records.iter().map(Entry::from_record).collect(),
            done,
        };
        match session.pages.recv_timeout(PAGE_WAIT) {
            Ok(Ok(records)) => {
                session.last_used = Instant::now();
                self.sessions.lock().insert(id, session);
                page(records, false)
            }
            Ok(Err(e)) => Response::Failed(RemoteError::from_cluster(&e)),
            Err(RecvTimeoutError::Timeout) => {
                session.last_used = Instant::now();
                self.sessions.lock().insert(id, session);
                page(Vec::new(), false)
            }
            Err(RecvTimeoutError::Disconnected) => page(Vec::new(), true),
        }
    }

    /// Ends a session (its thread stops at its next page).
    pub(crate) fn close(&self, id: u64) -> Response {
        self.sessions.lock().remove(&id);
        Response::Done
    }

    /// Sessions open now.
    pub(crate) fn open_sessions(&self) -> usize {
        self.sessions.lock().len()
    }
}

/// A session's thread: runs the export and hands its batches over, cut into pages of at most
/// [`PAGE_BYTES`]. Stops when the reader is gone (the send fails) or at the first error.
fn produce(
    replica: &dyn Replica,
    epoch: u64,
    ranges: &[TokenRange],
    batch: usize,
    tx: &SyncSender<Page>,
) {
    let stream = match replica.export(epoch, ranges, batch) {
        Ok(stream) => stream,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    for records in stream {
        let records = match records {
            Ok(records) => records,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for page in split_by_bytes(records, PAGE_BYTES) {
            if tx.send(Ok(page)).is_err() {
                return;
            }
        }
    }
}

/// Cuts `records` into runs of at most `limit` key and value bytes (a record larger than that
/// alone).
fn split_by_bytes(records: Vec<Record>, limit: usize) -> Vec<Vec<Record>> {
    let mut pages = Vec::new();
    let mut page = Vec::new();
    let mut bytes = 0;
    for r in records {
        let size = r.key.len() + r.value.as_ref().map_or(0, |v| v.len());
        if !page.is_empty() && bytes + size > limit {
            pages.push(std::mem::take(&mut page));
            bytes = 0;
        }
        bytes += size;
        page.push(r);
    }
    if !page.is_empty() {
        pages.push(page);
    }
    pages
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kv_node::Version;

    use super::*;

    #[test]
    fn pages_stay_under_the_byte_limit_except_a_lone_large_record() {
        let rec = |n: usize| Record {
            key: Bytes::from(vec![b'k'; 4]),
            value: Some(Bytes::from(vec![b'v'; n])),
            version: Version::new(1),
            expires: None,
        };
        let pages = split_by_bytes(vec![rec(40), rec(40), rec(200), rec(10), rec(10)], 100);
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1, 2]);
        assert!(split_by_bytes(Vec::new(), 100).is_empty());
    }
}
