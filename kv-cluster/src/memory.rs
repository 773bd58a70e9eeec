//! An in-memory replica: the test double of a storage node.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kv_ring::{NodeId, TokenRange, token};
use parking_lot::{Mutex, RwLock};

use crate::backend::Backend;
use crate::error::Result;
use crate::fence::Fence;
use crate::replica::{RecordStream, Replica};
use kv_node::{Cell, Clock, Previous, RangeCount, Record, Swapped, SystemClock, Version, Write};

/// Keys by `(token, key)`, so that a token range is a contiguous run; each holds its newest
/// record (value or tombstone, version, expiry).
type Map = BTreeMap<(u64, Bytes), Cell>;

/// A [`Replica`] that keeps its data in a `BTreeMap`: last-writer-wins, tombstones, range
/// export and drop, exactly as the contract asks, with no disk. For tests of the coordinator
/// and as a reference model; nothing survives the process.
///
/// Expiring values follow the storage node's rules (`docs/design.md`, *Expiring keys*)
/// against the replica's clock ([`MemoryReplica::with_clock`], default the system clock):
/// [`read`](Replica::read) answers the record unjudged, with its expiry; export, counts,
/// digests and [`apply_swap`](Replica::apply_swap)'s report treat an expired value as the
/// tombstone at its version it stands for.
///
/// # Example
/// ```
/// use kv_cluster::{MemoryReplica, Replica, Version, Write};
///
/// let node = MemoryReplica::new("node1")?;
/// node.apply(1, Write { key: b"k", value: Some(b"new"), version: Version::new(9), expires: None })?;
/// // An older write arriving late loses.
/// assert!(!node.apply(1, Write { key: b"k", value: Some(b"old"), version: Version::new(3), expires: None })?);
/// assert_eq!(node.read(1, b"k")?.unwrap().value.as_deref(), Some(&b"new"[..]));
/// # Ok::<(), kv_cluster::Error>(())
/// ```
#[derive(Debug)]
pub struct MemoryReplica {
    id: NodeId,
    map: Arc<RwLock<Map>>,
    fence: Fence,
    clock: ClockHandle,
}

impl MemoryReplica {
    /// An empty replica.
    ///
    /// # Errors
    /// [`Error::Ring`](crate::Error::Ring) for an invalid node id.
    pub fn new(id: &str) -> Result<Self> {
        Self::with_clock(id, Arc::new(SystemClock))
    }

    /// An empty replica judging expiry against `clock` (tests inject a simulated one).
    ///
    /// # Errors
    /// [`Error::Ring`](crate::Error::Ring) for an invalid node id.
    pub fn with_clock(id: &str, clock: Arc<dyn Clock>) -> Result<Self> {
        Ok(MemoryReplica {
            id: NodeId::new(id)?,
            map: Arc::default(),
            fence: Fence::default(),
            clock: ClockHandle(clock),
        })
    }

    /// The number of records held (tombstones included).
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether the replica holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    fn apply_one(map: &mut Map, w: Write<'_>) -> bool {
        let entry = map
            .entry((token(w.key), Bytes::copy_from_slice(w.key)))
            .or_insert(Cell::tombstone(Version::ZERO));
        if w.version <= entry.version {
            return false;
        }
        *entry = cell_of(w);
        true
    }

    /// The records of `ranges`, an expired value exported as its tombstone (as a storage
    /// node does).
    fn in_ranges(&self, map: &Map, ranges: &[TokenRange]) -> Vec<Record> {
        let now = self.clock.0.now_millis();
        let mut out = Vec::new();
        for r in ranges {
            for (lo, hi) in spans(*r) {
                for ((_, key), cell) in map
                    .range((lo, Bytes::new())..)
                    .take_while(|((t, _), _)| *t <= hi)
                {
                    let cell = cell.clone().judged(now);
                    out.push(Record {
                        key: key.clone(),
                        value: cell.value,
                        version: cell.version,
                        expires: cell.expires,
                    });
                }
            }
        }
        out
    }
}

/// The cell a write leaves (its expiry dropped for a tombstone).
fn cell_of(w: Write<'_>) -> Cell {
    Cell {
        value: w.value.map(Bytes::copy_from_slice),
        version: w.version,
        expires: w.value.and(w.expires),
    }
}

/// A token range as at most two inclusive spans `[lo, hi]`.
pub(crate) fn spans(r: TokenRange) -> impl Iterator<Item = (u64, u64)> {
    let (a, b) = if r.is_full() {
        (Some((0, u64::MAX)), None)
    } else if r.start < r.end {
        (Some((r.start + 1, r.end)), None)
    } else {
        let high = (r.start < u64::MAX).then(|| (r.start + 1, u64::MAX));
        (high, Some((0, r.end)))
    };
    a.into_iter().chain(b)
}

impl Replica for MemoryReplica {
    fn id(&self) -> &NodeId {
        &self.id
    }

    fn apply(&self, epoch: u64, write: Write<'_>) -> Result<bool> {
        self.fence.check(&self.id, epoch)?;
        Ok(Self::apply_one(&mut self.map.write(), write))
    }

    fn apply_swap(&self, epoch: u64, write: Write<'_>, read_value: bool) -> Result<Swapped> {
        self.fence.check(&self.id, epoch)?;
        let mut map = self.map.write();
        let key = (token(write.key), Bytes::copy_from_slice(write.key));
        let previous = map.get(&key).cloned();
        if let Some(current) = &previous
            && write.version <= current.version
        {
            return Ok(Swapped::Kept {
                current: current.version,
            });
        }
        map.insert(key, cell_of(write));
        let now = self.clock.0.now_millis();
        let previous = previous.map(|cell| {
            let cell = cell.judged(now);
            let live = cell.value.is_some();
            Previous::new(cell.version, cell.value.filter(|_| read_value), live)
                .with_expires(cell.expires)
        });
        Ok(Swapped::Applied { previous })
    }

    fn apply_batch(&self, epoch: u64, writes: &[Write<'_>]) -> Result<usize> {
        self.fence.check(&self.id, epoch)?;
        let mut map = self.map.write();
        Ok(writes
            .iter()
            .filter(|w| Self::apply_one(&mut map, **w))
            .count())
    }

    fn read(&self, epoch: u64, key: &[u8]) -> Result<Option<Cell>> {
        self.fence.check(&self.id, epoch)?;
        let map = self.map.read();
        Ok(map.get(&(token(key), Bytes::copy_from_slice(key))).cloned())
    }

    fn export<'a>(
        &'a self,
        epoch: u64,
        ranges: &[TokenRange],
        batch_size: usize,
    ) -> Result<RecordStream<'a>> {
        self.fence.check(&self.id, epoch)?;
        let records = self.in_ranges(&self.map.read(), ranges);
        let batch_size = batch_size.max(1);
        let mut records = records.into_iter().peekable();
        Ok(Box::new(std::iter::from_fn(move || {
            records.peek()?;
            Some(Ok(records.by_ref().take(batch_size).collect()))
        })))
    }

    fn import(&self, epoch: u64, batch: &[Record]) -> Result<usize> {
        self.fence.check(&self.id, epoch)?;
        let mut map = self.map.write();
        Ok(batch
            .iter()
            .filter(|r| Self::apply_one(&mut map, r.as_write()))
            .count())
    }

    fn drop_ranges(&self, epoch: u64, ranges: &[TokenRange]) -> Result<usize> {
        self.fence.check(&self.id, epoch)?;
        let mut map = self.map.write();
        let before = map.len();
        map.retain(|(t, _), _| !ranges.iter().any(|r| r.contains(*t)));
        Ok(before - map.len())
    }

    fn count_in_ranges(&self, ranges: &[TokenRange]) -> Result<RangeCount> {
        let map = self.map.read();
        let mut count = RangeCount::default();
        for r in self.in_ranges(&map, ranges) {
            match r.value {
                Some(v) => {
                    count.live += 1;
                    count.live_bytes += (r.key.len() + v.len()) as u64;
                }
                None => count.tombstones += 1,
            }
        }
        Ok(count)
    }

    fn held(&self) -> Result<RangeCount> {
        self.count_in_ranges(&[TokenRange::FULL])
    }

    /// The records holding a value with an expiry, expired or not: nothing reclaims an
    /// expired value here (there is no compaction), so it counts until a write replaces it.
    fn expiring_keys(&self) -> Option<u64> {
        let map = self.map.read();
        Some(map.values().filter(|c| c.expires.is_some()).count() as u64)
    }

    fn fence(&self, epoch: u64) {
        self.fence.raise(epoch);
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

/// A [`Backend`] of [`MemoryReplica`]s. Reopening a node's directory through the same backend
/// gives back the same data, so tests can drop a cluster (a crash without clean shutdown) and
/// reopen it.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
///
/// let dir = tempfile::tempdir()?;
/// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
/// let cluster = Cluster::open(dir.path(), opts.clone())?;
/// cluster.put(b"k", b"v")?;
/// drop(cluster);
/// let cluster = Cluster::open(dir.path(), opts)?;
/// assert_eq!(cluster.get(b"k")?.as_deref(), Some(&b"v"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct MemoryBackend {
    stores: Mutex<HashMap<PathBuf, Arc<RwLock<Map>>>>,
    /// The clock its replicas judge expiry by (`None`: the system clock).
    clock: Option<ClockHandle>,
}

/// A clock shared by a backend's replicas (`Debug` for the backend's derive).
#[derive(Clone)]
struct ClockHandle(Arc<dyn Clock>);

impl std::fmt::Debug for ClockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl MemoryBackend {
    /// A backend whose replicas judge expiry against `clock` (tests inject a simulated one,
    /// usually the cluster's [`ClusterOptions::clock`](crate::ClusterOptions::clock)).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryBackend {
            stores: Mutex::default(),
            clock: Some(ClockHandle(clock)),
        }
    }
}

impl Backend for MemoryBackend {
    fn open(&self, id: &NodeId, dir: &Path) -> Result<Arc<dyn Replica>> {
        let map = Arc::clone(self.stores.lock().entry(dir.to_path_buf()).or_default());
        let clock = match &self.clock {
            Some(c) => c.clone(),
            None => ClockHandle(Arc::new(SystemClock)),
        };
        Ok(Arc::new(MemoryReplica {
            id: id.clone(),
            map,
            fence: Fence::default(),
            clock,
        }))
    }

    fn destroy(&self, _id: &NodeId, dir: &Path) -> Result<()> {
        self.stores.lock().remove(dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w<'a>(k: &'a [u8], v: Option<&'a [u8]>, ver: u64) -> Write<'a> {
        Write {
            key: k,
            value: v,
            version: Version::new(ver),
            expires: None,
        }
    }

    #[test]
    fn spans_cover_wrapping_ranges() {
        let s: Vec<_> = spans(TokenRange::new(u64::MAX - 1, 3)).collect();
        assert_eq!(s, vec![(u64::MAX, u64::MAX), (0, 3)]);
        let s: Vec<_> = spans(TokenRange::new(u64::MAX, 3)).collect();
        assert_eq!(s, vec![(0, 3)]);
        let s: Vec<_> = spans(TokenRange::FULL).collect();
        assert_eq!(s, vec![(0, u64::MAX)]);
    }

    #[test]
    fn export_drop_and_count_follow_ranges() {
        let n = MemoryReplica::new("n").unwrap();
        let keys: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for (i, k) in keys.iter().enumerate() {
            let v: Option<&[u8]> = if i % 10 == 0 { None } else { Some(b"v") };
            n.apply(0, w(k, v, 1)).unwrap();
        }
        let range = TokenRange::new(u64::MAX / 2, u64::MAX / 4); // wraps
        let inside = keys.iter().filter(|k| range.contains(token(k))).count();
        let exported: usize = n
            .export(0, &[range], 7)
            .unwrap()
            .map(|b| b.unwrap().len())
            .sum();
        assert_eq!(exported, inside);
        let c = n.count_in_ranges(&[range]).unwrap();
        assert_eq!((c.live + c.tombstones) as usize, inside);
        assert_eq!(n.drop_ranges(0, &[range]).unwrap(), inside);
        assert_eq!(n.len(), 200 - inside);
    }

    #[test]
    fn fenced_replica_refuses_stale_epochs() {
        let n = MemoryReplica::new("n").unwrap();
        n.fence(3);
        assert!(n.apply(2, w(b"k", Some(b"v"), 1)).is_err());
        assert!(n.apply(3, w(b"k", Some(b"v"), 1)).unwrap());
    }
}
