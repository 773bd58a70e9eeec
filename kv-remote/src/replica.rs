//! The calling side: [`RemoteReplica`], a [`Replica`] in another process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_cluster::{
    Deferred, Error as ClusterError, ExportPage, RecordStream, Replica, Result, Started, Ticket,
};
use kv_net::Peers;
use kv_node::{Cell, CompactionReport, Digest, RangeCount, Record, Swapped, Version, Write};
use kv_ring::{NodeId, TokenRange};
use parking_lot::Mutex;
use tracing::warn;

use crate::convert::{
    compaction_from_wire, ranges_to_wire, swap_from_wire, time_from_wire, transport_error,
    versioned_from_wire,
};
use crate::error::Error;
use crate::export::PAGE_WAIT;
use crate::protocol::{Entry, Range, Request, Response};

/// The transport every [`RemoteReplica`] of a node shares: one connection per peer.
pub type ReplicaPeers = Peers<Request, Response>;

/// Records of one import request at most about this many key and value bytes: a larger batch
/// is sent as several requests (an import is last-writer-wins per record, so splitting it
/// changes nothing), so that each fits in a frame.
pub const IMPORT_REQUEST_BYTES: usize = 8 << 20;

/// The default of [`RemoteReplica::with_maintenance_timeout`]'s floor.
pub const DEFAULT_MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(60);

/// A storage node in another process, reached through kv-net ([`ReplicaPeers`], shared by
/// all the remote replicas of a node) and served there by a
/// [`ReplicaServer`](crate::ReplicaServer).
///
/// - The synchronous methods send one request and wait for its answer up to the configured
///   timeout (data operations) or the maintenance timeout (`import`, `drop_ranges`, counts,
///   `sync`, `compact`, `digests`, `fence`: work that scans or flushes).
/// - Every `start_*` method encodes its request before it returns (borrowed keys and values
///   are fine), [defers](Ticket::defer) its ticket and completes it from the transport's
///   reader when the answer arrives ([`Peers::send_with`]): no thread or channel per request.
///   The maintenance forms (`start_held`, `start_digests`, `start_export_page`,
///   `start_import`, `start_sync`, `start_fence`: what kv-cluster's async catch-up, hint
///   handoff and repair await) do the same under the maintenance timeout (an export page
///   under the data timeout plus [`PAGE_WAIT`]); an import larger than
///   [`IMPORT_REQUEST_BYTES`] is sent as several requests at once, its ticket answered with
///   the last of them.
/// - Errors: the replica's own errors come back as it raised them
///   ([`ClusterError::StaleEpoch`], the invalid requests as [`ClusterError::Node`]); no answer
///   within the timeout is [`ClusterError::Timeout`]; anything else (not connected, the
///   connection dropped, the replica failed) is [`ClusterError::Remote`] with an [`Error`].
/// - [`export`](Replica::export) reads the records lazily, page by page (see
///   [`Request::ExportOpen`]).
/// - [`is_down`](Replica::is_down): the peer is not alive per kv-net's heartbeats. In the
///   first [`Peers::liveness_timeout`] after the replica is made, a peer not yet heard from
///   counts as up: a node process starts its peers together, and calling them all down
///   until the first heartbeat would refuse (or hint) every write of its first moments,
///   while a request to a peer really not there fails at once anyway (not connected).
/// - [`fence`](Replica::fence) and [`reserve`](Replica::reserve) return nothing: a fence that
///   cannot reach the node is logged (a warning); a reservation is a hint, sent without
///   waiting.
/// - [`expiring_keys`](Replica::expiring_keys) asks the node ([`Request::ExpiringKeys`]);
///   `None` when it cannot answer in time or does not count them.
#[derive(Debug)]
pub struct RemoteReplica {
    id: NodeId,
    peers: Arc<ReplicaPeers>,
    timeout: Duration,
    maintenance_timeout: Duration,
    /// On tokio's clock, as kv-net's liveness is: under a paused or simulated clock (turmoil)
    /// the grace before [`Replica::is_down`] trusts liveness runs on the same time, not on
    /// the machine's, so a simulated run does not depend on how fast the machine is.
    created: tokio::time::Instant,
}

/// Takes the value a request expects out of a response (`None`: another kind of response).
type Take<T> = fn(Response) -> Option<T>;

/// The coordinator's result for a transport result: the replica's error, the transport's,
/// or the expected kind of response.
fn finish<T>(
    node: &NodeId,
    request: &'static str,
    answer: kv_net::Result<Response>,
    take: Take<T>,
) -> Result<T> {
    match answer {
        Err(e) => Err(transport_error(node, e)),
        Ok(Response::Failed(e)) => Err(e.into_cluster(node)),
        Ok(response) => {
            let name = response.name();
            take(response).ok_or_else(|| ClusterError::Remote {
                node: node.clone(),
                source: Box::new(Error::UnexpectedResponse {
                    request,
                    response: name,
                }),
            })
        }
    }
}

/// The message of a write.
fn entry(w: &Write<'_>) -> Entry {
    Entry::from_write(w)
}

/// The messages of writes.
fn entries(writes: &[Write<'_>]) -> Vec<Entry> {
    writes.iter().map(entry).collect()
}

fn keys_to_wire(keys: &[&[u8]]) -> Vec<Bytes> {
    keys.iter().map(|k| Bytes::copy_from_slice(k)).collect()
}

impl RemoteReplica {
    /// The replica of node `id`, reached through `peers` (where `id` must have been added as
    /// a peer, under its node id), with `timeout` for each data operation. The maintenance
    /// timeout is the larger of `timeout` and [`DEFAULT_MAINTENANCE_TIMEOUT`].
    pub fn new(id: NodeId, peers: Arc<ReplicaPeers>, timeout: Duration) -> RemoteReplica {
        RemoteReplica {
            id,
            peers,
            timeout,
            maintenance_timeout: timeout.max(DEFAULT_MAINTENANCE_TIMEOUT),
            created: tokio::time::Instant::now(),
        }
    }

    /// The same with another timeout for maintenance operations (see the type's docs).
    pub fn with_maintenance_timeout(mut self, timeout: Duration) -> RemoteReplica {
        self.maintenance_timeout = timeout;
        self
    }

    /// The timeout of each data operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The transport it shares.
    pub fn peers(&self) -> &Arc<ReplicaPeers> {
        &self.peers
    }

    fn call<T>(
        &self,
        request: &'static str,
        req: &Request,
        timeout: Duration,
        take: Take<T>,
    ) -> Result<T> {
        let answer = self.peers.call_blocking(self.id.as_str(), req, timeout);
        finish(&self.id, request, answer, take)
    }

    fn start<T: Send + 'static>(
        &self,
        request: &'static str,
        req: &Request,
        ticket: Ticket<'_, T>,
        take: Take<T>,
    ) -> Started<T> {
        self.start_within(request, req, self.timeout, ticket, take)
    }

    /// [`start`](RemoteReplica::start) with another timeout (maintenance requests).
    fn start_within<T: Send + 'static>(
        &self,
        request: &'static str,
        req: &Request,
        timeout: Duration,
        ticket: Ticket<'_, T>,
        take: Take<T>,
    ) -> Started<T> {
        let deferred = ticket.defer();
        let node = self.id.clone();
        self.peers
            .send_with(self.id.as_str(), req, timeout, move |answer| {
                deferred.complete(finish(&node, request, answer, take));
            });
        Started::Deferred
    }
}

/// Cuts an import into requests of at most about [`IMPORT_REQUEST_BYTES`] of keys and values
/// (at least one record each); returns the end of each part.
fn import_parts(batch: &[Record]) -> Vec<std::ops::Range<usize>> {
    let mut parts = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < batch.len() {
            let r = &batch[end];
            let size = r.key.len() + r.value.as_ref().map_or(0, |v| v.len());
            if end > start && bytes + size > IMPORT_REQUEST_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        parts.push(start..end);
        start = end;
    }
    parts
}

/// The parts of a deferred import still out, and what those answered so far.
struct ImportParts {
    left: usize,
    changed: usize,
    error: Option<ClusterError>,
    deferred: Option<Deferred<usize>>,
}

/// A page of an export read without waiting.
fn take_export_page(r: Response) -> Option<ExportPage> {
    take_page(r).map(|(session, records, done)| ExportPage {
        records,
        more: (!done).then_some(session),
    })
}

fn take_applied(r: Response) -> Option<bool> {
    match r {
        Response::Applied(b) => Some(b),
        _ => None,
    }
}

fn take_swapped(r: Response) -> Option<Swapped> {
    match r {
        Response::Swapped(s) => Some(swap_from_wire(s)),
        _ => None,
    }
}

fn take_count(r: Response) -> Option<usize> {
    match r {
        Response::Count(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => None,
    }
}

fn take_value(r: Response) -> Option<Option<Cell>> {
    match r {
        Response::Value(v) => Some(versioned_from_wire(v)),
        _ => None,
    }
}

fn take_version(r: Response) -> Option<Option<Version>> {
    match r {
        Response::Version(v) => Some(v.map(Version::new)),
        _ => None,
    }
}

fn take_values(r: Response) -> Option<Vec<Option<Cell>>> {
    match r {
        Response::Values(vs) => Some(vs.into_iter().map(versioned_from_wire).collect()),
        _ => None,
    }
}

fn take_versions(r: Response) -> Option<Vec<Option<Version>>> {
    match r {
        Response::Versions(vs) => Some(vs.into_iter().map(|v| v.map(Version::new)).collect()),
        _ => None,
    }
}

fn take_counted(r: Response) -> Option<RangeCount> {
    match r {
        Response::Counted(c) => Some(c.into()),
        _ => None,
    }
}

fn take_done(r: Response) -> Option<()> {
    match r {
        Response::Done => Some(()),
        _ => None,
    }
}

fn take_digests(r: Response) -> Option<Vec<Digest>> {
    match r {
        Response::Digests(ds) => Some(ds.into_iter().map(Digest::from).collect()),
        _ => None,
    }
}

/// A page of an export: `(session, records, done)`.
fn take_page(r: Response) -> Option<(u64, Vec<Record>, bool)> {
    match r {
        Response::Page {
            session,
            records,
            done,
        } => Some((
            session,
            records.into_iter().map(Entry::into_record).collect(),
            done,
        )),
        _ => None,
    }
}

impl Replica for RemoteReplica {
    fn id(&self) -> &NodeId {
        &self.id
    }

    fn apply(&self, epoch: u64, write: Write<'_>) -> Result<bool> {
        let req = Request::Apply {
            epoch,
            write: entry(&write),
        };
        self.call("apply", &req, self.timeout, take_applied)
    }

    fn apply_swap(&self, epoch: u64, write: Write<'_>, read_value: bool) -> Result<Swapped> {
        let req = Request::ApplySwap {
            epoch,
            write: entry(&write),
            read_value,
        };
        self.call("apply_swap", &req, self.timeout, take_swapped)
    }

    fn apply_batch(&self, epoch: u64, writes: &[Write<'_>]) -> Result<usize> {
        let req = Request::ApplyBatch {
            epoch,
            writes: entries(writes),
        };
        self.call("apply_batch", &req, self.timeout, take_count)
    }

    fn read(&self, epoch: u64, key: &[u8]) -> Result<Option<Cell>> {
        let req = Request::Read {
            epoch,
            key: Bytes::copy_from_slice(key),
        };
        self.call("read", &req, self.timeout, take_value)
    }

    fn read_version(&self, epoch: u64, key: &[u8]) -> Result<Option<Version>> {
        let req = Request::ReadVersion {
            epoch,
            key: Bytes::copy_from_slice(key),
        };
        self.call("read_version", &req, self.timeout, take_version)
    }

    fn read_many(&self, epoch: u64, keys: &[&[u8]]) -> Result<Vec<Option<Cell>>> {
        let req = Request::ReadMany {
            epoch,
            keys: keys_to_wire(keys),
        };
        self.call("read_many", &req, self.timeout, take_values)
    }

    fn read_versions(&self, epoch: u64, keys: &[&[u8]]) -> Result<Vec<Option<Version>>> {
        let req = Request::ReadVersions {
            epoch,
            keys: keys_to_wire(keys),
        };
        self.call("read_versions", &req, self.timeout, take_versions)
    }

    fn start_apply(&self, epoch: u64, write: Write<'_>, ticket: Ticket<'_, bool>) -> Started<bool> {
        let req = Request::Apply {
            epoch,
            write: entry(&write),
        };
        self.start("apply", &req, ticket, take_applied)
    }

    fn start_apply_swap(
        &self,
        epoch: u64,
        write: Write<'_>,
        read_value: bool,
        ticket: Ticket<'_, Swapped>,
    ) -> Started<Swapped> {
        let req = Request::ApplySwap {
            epoch,
            write: entry(&write),
            read_value,
        };
        self.start("apply_swap", &req, ticket, take_swapped)
    }

    fn start_apply_batch(
        &self,
        epoch: u64,
        writes: &[Write<'_>],
        ticket: Ticket<'_, usize>,
    ) -> Started<usize> {
        let req = Request::ApplyBatch {
            epoch,
            writes: entries(writes),
        };
        self.start("apply_batch", &req, ticket, take_count)
    }

    fn start_read(
        &self,
        epoch: u64,
        key: &[u8],
        ticket: Ticket<'_, Option<Cell>>,
    ) -> Started<Option<Cell>> {
        let req = Request::Read {
            epoch,
            key: Bytes::copy_from_slice(key),
        };
        self.start("read", &req, ticket, take_value)
    }

    fn start_read_version(
        &self,
        epoch: u64,
        key: &[u8],
        ticket: Ticket<'_, Option<Version>>,
    ) -> Started<Option<Version>> {
        let req = Request::ReadVersion {
            epoch,
            key: Bytes::copy_from_slice(key),
        };
        self.start("read_version", &req, ticket, take_version)
    }

    fn start_read_many(
        &self,
        epoch: u64,
        keys: &[&[u8]],
        ticket: Ticket<'_, Vec<Option<Cell>>>,
    ) -> Started<Vec<Option<Cell>>> {
        let req = Request::ReadMany {
            epoch,
            keys: keys_to_wire(keys),
        };
        self.start("read_many", &req, ticket, take_values)
    }

    fn start_read_versions(
        &self,
        epoch: u64,
        keys: &[&[u8]],
        ticket: Ticket<'_, Vec<Option<Version>>>,
    ) -> Started<Vec<Option<Version>>> {
        let req = Request::ReadVersions {
            epoch,
            keys: keys_to_wire(keys),
        };
        self.start("read_versions", &req, ticket, take_versions)
    }

    fn export<'a>(
        &'a self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
    ) -> Result<RecordStream<'a>> {
        let req = Request::ExportOpen {
            epoch,
            ranges: ranges_to_wire(ranges),
            batch_size: u32::try_from(batch_size.max(1)).unwrap_or(u32::MAX),
        };
        let (session, first, done) =
            self.call("export", &req, self.timeout + PAGE_WAIT, take_page)?;
        Ok(Box::new(Export {
            replica: self,
            session,
            first: Some(first),
            done,
        }))
    }

    fn import(&self, epoch: u64, batch: &[Record]) -> Result<usize> {
        let mut changed = 0;
        for part in import_parts(batch) {
            let req = Request::Import {
                epoch,
                records: batch[part].iter().map(Entry::from_record).collect(),
            };
            changed += self.call("import", &req, self.maintenance_timeout, take_count)?;
        }
        Ok(changed)
    }

    fn drop_ranges(&self, epoch: u64, ranges: &[TokenRange]) -> Result<usize> {
        let req = Request::DropRanges {
            epoch,
            ranges: ranges_to_wire(ranges),
        };
        self.call("drop_ranges", &req, self.maintenance_timeout, take_count)
    }

    fn count_in_ranges(&self, ranges: &[TokenRange]) -> Result<RangeCount> {
        let req = Request::CountInRanges {
            ranges: ranges_to_wire(ranges),
        };
        self.call(
            "count_in_ranges",
            &req,
            self.maintenance_timeout,
            take_counted,
        )
    }

    fn reserve(&self, ranges: &[TokenRange], keys: u64) {
        let req = Request::Reserve {
            ranges: ranges_to_wire(ranges),
            keys,
        };
        // A hint: nobody waits for it, and a lost one only costs the node some index growth.
        self.peers
            .send_with(self.id.as_str(), &req, self.timeout, |_| {});
    }

    fn held(&self) -> Result<RangeCount> {
        self.call(
            "held",
            &Request::Held,
            self.maintenance_timeout,
            take_counted,
        )
    }

    fn fence(&self, epoch: u64) {
        let req = Request::Fence { epoch };
        if let Err(e) = self.call("fence", &req, self.maintenance_timeout, take_done) {
            warn!(node = %self.id, epoch, "could not fence node {} at epoch {epoch}: {}", self.id, e.chain());
        }
    }

    fn sync(&self) -> Result<()> {
        self.call("sync", &Request::Sync, self.maintenance_timeout, take_done)
    }

    fn compact(&self) -> Result<CompactionReport> {
        self.call(
            "compact",
            &Request::Compact,
            self.maintenance_timeout,
            |r| match r {
                Response::Compacted(c) => Some(compaction_from_wire(c)),
                _ => None,
            },
        )
    }

    fn expiring_keys(&self) -> Option<u64> {
        self.call(
            "expiring_keys",
            &Request::ExpiringKeys,
            self.timeout,
            take_count,
        )
        .ok()
        .map(|n| n as u64)
    }

    fn last_flush(&self) -> Option<std::time::SystemTime> {
        self.call(
            "last_flush",
            &Request::LastFlush,
            self.timeout,
            |r| match r {
                Response::LastFlush(t) => Some(time_from_wire(t)),
                _ => None,
            },
        )
        .ok()
        .flatten()
    }

    fn is_down(&self) -> bool {
        !self.peers.is_alive(self.id.as_str())
            && self.created.elapsed() > self.peers.liveness_timeout()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn start_held(&self, ticket: Ticket<'_, RangeCount>) -> Started<RangeCount> {
        let t = self.maintenance_timeout;
        self.start_within("held", &Request::Held, t, ticket, take_counted)
    }

    fn start_digests(
        &self,
        epoch: u64,
        range: TokenRange,
        leaves: u32,
        ticket: Ticket<'_, Vec<Digest>>,
    ) -> Started<Vec<Digest>> {
        let req = Request::Digests {
            epoch,
            range: Range::from(range),
            leaves: leaves.clamp(1, crate::server::MAX_LEAVES),
        };
        let t = self.maintenance_timeout;
        self.start_within("digests", &req, t, ticket, take_digests)
    }

    fn start_export_page(
        &self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
        session: Option<u64>,
        ticket: Ticket<'_, ExportPage>,
    ) -> Started<ExportPage> {
        let req = match session {
            None => Request::ExportOpen {
                epoch,
                ranges: ranges_to_wire(ranges),
                batch_size: u32::try_from(batch_size.max(1)).unwrap_or(u32::MAX),
            },
            Some(session) => Request::ExportNext { session },
        };
        // The node answers an empty page after `PAGE_WAIT` rather than run into this.
        let t = self.timeout + PAGE_WAIT;
        self.start_within("export", &req, t, ticket, take_export_page)
    }

    fn end_export(&self, session: u64) {
        // Frees the node's session now rather than at its idle timeout; nobody waits.
        let req = Request::ExportClose { session };
        self.peers
            .send_with(self.id.as_str(), &req, self.timeout, |_| {});
    }

    fn start_import(
        &self,
        epoch: u64,
        batch: &[Record],
        ticket: Ticket<'_, usize>,
    ) -> Started<usize> {
        let parts = import_parts(batch);
        if parts.len() <= 1 {
            let req = Request::Import {
                epoch,
                records: batch.iter().map(Entry::from_record).collect(),
            };
            let t = self.maintenance_timeout;
            return self.start_within("import", &req, t, ticket, take_count);
        }
        // Several requests, all sent at once (an import is last-writer-wins per record, so
        // their order does not matter); the ticket is answered when the last one is.
        let shared = Arc::new(Mutex::new(ImportParts {
            left: parts.len(),
            changed: 0,
            error: None,
            deferred: Some(ticket.defer()),
        }));
        for part in parts {
            let req = Request::Import {
                epoch,
                records: batch[part].iter().map(Entry::from_record).collect(),
            };
            let (shared, node) = (Arc::clone(&shared), self.id.clone());
            self.peers.send_with(
                self.id.as_str(),
                &req,
                self.maintenance_timeout,
                move |answer| {
                    let done = {
                        let mut p = shared.lock();
                        match finish(&node, "import", answer, take_count) {
                            Ok(n) => p.changed += n,
                            Err(e) => {
                                p.error.get_or_insert(e);
                            }
                        }
                        p.left -= 1;
                        if p.left == 0 {
                            let answer = match p.error.take() {
                                Some(e) => Err(e),
                                None => Ok(p.changed),
                            };
                            p.deferred.take().map(|d| (d, answer))
                        } else {
                            None
                        }
                    };
                    // Completed outside the lock.
                    if let Some((d, answer)) = done {
                        d.complete(answer);
                    }
                },
            );
        }
        Started::Deferred
    }

    fn start_sync(&self, ticket: Ticket<'_, ()>) -> Started<()> {
        let t = self.maintenance_timeout;
        self.start_within("sync", &Request::Sync, t, ticket, take_done)
    }

    fn start_fence(&self, epoch: u64, ticket: Ticket<'_, ()>) -> Started<()> {
        let t = self.maintenance_timeout;
        self.start_within("fence", &Request::Fence { epoch }, t, ticket, take_done)
    }

    fn digests(&self, epoch: u64, range: TokenRange, leaves: u32) -> Result<Vec<Digest>> {
        let req = Request::Digests {
            epoch,
            range: Range::from(range),
            leaves: leaves.clamp(1, crate::server::MAX_LEAVES),
        };
        self.call("digests", &req, self.maintenance_timeout, take_digests)
    }
}

/// An export read page by page from the node: the first page came with the open; each later
/// one is one request, made when the reader asks for it.
struct Export<'a> {
    replica: &'a RemoteReplica,
    session: u64,
    first: Option<Vec<Record>>,
    done: bool,
}

impl Iterator for Export<'_> {
    type Item = Result<Vec<Record>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(first) = self.first.take()
            && !first.is_empty()
        {
            return Some(Ok(first));
        }
        while !self.done {
            let req = Request::ExportNext {
                session: self.session,
            };
            let r = self.replica;
            match r.call("export", &req, r.timeout + PAGE_WAIT, take_page) {
                Ok((_, records, done)) => {
                    self.done = done;
                    // An empty page that is not the end: the node had nothing ready yet.
                    if !records.is_empty() {
                        return Some(Ok(records));
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl Drop for Export<'_> {
    fn drop(&mut self) {
        if !self.done {
            // The reader stopped early: free the node's session now rather than at its idle
            // timeout. Nobody waits for the answer.
            let req = Request::ExportClose {
                session: self.session,
            };
            let r = self.replica;
            r.peers.send_with(r.id.as_str(), &req, r.timeout, |_| {});
        }
    }
}
