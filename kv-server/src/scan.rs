//! `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` over the cluster's token ring.
//!
//! The cursor is a position in token order: the last token covered so far (`0` to start,
//! and `0` again once the whole ring is covered). Each call covers the next whole segments
//! between consecutive ring tokens, reading every replica of each segment (a node that does
//! not answer is skipped) and keeping each key's newest record, so a key present for the whole
//! scan is returned at least once (Redis's guarantee): whichever replicas a write quorum
//! reached, one of them is read, and a ring change between calls does not move the cursor,
//! which names a token, not a node.
//!
//! The cluster has no public range read, so the server reads the replicas through a
//! [`ScanBackend`], the [`Backend`] the cluster was opened with.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::{Bytes, BytesMut};
use kv_cluster::{Backend, Cluster, Replica, Version};
use kv_ring::{NodeId, TokenRange};

use crate::commands::{error, glob_match, parse_u64};
use crate::session::Session;

/// A [`Backend`] that remembers the replicas it opens, so that the server can read token
/// ranges from them for `SCAN`: open the cluster with it
/// ([`ClusterOptions::backend`](kv_cluster::ClusterOptions::backend)) and give it to
/// [`Server::scan_backend`](crate::Server::scan_backend). The node options go to the wrapped
/// backend (`KvNodeBackend::new(node_options)`), in place of
/// [`ClusterOptions::node_options`](kv_cluster::ClusterOptions::node_options), which is
/// shorthand for that backend.
///
/// ```
/// use std::sync::Arc;
/// use kv_cluster::{Cluster, ClusterOptions, KvNodeBackend, NodeOptions};
/// use kv_server::ScanBackend;
///
/// let dir = tempfile::tempdir()?;
/// let backend = Arc::new(ScanBackend::new(Arc::new(KvNodeBackend::new(NodeOptions::new()))));
/// let cluster = Cluster::open(dir.path(), ClusterOptions::new().backend(backend.clone()))?;
/// # drop(cluster);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ScanBackend {
    inner: Arc<dyn Backend>,
    /// Weak: a node that left and whose handles the cluster dropped must be destroyable.
    replicas: Mutex<HashMap<NodeId, Weak<dyn Replica>>>,
}

impl ScanBackend {
    /// Wraps the backend that opens the nodes (e.g. [`kv_cluster::KvNodeBackend`]).
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            replicas: Mutex::new(HashMap::new()),
        }
    }

    fn replica(&self, id: &NodeId) -> Option<Arc<dyn Replica>> {
        self.replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .and_then(Weak::upgrade)
    }
}

impl Backend for ScanBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> kv_cluster::Result<Arc<dyn Replica>> {
        let replica = self.inner.open(id, dir)?;
        // The cluster also opens hint stores through its backend, under the id of the node
        // they hold writes for (`<holder>/hints/<id>`): those are not the node's replica.
        if !is_hint_store(dir) {
            self.replicas
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone(), Arc::downgrade(&replica));
        }
        Ok(replica)
    }

    fn destroy(&self, id: &NodeId, dir: &Path) -> kv_cluster::Result<()> {
        self.replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        self.inner.destroy(id, dir)
    }
}

/// Whether `dir` is a hint store's directory (`<data-dir>/<holder>/hints/<target>`).
fn is_hint_store(dir: &Path) -> bool {
    dir.parent()
        .and_then(Path::file_name)
        .is_some_and(|name| name == "hints")
}

/// Redis's `SCAN` default `COUNT`.
const DEFAULT_COUNT: u64 = 10;
/// Records per exported batch.
const EXPORT_BATCH: usize = 1000;

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub(crate) fn scan(cluster: &Cluster, session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let Some(cursor) = parse_u64(&args[1]) else {
        return error(session, out, "ERR invalid cursor");
    };
    let mut pattern: Option<Vec<u8>> = None;
    let mut count = DEFAULT_COUNT;
    let mut only_strings = true;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = &args[i];
        if opt.eq_ignore_ascii_case(b"count") && more >= 1 {
            match parse_u64(&args[i + 1]).map(i64::try_from) {
                Some(Ok(n)) if n >= 1 => count = n.unsigned_abs(),
                Some(Ok(_)) => return error(session, out, "ERR syntax error"),
                _ => {
                    return error(session, out, "ERR value is not an integer or out of range");
                }
            }
        } else if opt.eq_ignore_ascii_case(b"match") && more >= 1 {
            // As Redis, `*` matches everything without a pattern check.
            pattern = (&args[i + 1][..] != b"*").then(|| args[i + 1].to_vec());
        } else if opt.eq_ignore_ascii_case(b"type") && more >= 1 {
            // Every kvstore value is a string.
            only_strings = args[i + 1].eq_ignore_ascii_case(b"string");
        } else {
            return error(session, out, "ERR syntax error");
        }
        i += 2;
    }
    let Some(backend) = session.shared.scan.as_ref() else {
        return error(
            session,
            out,
            "ERR SCAN is not available: the server was started without a scan backend",
        );
    };
    match step(cluster, backend, cursor, count) {
        Ok((next, keys)) => {
            let enc = session.encoder();
            enc.array_header(out, 2);
            enc.bulk(out, next.to_string().as_bytes());
            let keys: Vec<&Bytes> = keys
                .iter()
                .filter(|k| only_strings && pattern.as_ref().is_none_or(|p| glob_match(p, k)))
                .collect();
            enc.array_header(out, keys.len());
            for k in keys {
                enc.bulk(out, k);
            }
        }
        Err(text) => error(session, out, &format!("ERR scan: {text}")),
    }
}

/// Covers whole segments after `cursor` until at least `count` keys are found (or ten times
/// `count` segments are visited, as Redis bounds its work); returns the next cursor (`0` when
/// the ring is covered) and the live keys found.
fn step(
    cluster: &Cluster,
    backend: &ScanBackend,
    cursor: u64,
    count: u64,
) -> Result<(u64, Vec<Bytes>), String> {
    let ring = cluster.ring();
    let rf = cluster.replication_factor();
    let mut boundaries: Vec<u64> = ring.ranges().map(|r| r.range.end).collect();
    boundaries.sort_unstable();
    let mut keys = Vec::new();
    let mut lo = cursor;
    let max_segments = count.saturating_mul(10);
    let mut segments = 0;
    loop {
        // The next segment: (lo, next boundary], or up to the end of the token space.
        let hi = boundaries
            .iter()
            .copied()
            .find(|&b| b > lo)
            .unwrap_or(u64::MAX);
        // From the start, the first segment includes token 0: (MAX, hi] wraps to [0, hi].
        let range = if cursor == 0 && segments == 0 {
            TokenRange::new(u64::MAX, hi)
        } else {
            TokenRange::new(lo, hi)
        };
        keys.extend(read_segment(&ring, rf, backend, range, hi)?);
        segments += 1;
        if hi == u64::MAX {
            return Ok((0, keys));
        }
        lo = hi;
        if keys.len() as u64 >= count || segments >= max_segments {
            return Ok((lo, keys));
        }
    }
}

/// The live keys of `range`, read from every replica of the segment ending at `end` that
/// answers, each key's newest record deciding.
fn read_segment(
    ring: &kv_ring::Ring,
    rf: usize,
    backend: &ScanBackend,
    range: TokenRange,
    end: u64,
) -> Result<Vec<Bytes>, String> {
    let replicas = ring
        .preference_list(end, rf)
        .map_err(|e| e.to_string())?
        .to_vec();
    let mut newest: HashMap<Bytes, (bool, Version)> = HashMap::new();
    let mut answered = 0;
    let mut last_error = None;
    for id in &replicas {
        let Some(replica) = backend.replica(id) else {
            continue;
        };
        let records = replica
            .export(ring.epoch(), &[range], EXPORT_BATCH)
            .and_then(|stream| stream.collect::<Result<Vec<_>, _>>());
        match records {
            Ok(batches) => {
                answered += 1;
                for r in batches.into_iter().flatten() {
                    let live = r.value.is_some();
                    let entry = newest.entry(r.key).or_insert((live, r.version));
                    if r.version > entry.1 {
                        *entry = (live, r.version);
                    }
                }
            }
            // A node that is down: the others hold what a quorum acknowledged.
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    if answered == 0 {
        return Err(last_error.unwrap_or_else(|| "no replica of the range is open".to_string()));
    }
    let mut keys: Vec<Bytes> = newest
        .into_iter()
        .filter(|(_, (live, _))| *live)
        .map(|(k, _)| k)
        .collect();
    keys.sort_unstable();
    Ok(keys)
}
