//! [`Node`]: open, the write path, the read path, stats.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use kv_cache::{Cache, CacheBuilder};
use kv_wal::{Lsn, Wal};
use parking_lot::Mutex;

use crate::doorkeeper::Doorkeeper;
use crate::gate::Gate;
use crate::index::{Index, Location, Upsert};
use crate::maintenance::Maintenance;
use crate::options::CacheCapacity;
use crate::record::Cell;
use crate::record::{self, Write};
use crate::recovery::{self, RecoveryReport};
use crate::segments::Segments;
use crate::stats::NodeStats;
use crate::stripe::Counter;
use crate::{Error, Hlc, NodeOptions, Result, Version};

/// What the cache holds per key: the value, its version and its expiry (so that a hit needs
/// no look at the record to tell whether it expired).
pub(crate) type Cached = (Bytes, Version, Option<u64>);
pub(crate) type ValueCache = Cache<Bytes, Cached, fn(&Bytes, &Cached) -> u64>;

/// A key's newest record as the index and the log hold it: the value (`None` for a
/// tombstone), its version, and its expiry, not yet judged against the clock.
pub(crate) type Raw = (Option<Bytes>, Version, Option<u64>);

/// How many times a read retries when compaction moved the record it was about to read.
const READ_RETRIES: usize = 32;

/// Shared state of an open node (the background thread holds it too).
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub wal: Wal,
    pub index: Index,
    pub cache: ValueCache,
    /// Cache admission on the read path.
    pub doorkeeper: Doorkeeper,
    /// Writers hold one shard of it shared from their append to their index update;
    /// compaction and `drop_ranges` hold every shard exclusively, so they see no write half
    /// done. Sharded so that writers on different threads do not bounce one lock word.
    pub gate: Gate,
    pub segments: Segments,
    pub live_keys: Counter,
    pub tombstones: Counter,
    /// Index entries whose record has an expiry (expired or not).
    pub expiring_keys: Counter,
    /// Framed bytes of the records the index points at.
    pub live_bytes: Counter,
    pub hlc: Hlc,
    pub opts: NodeOptions,
    /// One compaction or hint pass at a time.
    pub maintenance_lock: Mutex<()>,
    /// Segments with a valid hint file.
    pub hinted: Mutex<BTreeSet<u32>>,
    pub recovery: RecoveryReport,
    pub last_maintenance_error: Mutex<Option<String>>,
    /// Drops whose scan is running: compaction must drop, not move, what they cover.
    pub pending_drops: Mutex<Vec<Arc<PendingDrop>>>,
    pub compactions: AtomicU64,
    pub hints_written: AtomicU64,
}

/// A `drop_ranges` between appending its drop record and finishing its scan of the index.
pub(crate) struct PendingDrop {
    pub ranges: Vec<kv_ring::TokenRange>,
    /// Its drop record: it forgets what lies before this.
    pub marker: Lsn,
    /// Entries compaction removed on its behalf (they count as dropped).
    pub removed: AtomicU64,
}

impl PendingDrop {
    /// Whether the drop covers a record of this token at this position.
    pub fn covers(&self, token: u64, at: Lsn) -> bool {
        at < self.marker && self.ranges.iter().any(|r| r.contains(token))
    }
}

/// A key's newest record as [`Node::get_versioned`] reports it: the value (`None` for a
/// tombstone) and its version.
pub type Versioned = (Option<Bytes>, Version);

/// One storage node: a log-structured hash table on a [`kv_wal::Wal`], fronted by a
/// [`kv_cache::Cache`]. See the [crate docs](crate) for the design.
///
/// `Node` is `Send + Sync`: share it (`Arc<Node>`) between threads.
///
/// ```
/// use kv_node::{Node, NodeOptions, Version};
/// let dir = tempfile::tempdir()?;
/// let node = Node::open(dir.path(), NodeOptions::new())?;
/// assert!(node.apply(b"k", Some(b"v2"), Version::new(2))?);
/// assert!(!node.apply(b"k", Some(b"v1"), Version::new(1))?); // older: ignored
/// assert_eq!(node.get(b"k")?.unwrap().0, &b"v2"[..]);
/// node.close()?;
/// let node = Node::open(dir.path(), NodeOptions::new())?; // recovers
/// assert_eq!(node.get(b"k")?.unwrap().1, Version::new(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Node {
    pub(crate) inner: Arc<Inner>,
    maintenance: Option<Maintenance>,
}

thread_local! {
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Node {
    /// Opens (creating if needed) the node stored in `dir`: its log lives in `dir/wal`
    /// (segments, hint files and the `LOCK` file). Recovers the index from hint files and a
    /// scan of the rest of the log; see [`Node::recovery_report`].
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another `Node` (this process or another) has the directory open;
    /// [`Error::InvalidOptions`]; [`Error::Wal`] if the log is corrupt beyond what its
    /// recovery mode discards; [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, opts: NodeOptions) -> Result<Node> {
        let started = std::time::Instant::now();
        opts.validate()?;
        let dir = dir.as_ref().to_owned();
        let wal_dir = dir.join("wal");
        // Each new level synced into its parent: a node directory that a power cut can take
        // away loses the whole log, however well its segments were flushed.
        kv_wal::durable::create_dir_all(&wal_dir).map_err(Error::durable)?;
        let wal = Wal::open(&wal_dir, opts.wal.clone())?;
        let cache = build_cache(opts.cache);
        let inner = Inner {
            dir,
            wal,
            index: Index::new(opts.index_partition_bits),
            cache,
            doorkeeper: Doorkeeper::default(),
            gate: Gate::default(),
            segments: Segments::default(),
            live_keys: Counter::default(),
            tombstones: Counter::default(),
            expiring_keys: Counter::default(),
            live_bytes: Counter::default(),
            hlc: Hlc::with_clock(Arc::clone(&opts.clock)),
            opts,
            maintenance_lock: Mutex::new(()),
            hinted: Mutex::new(BTreeSet::new()),
            recovery: RecoveryReport::default(),
            last_maintenance_error: Mutex::new(None),
            pending_drops: Mutex::new(Vec::new()),
            compactions: AtomicU64::new(0),
            hints_written: AtomicU64::new(0),
        };
        let inner = Arc::new(recovery::recover(inner, started)?);
        let maintenance = if inner.opts.background {
            Some(Maintenance::start(Arc::clone(&inner))?)
        } else {
            None
        };
        Ok(Node { inner, maintenance })
    }

    /// The directory the node was opened on.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Applies a write with last-writer-wins: stores `value` (or a tombstone, for `None`)
    /// under `key` if `version` is higher than the version the node holds for `key`.
    /// Returns whether it changed anything. Idempotent: applying the same write twice, or an
    /// older one after a newer one, changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLarge`], [`Error::ValueTooLarge`],
    /// [`Error::VersionTooLarge`]; [`Error::Wal`] if the log cannot take it (a full disk, a
    /// failed flush).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.apply(b"k", None, Version::new(5))?; // a delete that arrived first
    /// assert!(!node.apply(b"k", Some(b"late"), Version::new(4))?);
    /// assert_eq!(node.get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>, version: Version) -> Result<bool> {
        check_version(version)?;
        self.apply_checked(key, value, version, None, true)
    }

    /// [`Node::apply`] of a value that expires at `expires` (milliseconds since the Unix
    /// epoch; `None`: never, as [`Node::apply`]). From that time on the key reads as not found,
    /// and as a tombstone at `version` through the versioned reads (`docs/design.md`,
    /// *Expiring keys*). An expiry given with a tombstone (`value` `None`) is ignored.
    ///
    /// # Errors
    ///
    /// As [`Node::apply`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use kv_node::{Clock, Node, NodeOptions, Version};
    /// struct Fake(AtomicU64);
    /// impl Clock for Fake {
    ///     fn now_millis(&self) -> u64 { self.0.load(Ordering::Relaxed) }
    /// }
    /// let clock = Arc::new(Fake(AtomicU64::new(1_000_000)));
    /// let node = Node::open(dir.path(), NodeOptions::new().clock(clock.clone()))?;
    /// let v = Version::from_parts(1_000_000, 0);
    /// node.apply_expiring(b"session", Some(b"active"), v, Some(1_030_000))?;
    /// assert!(node.get(b"session")?.is_some());
    /// clock.0.store(1_030_000, Ordering::Relaxed); // 30 s later
    /// assert_eq!(node.get(b"session")?, None);
    /// assert_eq!(node.get_versioned(b"session")?, Some((None, v))); // a tombstone at v
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_expiring(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        expires: Option<u64>,
    ) -> Result<bool> {
        check_version(version)?;
        self.apply_checked(key, value, version, expires, true)
    }

    /// [`Node::apply`]; `look_first`: whether to look the key up before appending, so that a
    /// write the index already has a newer version for is not logged at all. `put` and
    /// `delete` skip it: their version comes from the node's clock, newer than every
    /// version applied so far, so the lookup would find nothing newer but cost a cache miss.
    /// (A racing newer write still wins in the index; the record is then dead, as it would
    /// be after any overwrite.)
    fn apply_checked(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        expires: Option<u64>,
        look_first: bool,
    ) -> Result<bool> {
        self.inner.check(key, value)?;
        let token = kv_ring::token(key);
        let expires = record::normalize(value, expires);
        let changed = !matches!(
            self.inner
                .write_with(token, key, value, version, expires, look_first)?,
            Upsert::Kept(_)
        );
        if changed {
            self.inner
                .refresh_cache(token, key, value, version, expires);
        } else {
            self.inner.invalidate_older(key, version);
        }
        Ok(changed)
    }

    /// Applies many writes as one atomic log batch: after a crash, all of them or none are
    /// recovered. Each write is last-writer-wins as in [`Node::apply`]; returns how many
    /// changed something.
    ///
    /// # Errors
    ///
    /// As [`Node::apply`] for each write (checked before anything is written), and
    /// [`Error::BatchTooLarge`] if the batch does not fit in one log segment.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Version, Write};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// let v = Version::new(1);
    /// let n = node.apply_batch(&[
    ///     Write { key: b"a", value: Some(b"1"), version: v, expires: None },
    ///     Write { key: b"b", value: Some(b"2"), version: v, expires: None },
    /// ])?;
    /// assert_eq!(n, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_batch(&self, writes: &[Write<'_>]) -> Result<usize> {
        self.inner.apply_batch(writes)
    }

    /// The value and version of `key`, or `None` if it is absent or deleted.
    ///
    /// Served from the cache when it holds the key, else from the index and the
    /// memory-mapped log (then cached). Never older than the latest write applied before the
    /// call.
    ///
    /// # Errors
    ///
    /// [`Error::Wal`] / [`Error::CorruptRecord`] if the record cannot be read back.
    pub fn get(&self, key: &[u8]) -> Result<Option<(Bytes, Version)>> {
        Ok(match self.get_versioned(key)? {
            Some((Some(value), version)) => Some((value, version)),
            Some((None, _)) | None => None,
        })
    }

    /// Like [`Node::get`], but a deleted key returns its tombstone: `Some((None, version))`.
    /// What a cluster coordinator reads (it must compare deletes too, for quorum reads and
    /// read repair). Values come through the cache as for [`Node::get`]; tombstones are never
    /// cached, so a deleted key is always answered from the index.
    ///
    /// # Errors
    ///
    /// As [`Node::get`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.apply(b"k", None, Version::new(3))?;
    /// assert_eq!(node.get_versioned(b"k")?, Some((None, Version::new(3))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_versioned(&self, key: &[u8]) -> Result<Option<(Option<Bytes>, Version)>> {
        if let Some((value, version, expires)) = self.inner.cache.get(key) {
            return Ok(Some((self.inner.unexpired(Some(value), expires), version)));
        }
        let token = kv_ring::token(key);
        let found = self.inner.read(token, key)?;
        if let Some((Some(value), version, expires)) = &found
            && self.inner.doorkeeper.admit(token)
        {
            self.inner.fill_cache(token, key, value, *version, *expires);
        }
        Ok(found.map(|(value, version, expires)| (self.inner.unexpired(value, expires), version)))
    }

    /// The key's newest record with its expiry, **not judged** against the clock: an expired
    /// value is returned as stored, with its expiry (`None` if the node holds nothing for the
    /// key). What a cluster coordinator reads, so that it judges expiry by its own clock
    /// ([`Cell::judged`]); everything else should use [`Node::get_versioned`]. A value that
    /// compaction has already turned into a tombstone answers as that tombstone.
    ///
    /// # Errors
    ///
    /// As [`Node::get`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.apply_expiring(b"k", Some(b"v"), Version::new(3), Some(1))?; // long expired
    /// assert_eq!(node.get(b"k")?, None);
    /// let cell = node.get_cell(b"k")?.unwrap();
    /// assert_eq!((cell.value.as_deref(), cell.expires), (Some(&b"v"[..]), Some(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_cell(&self, key: &[u8]) -> Result<Option<Cell>> {
        if let Some((value, version, expires)) = self.inner.cache.get(key) {
            return Ok(Some(Cell {
                value: Some(value),
                version,
                expires,
            }));
        }
        let token = kv_ring::token(key);
        let found = self.inner.read(token, key)?;
        if let Some((Some(value), version, expires)) = &found
            && self.inner.doorkeeper.admit(token)
        {
            self.inner.fill_cache(token, key, value, *version, *expires);
        }
        Ok(found.map(|(value, version, expires)| Cell {
            value,
            version,
            expires,
        }))
    }

    /// [`Node::get`] for many keys at once: the answers in the order of `keys`.
    ///
    /// Each answer is what a [`Node::get`] of that key at some moment during the call would
    /// return (never older than the latest write applied before the call). Faster than one
    /// `get` after another when the values are not in the CPU's caches: the records of all
    /// the keys the cache misses are fetched from memory at once, so their cache misses
    /// overlap (RocksDB's `MultiGet` batches its reads the same way). Batches of 16 to 64
    /// keys give most of the gain.
    ///
    /// # Errors
    ///
    /// As [`Node::get`], for the first key whose record cannot be read back.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.put(b"a", b"1")?;
    /// node.put(b"b", b"2")?;
    /// node.delete(b"b")?;
    /// let got = node.get_many(&[&b"a"[..], b"b", b"c"])?;
    /// assert_eq!(got[0].as_ref().map(|(v, _)| v.as_ref()), Some(&b"1"[..]));
    /// assert!(got[1].is_none() && got[2].is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<(Bytes, Version)>>> {
        Ok(self
            .get_many_versioned(keys)?
            .into_iter()
            .map(|found| match found {
                Some((Some(value), version)) => Some((value, version)),
                Some((None, _)) | None => None,
            })
            .collect())
    }

    /// [`Node::get_versioned`] for many keys at once (tombstones included), as
    /// [`Node::get_many`] is to [`Node::get`].
    ///
    /// # Errors
    ///
    /// As [`Node::get`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.apply(b"k", None, Version::new(3))?;
    /// assert_eq!(node.get_many_versioned(&[b"k"])?, vec![Some((None, Version::new(3)))]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_many_versioned<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Versioned>>> {
        let cells = self.get_many_cells(keys)?;
        // Read once for the batch: an answer is what a get at some moment of the call gives.
        let now = cells
            .iter()
            .any(|c| c.as_ref().is_some_and(|c| c.expires.is_some()))
            .then(|| self.inner.now_millis());
        Ok(cells
            .into_iter()
            .map(|c| {
                c.map(|c| {
                    let c = match now {
                        Some(now) => c.judged(now),
                        None => c,
                    };
                    (c.value, c.version)
                })
            })
            .collect())
    }

    /// [`Node::get_cell`] for many keys at once, answers in order, as [`Node::get_many`] is
    /// to [`Node::get`]: what a cluster coordinator asks a key's first replica for a batch.
    ///
    /// # Errors
    ///
    /// As [`Node::get`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Cell, Node, NodeOptions, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.apply_expiring(b"k", Some(b"v"), Version::new(3), Some(1))?; // long expired
    /// let cells = node.get_many_cells(&[&b"k"[..], b"x"])?;
    /// assert_eq!(cells[0].as_ref().map(|c| c.expires), Some(Some(1)));
    /// assert_eq!(cells[1], None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_many_cells<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Cell>>> {
        let inner = &*self.inner;
        let mut found = Vec::with_capacity(keys.len());
        // The keys the cache missed: (position, token).
        let mut missed = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            if let Some((value, version, expires)) = inner.cache.get(key) {
                found.push(Some(Cell {
                    value: Some(value),
                    version,
                    expires,
                }));
            } else {
                found.push(None);
                missed.push((i, kv_ring::token(key)));
            }
        }
        let lookups: Vec<(u64, &[u8])> = missed
            .iter()
            .map(|&(i, token)| (token, keys[i].as_ref()))
            .collect();
        // Of those, the ones whose newest record is a put: (position, token, where).
        let mut to_read = Vec::new();
        for (&(i, token), loc) in missed.iter().zip(inner.index.get_many(&lookups)) {
            match loc {
                Some(loc) if loc.tombstone => found[i] = Some(Cell::tombstone(loc.version)),
                Some(loc) => to_read.push((i, token, loc)),
                None => {}
            }
        }
        let lsns: Vec<Lsn> = to_read.iter().map(|(_, _, loc)| loc.lsn).collect();
        // Every value into one buffer, which the answers are slices of: one allocation per
        // batch rather than one per key. (A value the caller keeps keeps the batch's buffer
        // alive; the cache gets copies, so that its weight is what it holds.)
        let mut buf = Vec::with_capacity(to_read.iter().map(|(_, _, l)| l.len as usize).sum());
        let mut spans = Vec::with_capacity(lsns.len());
        inner.wal.read_many_with(&lsns, |_, payload| {
            spans.push(payload.map(|p| {
                record::value_in(p).map(|(v, expires)| {
                    let span = v.map(|v| {
                        buf.extend_from_slice(v);
                        buf.len() - v.len()..buf.len()
                    });
                    (span, expires)
                })
            }));
        });
        let values = Bytes::from(buf);
        for ((i, token, loc), span) in to_read.into_iter().zip(spans) {
            let key = keys[i].as_ref();
            let raw = match span {
                Ok(Ok((span, expires))) => {
                    Some((span.map(|s| values.slice(s)), loc.version, expires))
                }
                Ok(Err(e)) => return Err(e.at(loc.lsn)),
                // Compaction moved the record and removed its segment: the one-key path
                // looks again.
                Err(kv_wal::Error::InvalidLsn { .. }) => inner.read(token, key)?,
                Err(e) => return Err(e.into()),
            };
            if let Some((Some(value), version, expires)) = &raw
                && inner.doorkeeper.admit(token)
            {
                inner.fill_cache(
                    token,
                    key,
                    &Bytes::copy_from_slice(value),
                    *version,
                    *expires,
                );
            }
            found[i] = raw.map(|(value, version, expires)| Cell {
                value,
                version,
                expires,
            });
        }
        Ok(found)
    }

    /// The version of `key`'s newest record (a tombstone's too), without reading its value
    /// out of the log: the cache if it holds the key, else the index. What a coordinator asks
    /// the replicas it needs only to compare (a digest read).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.apply(b"k", Some(b"v"), Version::new(7))?;
    /// assert_eq!(node.version_of(b"k"), Some(Version::new(7)));
    /// node.apply(b"k", None, Version::new(8))?;
    /// assert_eq!(node.version_of(b"k"), Some(Version::new(8)));
    /// assert_eq!(node.version_of(b"other"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn version_of(&self, key: &[u8]) -> Option<Version> {
        // An expired value answers with its version, as the tombstone it stands for would.
        if let Some((_, version, _)) = self.inner.cache.peek(key) {
            return Some(version);
        }
        self.inner
            .index
            .get(kv_ring::token(key), key)
            .map(|l| l.version)
    }

    /// [`Node::version_of`] for several keys, answers in order; the index lookups of the keys
    /// the cache does not hold are made together, as in [`Node::get_many`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.apply(b"a", Some(b"v"), Version::new(7))?;
    /// node.apply(b"b", None, Version::new(8))?;
    /// assert_eq!(
    ///     node.versions_of(&[&b"a"[..], b"b", b"c"]),
    ///     vec![Some(Version::new(7)), Some(Version::new(8)), None]
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn versions_of<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Option<Version>> {
        let mut found: Vec<Option<Version>> = keys
            .iter()
            .map(|k| self.inner.cache.peek(k.as_ref()).map(|(_, v, _)| v))
            .collect();
        let missed: Vec<(usize, (u64, &[u8]))> = keys
            .iter()
            .enumerate()
            .filter(|&(i, _)| found[i].is_none())
            .map(|(i, k)| (i, (kv_ring::token(k.as_ref()), k.as_ref())))
            .collect();
        let lookups: Vec<(u64, &[u8])> = missed.iter().map(|&(_, l)| l).collect();
        for ((i, _), loc) in missed.iter().zip(self.inner.index.get_many(&lookups)) {
            found[*i] = loc.map(|l| l.version);
        }
        found
    }

    /// Stores `value` under `key` with a new version from the node's clock (single-node use;
    /// a cluster assigns versions itself and calls [`Node::apply`]). Returns the version.
    ///
    /// # Errors
    ///
    /// As [`Node::apply`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let node = kv_node::Node::open(dir.path(), kv_node::NodeOptions::new())?;
    /// let v1 = node.put(b"user:1", b"Alice")?;
    /// let v2 = node.put(b"user:1", b"Alice Johnson")?;
    /// assert!(v2 > v1);
    /// assert_eq!(node.get(b"user:1")?.unwrap().0, &b"Alice Johnson"[..]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Version> {
        let version = self.inner.now()?;
        self.apply_checked(key, Some(value), version, None, false)?;
        Ok(version)
    }

    /// [`Node::put`] of a value that expires at `expires` (milliseconds since the Unix epoch,
    /// judged against [`NodeOptions::clock`](crate::NodeOptions::clock)): from then on the key
    /// reads as not found. `None` is [`Node::put`].
    ///
    /// # Errors
    ///
    /// As [`Node::apply`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let node = kv_node::Node::open(dir.path(), kv_node::NodeOptions::new())?;
    /// use kv_node::{Clock, SystemClock};
    /// let in_a_minute = SystemClock.now_millis() + 60_000;
    /// node.put_expiring(b"session:abc123", b"active", Some(in_a_minute))?;
    /// assert!(node.get(b"session:abc123")?.is_some());
    /// node.put_expiring(b"gone", b"x", Some(1))?; // an expiry in the past
    /// assert_eq!(node.get(b"gone")?, None);
    /// assert_eq!(node.stats().expiring_keys, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_expiring(&self, key: &[u8], value: &[u8], expires: Option<u64>) -> Result<Version> {
        let version = self.inner.now()?;
        self.apply_checked(key, Some(value), version, expires, false)?;
        Ok(version)
    }

    /// Deletes `key` (writes a tombstone with a new version from the node's clock). Returns
    /// the tombstone's version.
    ///
    /// # Errors
    ///
    /// As [`Node::apply`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let node = kv_node::Node::open(dir.path(), kv_node::NodeOptions::new())?;
    /// node.put(b"k", b"v")?;
    /// node.delete(b"k")?;
    /// assert_eq!(node.get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete(&self, key: &[u8]) -> Result<Version> {
        let version = self.inner.now()?;
        self.apply_checked(key, None, version, None, false)?;
        Ok(version)
    }

    /// Makes every write applied so far durable (one shared flush of the log).
    ///
    /// # Errors
    ///
    /// [`Error::Wal`] if the flush fails (the log is then poisoned).
    pub fn sync(&self) -> Result<()> {
        Ok(self.inner.wal.sync()?)
    }

    /// What recovery found when this node was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// When the log's last flush that made writes durable finished; `None` before the first
    /// since the node was opened ([`kv_wal::Wal::last_flush`]). Cheaper than
    /// [`Node::stats`], which also reports it.
    pub fn last_flush(&self) -> Option<std::time::SystemTime> {
        self.inner.wal.last_flush()
    }

    /// Counts of keys, bytes, segments and cache activity.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let node = kv_node::Node::open(dir.path(), kv_node::NodeOptions::new())?;
    /// node.put(b"a", b"1")?;
    /// node.put(b"a", b"2")?;
    /// node.delete(b"b")?;
    /// let s = node.stats();
    /// assert_eq!((s.live_keys, s.tombstones), (1, 1));
    /// assert!(s.dead_bytes > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> NodeStats {
        self.inner.stats()
    }

    /// Stops the background thread, flushes the log and releases the directory.
    ///
    /// # Errors
    ///
    /// As [`Node::sync`].
    pub fn close(mut self) -> Result<()> {
        if let Some(m) = self.maintenance.take() {
            m.stop();
        }
        self.inner.wal.sync()?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(m) = self.maintenance.take() {
            m.stop();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn build_cache(capacity: CacheCapacity) -> ValueCache {
    fn one(_: &Bytes, _: &Cached) -> u64 {
        1
    }
    fn bytes(k: &Bytes, v: &Cached) -> u64 {
        (k.len() + v.0.len() + 32) as u64
    }
    // The table is sized once from the expected number of entries (kv-cache never resizes):
    // say it, or a weigher makes the builder assume 1 KiB entries.
    const MAX_ITEMS: u64 = kv_cache::MAX_ESTIMATED_ITEMS as u64;
    match capacity {
        CacheCapacity::Entries(n) => CacheBuilder::new(n.max(1))
            .estimated_items(n.clamp(1, MAX_ITEMS) as usize)
            .weigher(one as fn(&Bytes, &Cached) -> u64)
            .build(),
        // Assume entries of about 256 bytes.
        CacheCapacity::Bytes(n) => CacheBuilder::new(n.max(1))
            .estimated_items((n / 256).clamp(1, MAX_ITEMS) as usize)
            .weigher(bytes as fn(&Bytes, &Cached) -> u64)
            .build(),
    }
}

/// Refuses a version from elsewhere past [`Version::LIMIT`] (the node's clock would follow
/// it to its end).
pub(crate) fn check_version(version: Version) -> Result<()> {
    if version >= Version::LIMIT {
        return Err(Error::VersionTooLarge { version });
    }
    Ok(())
}

/// Framed size of a payload in the log.
pub(crate) fn frame(payload_len: usize) -> u64 {
    kv_wal::layout::frame_len(payload_len) as u64
}

impl Inner {
    /// The log and index half of [`Node::apply`] (the caller then updates the cache): appends
    /// the write unless the index already holds a version at least as new, and updates the
    /// index. `Kept` if it changed nothing.
    #[cfg(test)]
    pub fn write(
        &self,
        token: u64,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> Result<Upsert> {
        self.write_with(token, key, value, version, None, true)
    }

    /// `Inner::write` (a test-only helper), looking the key up first only if `look_first` (see
    /// `Node::apply_checked`).
    #[inline]
    pub fn write_with(
        &self,
        token: u64,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        expires: Option<u64>,
        look_first: bool,
    ) -> Result<Upsert> {
        self.write_seeing(token, key, value, version, expires, look_first, |_| {})
    }

    /// [`Inner::write_with`], calling `replaced` with the record the write replaced (if it
    /// replaced one) while the write gate is still held: compaction cannot delete that
    /// record's segment meanwhile (it can only delete a segment after copying its live
    /// records under the gate, and the record was live until this write's index update), so
    /// `replaced` can read it out of the log. The plain write path passes a no-op, which
    /// compiles away. `expires` is normalized (none for a tombstone).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn write_seeing(
        &self,
        token: u64,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        expires: Option<u64>,
        look_first: bool,
        replaced: impl FnOnce(&Location),
    ) -> Result<Upsert> {
        // A version from elsewhere (a coordinator, a replica): later `put`s must be newer.
        // Newer than every version observed so far, so than every one in the index (each was
        // observed before it got there): no need to look.
        let newest = self.hlc.observe_newer(version);
        if newest || !look_first {
            self.index.prefetch(token);
        }
        if look_first
            && !newest
            && let Some(cur) = self.index.get(token, key)
            && cur.version >= version
        {
            return Ok(Upsert::Kept(cur));
        }
        let payload_len = record::entry_len(key, value, expires);
        ENCODE_BUF.with_borrow_mut(|buf| {
            record::encode_entry(buf, token, version, key, value, expires);
            let _gate = self.gate.shared();
            let lsn = self.wal.append(buf)?;
            let loc = Location {
                version,
                lsn,
                len: payload_len as u32,
                tombstone: value.is_none(),
                stale_after: false,
                expiring: expires.is_some(),
            };
            self.written(&loc, expires);
            let outcome = self.index.upsert(token, key, loc, false);
            self.account(&outcome, loc);
            match &outcome {
                Upsert::Kept(cur) => self.restate_tombstone(token, key, *cur, lsn)?,
                Upsert::Replaced(old) => replaced(old),
                Upsert::Inserted => {}
            }
            Ok(outcome)
        })
    }

    /// After a record of `key` logged at `stale` lost to `cur` in the index (a newer write
    /// won the race between this one's lookup and its append): if `cur` is a tombstone
    /// logged *before* `stale`, logs it again after it and points the index there. The
    /// caller holds the write gate, so compaction cannot move `cur` meanwhile.
    ///
    /// Why: compaction purges a tombstone with its segment once its grace period is over,
    /// and then nothing in the log says the older record at `stale`, in a later segment
    /// still there, is dead; a reopen would bring the deleted key back. A tombstone logged
    /// after every older record of its key is purged only with (or after) all of them.
    pub fn restate_tombstone(
        &self,
        token: u64,
        key: &[u8],
        cur: Location,
        stale: Lsn,
    ) -> Result<()> {
        if !cur.tombstone || cur.lsn > stale {
            return Ok(());
        }
        let mut buf = Vec::new();
        record::encode_entry(&mut buf, token, cur.version, key, None, None);
        let lsn = self.wal.append(&buf)?;
        let bytes = frame(buf.len());
        self.segments.written(lsn.segment(), bytes);
        // Another restatement (for another stale record) may have moved it further already.
        let dead = self
            .index
            .advance_tombstone(token, key, cur.version, lsn)
            .unwrap_or(lsn);
        self.segments.dead(dead.segment(), bytes);
        Ok(())
    }

    /// A new version from the node's clock, unless the clock is at its end (it followed a
    /// version past [`Version::LIMIT`] found in a log written before the limit existed):
    /// every version it gives from there on is the same, so a write would be lost.
    pub fn now(&self) -> Result<Version> {
        let version = self.hlc.now();
        if version.as_u64() == u64::MAX {
            return Err(Error::VersionTooLarge { version });
        }
        Ok(version)
    }

    /// The clock expiry is judged against, in milliseconds since the Unix epoch.
    #[inline]
    pub fn now_millis(&self) -> u64 {
        self.opts.clock.now_millis()
    }

    /// `value`, or `None` if a record with this expiry is expired now (the clock is read
    /// only for a record with an expiry).
    #[inline]
    pub fn unexpired(&self, value: Option<Bytes>, expires: Option<u64>) -> Option<Bytes> {
        match expires {
            Some(_) if crate::is_expired(expires, self.now_millis()) => None,
            _ => value,
        }
    }

    /// Counts a record just logged at `loc` (with this expiry) into its segment.
    pub fn written(&self, loc: &Location, expires: Option<u64>) {
        let bytes = frame(loc.len as usize);
        match expires {
            Some(e) if loc.expiring => self.segments.written_expiring(loc.lsn.segment(), bytes, e),
            _ => self.segments.written(loc.lsn.segment(), bytes),
        }
    }

    /// Counts the record at `loc` dead in its segment.
    pub fn bury(&self, loc: &Location) {
        let bytes = frame(loc.len as usize);
        if loc.expiring {
            self.segments.dead_expiring(loc.lsn.segment(), bytes);
        } else {
            self.segments.dead(loc.lsn.segment(), bytes);
        }
    }

    /// Enforces the limits on one write.
    pub fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > self.opts.max_key_len {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: self.opts.max_key_len,
            });
        }
        if let Some(v) = value {
            let max = self.max_value_len(key.len());
            if v.len() > max {
                return Err(Error::ValueTooLarge { len: v.len(), max });
            }
        }
        Ok(())
    }

    /// The longest value that fits with a key of `key_len` bytes.
    fn max_value_len(&self, key_len: usize) -> usize {
        // Room for an expiry too, so that a value accepted without one is accepted with one.
        let fits = self
            .max_payload()
            .saturating_sub(record::ENTRY_HEADER_EXPIRING + key_len);
        self.opts.max_value_len.min(fits)
    }

    /// The largest payload (or batch of payloads) a segment holds.
    pub fn max_payload(&self) -> usize {
        (self.opts.wal.get_segment_size() as usize)
            .saturating_sub(kv_wal::layout::HEADER_LEN + kv_wal::layout::RECORD_HEADER_LEN)
    }

    /// Updates counters after an index change made by a write of `loc`.
    pub fn account(&self, outcome: &Upsert, loc: Location) {
        let new_bytes = frame(loc.len as usize) as i64;
        match outcome {
            Upsert::Inserted => {
                self.count(loc.tombstone, 1);
                self.live_bytes.add(new_bytes);
                if loc.expiring {
                    self.expiring_keys.add(1);
                }
            }
            Upsert::Replaced(old) => {
                if old.tombstone != loc.tombstone {
                    self.count(old.tombstone, -1);
                    self.count(loc.tombstone, 1);
                }
                if old.expiring != loc.expiring {
                    self.expiring_keys
                        .add(i64::from(loc.expiring) - i64::from(old.expiring));
                }
                let old_bytes = frame(old.len as usize);
                self.bury(old);
                if new_bytes != old_bytes as i64 {
                    self.live_bytes.add(new_bytes - old_bytes as i64);
                }
            }
            Upsert::Kept(_) => self.bury(&loc),
        }
    }

    /// Adds `n` to the live-key or tombstone count.
    pub fn count(&self, tombstone: bool, n: i64) {
        let c = if tombstone {
            &self.tombstones
        } else {
            &self.live_keys
        };
        c.add(n);
    }

    /// An entry of the index was removed (dropped or purged).
    pub fn forget(&self, loc: &Location) {
        self.count(loc.tombstone, -1);
        if loc.expiring {
            self.expiring_keys.add(-1);
        }
        self.bury(loc);
        self.live_bytes.add(-(frame(loc.len as usize) as i64));
    }

    /// The newest record of `key` from the index and the log: `Some((None, v, None))` for a
    /// tombstone; the expiry is not judged here.
    pub fn read(&self, token: u64, key: &[u8]) -> Result<Option<Raw>> {
        for _ in 0..READ_RETRIES {
            let Some(loc) = self.index.get(token, key) else {
                return Ok(None);
            };
            if loc.tombstone {
                return Ok(Some((None, loc.version, None)));
            }
            match self.read_at(loc.lsn) {
                Ok((v, expires)) => return Ok(Some((v, loc.version, expires))),
                // Compaction moved the record and removed its segment: look again.
                Err(Error::Wal(kv_wal::Error::InvalidLsn { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Moved {
            retries: READ_RETRIES,
        })
    }

    /// The value of the put at `lsn` (`None` for a tombstone), and its expiry.
    pub fn read_at(&self, lsn: Lsn) -> Result<(Option<Bytes>, Option<u64>)> {
        self.wal
            .read_with(lsn, record::value_of)?
            .map_err(|e| e.at(lsn))
    }

    /// Caches a value if it is still the key's current version. The check and the insert
    /// happen under the key's index partition lock, which every writer takes to change the
    /// key, and writers refresh the cache after that: so the cache never holds a version
    /// older than the index's once the write that replaced it has returned (see the crate
    /// docs, *Cache coherence*).
    ///
    /// Returns whether it inserted.
    pub fn fill_cache(
        &self,
        token: u64,
        key: &[u8],
        value: &Bytes,
        version: Version,
        expires: Option<u64>,
    ) -> bool {
        self.index.with_location(token, key, |loc| {
            let current = loc.is_some_and(|l| l.version == version && !l.tombstone);
            if current {
                self.cache.insert(
                    Bytes::copy_from_slice(key),
                    (value.clone(), version, expires),
                );
            }
            current
        })
    }

    /// After a write changed the index: update the cached value if the key is cached, drop
    /// it for a tombstone. If a newer write has already overtaken this one in the index, its
    /// writer may not have refreshed the cache yet: drop anything older than this write, so
    /// that no get after this one returns sees an older version.
    pub fn refresh_cache(
        &self,
        token: u64,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        expires: Option<u64>,
    ) {
        match value {
            Some(v) if self.cache.contains_key(key) => {
                if !self.fill_cache(token, key, &Bytes::copy_from_slice(v), version, expires) {
                    self.invalidate_older(key, version);
                }
            }
            Some(_) => {}
            None => {
                self.cache.remove(key);
            }
        }
    }

    /// For a write that changed nothing because the index holds a newer version: that newer
    /// write may still be between its index update and its cache refresh, so the cache can
    /// still hold a version older than this one. Drop it, or a get after this write returns
    /// could see an older version. (Nothing older can be cached again: a fill needs the
    /// index to hold the version it inserts.)
    pub fn invalidate_older(&self, key: &[u8], version: Version) {
        if self
            .cache
            .peek(key)
            .is_some_and(|(_, cached, _)| cached < version)
        {
            self.cache.remove(key);
        }
    }

    pub fn apply_batch(&self, writes: &[Write<'_>]) -> Result<usize> {
        for w in writes {
            self.check(w.key, w.value)?;
            check_version(w.version)?;
        }
        // Keep only the writes that are newer than what the index holds now (a write newer
        // than every version observed needs no look: see `write_with`).
        let mut todo = Vec::with_capacity(writes.len());
        let mut bytes = 0usize;
        for w in writes {
            let token = kv_ring::token(w.key);
            if !self.hlc.observe_newer(w.version)
                && let Some(cur) = self.index.get(token, w.key)
                && cur.version >= w.version
            {
                self.invalidate_older(w.key, w.version);
                continue;
            }
            let len = record::entry_len(w.key, w.value, record::normalize(w.value, w.expires));
            bytes += kv_wal::layout::frame_len(len);
            todo.push((token, w, len));
        }
        if todo.is_empty() {
            return Ok(0);
        }
        if bytes > self.max_payload() {
            return Err(Error::BatchTooLarge {
                bytes,
                max: self.max_payload(),
            });
        }
        self.log_batch(&todo)
    }

    /// The second half of [`Inner::apply_batch`]: logs the writes that passed its lookups,
    /// `(token, write, payload length)`, as one batch, then updates the index and the cache.
    pub fn log_batch(&self, todo: &[(u64, &Write<'_>, usize)]) -> Result<usize> {
        // Every key's index slot is asked for first, so the cache misses of the updates
        // after the append overlap each other and the append instead of following one another.
        for (token, _, _) in todo {
            self.index.prefetch(*token);
        }
        // Every payload in one buffer: one allocation per batch, not one per write.
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(todo.len());
        for (token, w, _) in todo {
            let expires = record::normalize(w.value, w.expires);
            record::append_entry(&mut buf, *token, w.version, w.key, w.value, expires);
            ends.push(buf.len());
        }
        let refs: Vec<&[u8]> = ends
            .iter()
            .scan(0, |start, &end| {
                let r = &buf[*start..end];
                *start = end;
                Some(r)
            })
            .collect();
        let mut changed = 0;
        let mut failed = None;
        {
            let _gate = self.gate.shared();
            let first = self.wal.append_batch(&refs)?;
            // A batch lies in one segment.
            // A batch lies in one segment: its plain records are counted in at once.
            let plain: u64 = todo
                .iter()
                .filter(|(_, w, _)| record::normalize(w.value, w.expires).is_none())
                .map(|(_, _, len)| frame(*len))
                .sum();
            self.segments.written(first.segment(), plain);
            let mut lsn = first;
            for (token, w, len) in todo {
                let expires = record::normalize(w.value, w.expires);
                let loc = Location {
                    version: w.version,
                    lsn,
                    len: *len as u32,
                    tombstone: w.value.is_none(),
                    stale_after: false,
                    expiring: expires.is_some(),
                };
                if expires.is_some() {
                    self.written(&loc, expires);
                }
                let outcome = self.index.upsert(*token, w.key, loc, false);
                self.account(&outcome, loc);
                if let Upsert::Kept(cur) = outcome {
                    // Every write of the batch reaches the index before an error returns:
                    // the batch is in the log already.
                    if let Err(e) = self.restate_tombstone(*token, w.key, cur, loc.lsn) {
                        failed.get_or_insert(e);
                    }
                    self.invalidate_older(w.key, w.version);
                } else {
                    changed += 1;
                    let expires = record::normalize(w.value, w.expires);
                    self.refresh_cache(*token, w.key, w.value, w.version, expires);
                }
                lsn = Lsn::new(lsn.segment(), lsn.offset() + frame(*len) as u32);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(changed),
        }
    }

    pub fn stats(&self) -> NodeStats {
        let segs = self.segments.snapshot();
        let total: u64 = segs.iter().map(|s| s.total).sum();
        let live = self.live_bytes.sum().max(0) as u64;
        let cache = self.cache.stats();
        NodeStats {
            live_keys: self.live_keys.sum().max(0) as u64,
            tombstones: self.tombstones.sum().max(0) as u64,
            expiring_keys: self.expiring_keys.sum().max(0) as u64,
            live_bytes: live,
            dead_bytes: total.saturating_sub(live),
            segments: segs.len(),
            cache_entries: self.cache.len(),
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_evictions: cache.evictions,
            last_recovery: self.recovery.duration,
            compactions: self.compactions.load(Ordering::Relaxed),
            hints_written: self.hints_written.load(Ordering::Relaxed),
            last_maintenance_error: self.last_maintenance_error.lock().clone(),
            last_flush: self.wal.last_flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn v(n: u64) -> Version {
        Version::new(n)
    }

    /// A node with `key` at version 1 in its cache.
    fn cached_v1(dir: &Path) -> Node {
        let node = Node::open(dir, NodeOptions::new()).unwrap();
        node.apply(b"k", Some(b"one"), v(1)).unwrap();
        // The doorkeeper admits a key on its second miss.
        node.get(b"k").unwrap();
        node.get(b"k").unwrap();
        assert_eq!(node.inner.cache.peek(&b"k"[..]).unwrap().1, v(1));
        node
    }

    /// A write older than what the node holds is not logged, whether it comes alone or in a
    /// batch, before and after a reopen (the clock that tells "newer than everything" without
    /// a lookup is restored from the log); a newer one is.
    #[test]
    fn older_writes_are_not_logged_newer_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        for reopen in [false, true] {
            let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
            if !reopen {
                assert!(node.apply(b"k", Some(b"five"), v(5)).unwrap());
            }
            let end = node.inner.wal.end_lsn();
            assert!(!node.apply(b"k", Some(b"three"), v(3)).unwrap());
            let old = Write {
                key: b"k",
                value: None,
                version: v(4),
                expires: None,
            };
            assert_eq!(node.apply_batch(&[old]).unwrap(), 0);
            assert_eq!(node.inner.wal.end_lsn(), end, "reopen: {reopen}");
            assert_eq!(node.get(b"k").unwrap().unwrap().1, v(5));
        }
        let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
        let end = node.inner.wal.end_lsn();
        assert!(node.apply(b"k", Some(b"six"), v(6)).unwrap());
        assert!(node.inner.wal.end_lsn() > end);
    }

    /// The winner of a race (version 3) is preempted between its index update and its cache
    /// refresh; the loser (version 2) finds 3 in the index and returns. A get after that must
    /// not see version 1 from the cache. (`tests/coherence.rs` hits this race in about 1 run in 50.)
    #[test]
    fn a_write_overtaken_before_its_append_drops_older_cached_versions() {
        let dir = tempfile::tempdir().unwrap();
        let node = cached_v1(dir.path());
        let token = kv_ring::token(b"k");
        // The winner: log and index, no cache refresh yet.
        assert!(!matches!(
            node.inner.write(token, b"k", Some(b"three"), v(3)).unwrap(),
            Upsert::Kept(_)
        ));
        assert!(!node.apply(b"k", Some(b"two"), v(2)).unwrap());
        assert_eq!(node.get(b"k").unwrap().unwrap().1, v(3));
    }

    /// As above, but the loser got its record into the index first and the winner overtook it
    /// before the loser's refresh: the refresh finds 3 in the index, inserts nothing, and must
    /// drop version 1.
    #[test]
    fn a_write_overtaken_before_its_refresh_drops_older_cached_versions() {
        let dir = tempfile::tempdir().unwrap();
        let node = cached_v1(dir.path());
        let token = kv_ring::token(b"k");
        node.inner.write(token, b"k", Some(b"two"), v(2)).unwrap();
        node.inner.write(token, b"k", Some(b"three"), v(3)).unwrap();
        node.inner
            .refresh_cache(token, b"k", Some(b"two"), v(2), None);
        assert_eq!(node.get(b"k").unwrap().unwrap().1, v(3));
    }

    /// The same in a batch (what import and hint handoff use).
    #[test]
    fn a_batch_write_overtaken_drops_older_cached_versions() {
        let dir = tempfile::tempdir().unwrap();
        let node = cached_v1(dir.path());
        let token = kv_ring::token(b"k");
        node.inner.write(token, b"k", Some(b"three"), v(3)).unwrap();
        let two = Write {
            key: b"k",
            value: Some(b"two"),
            version: v(2),
            expires: None,
        };
        assert_eq!(node.apply_batch(&[two]).unwrap(), 0);
        assert_eq!(node.get(b"k").unwrap().unwrap().1, v(3));
    }

    /// A version applied from elsewhere (a coordinator whose clock runs ahead) is observed:
    /// a later `put` on this node is newer and wins, rather than being dropped while it
    /// reported success.
    #[test]
    fn a_put_after_a_future_version_was_applied_wins() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
        let future = Version::from_parts(node.inner.opts.clock.now_millis() + 3_600_000, 0);
        node.apply(b"k", Some(b"from afar"), future).unwrap();
        let v = node.put(b"k", b"local").unwrap();
        assert!(v > future);
        assert_eq!(
            node.get(b"k").unwrap(),
            Some((Bytes::from_static(b"local"), v))
        );
        // The same through a batch.
        let later = Version::from_parts(future.millis() + 60_000, 0);
        let batch = Write {
            key: b"k",
            value: Some(b"batch"),
            version: later,
            expires: None,
        };
        node.apply_batch(&[batch]).unwrap();
        let v = node.put(b"k", b"local again").unwrap();
        assert!(v > later);
        assert_eq!(
            node.get(b"k").unwrap(),
            Some((Bytes::from_static(b"local again"), v))
        );
    }

    fn purging_opts() -> NodeOptions {
        NodeOptions::small().tombstone_grace(std::time::Duration::ZERO)
    }

    /// Writes fresh keys until the log rolls over to a new segment.
    fn seal_active_segment(node: &Node) {
        let active = node.inner.wal.end_lsn().segment();
        for i in 0u32.. {
            if node.inner.wal.end_lsn().segment() != active {
                return;
            }
            node.put(format!("filler{i}").as_bytes(), &[7; 100])
                .unwrap();
        }
    }

    /// `k` at version 1, deleted at version 3, the tombstone's segment sealed.
    fn deleted_in_a_sealed_segment(dir: &Path) -> Node {
        let node = Node::open(dir, purging_opts()).unwrap();
        node.apply(b"k", Some(b"one"), v(1)).unwrap();
        node.apply(b"k", None, v(3)).unwrap();
        seal_active_segment(&node);
        node
    }

    /// After the tombstone's segment was compacted and the tombstone purged, the key stays
    /// deleted, before and after a reopen and once everything is compacted.
    fn assert_stays_deleted(dir: &Path, node: Node) {
        node.compact().unwrap();
        assert_eq!(node.get(b"k").unwrap(), None);
        drop(node);
        let node = Node::open(dir, purging_opts()).unwrap();
        assert_eq!(node.get(b"k").unwrap(), None, "resurrected on reopen");
        seal_active_segment(&node);
        node.compact().unwrap();
        drop(node);
        let node = Node::open(dir, purging_opts()).unwrap();
        assert_eq!(node.get_versioned(b"k").unwrap(), None, "everything purged");
    }

    /// An older write (version 2) that lost the race to a tombstone (version 3) after its
    /// lookup, so is logged after it (`look_first = false` stands for the lookup that came
    /// too early). Purging the tombstone with its segment must not bring version 2 back
    /// from the later segment on reopen: the tombstone is logged again after it.
    #[test]
    fn an_older_write_logged_after_a_tombstone_stays_deleted_after_its_purge() {
        let dir = tempfile::tempdir().unwrap();
        let node = deleted_in_a_sealed_segment(dir.path());
        let token = kv_ring::token(b"k");
        let lost = node
            .inner
            .write_with(token, b"k", Some(b"two"), v(2), None, false);
        assert!(matches!(lost.unwrap(), Upsert::Kept(cur) if cur.version == v(3)));
        assert_stays_deleted(dir.path(), node);
    }

    /// Logs a write without touching the index: a writer preempted between the two.
    fn append_only(node: &Node, value: Option<&[u8]>, version: Version) -> Location {
        let mut buf = Vec::new();
        record::encode_entry(&mut buf, kv_ring::token(b"k"), version, b"k", value, None);
        let lsn = node.inner.wal.append(&buf).unwrap();
        node.inner.segments.written(lsn.segment(), frame(buf.len()));
        Location {
            version,
            lsn,
            len: buf.len() as u32,
            tombstone: value.is_none(),
            stale_after: false,
            expiring: false,
        }
    }

    /// ... and the index half, later.
    fn index_only(node: &Node, loc: Location) {
        let outcome = node
            .inner
            .index
            .upsert(kv_ring::token(b"k"), b"k", loc, false);
        node.inner.account(&outcome, loc);
    }

    /// The tombstone (version 3) is logged first but reaches the index last: the older write
    /// (version 2), logged after it in a later segment, is in the index when the tombstone
    /// replaces it. The tombstone must not be purged while version 2 lies after it.
    #[test]
    fn a_tombstone_indexed_after_an_older_write_logged_after_it_stays() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), purging_opts()).unwrap();
        node.apply(b"k", Some(b"one"), v(1)).unwrap();
        let tombstone = append_only(&node, None, v(3));
        seal_active_segment(&node);
        let two =
            node.inner
                .write_with(kv_ring::token(b"k"), b"k", Some(b"two"), v(2), None, false);
        assert!(matches!(two.unwrap(), Upsert::Replaced(_)));
        index_only(&node, tombstone);
        assert_stays_deleted(dir.path(), node);
    }

    /// The index holds version 4 when the older write (version 2) is logged, after a
    /// tombstone (version 5) that reaches the index later and replaces version 4.
    #[test]
    fn a_tombstone_replacing_a_value_an_older_write_lost_to_stays() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), purging_opts()).unwrap();
        node.apply(b"k", Some(b"four"), v(4)).unwrap();
        let tombstone = append_only(&node, None, v(5));
        seal_active_segment(&node);
        let two =
            node.inner
                .write_with(kv_ring::token(b"k"), b"k", Some(b"two"), v(2), None, false);
        assert!(matches!(two.unwrap(), Upsert::Kept(_)));
        index_only(&node, tombstone);
        assert_stays_deleted(dir.path(), node);
    }

    #[test]
    fn stats_tell_when_the_log_was_last_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let opts = NodeOptions::new().sync(kv_wal::SyncPolicy::Never);
        let node = Node::open(dir.path(), opts).unwrap();
        assert_eq!(node.stats().last_flush, None);
        let before = std::time::SystemTime::now();
        node.put(b"k", b"v").unwrap();
        node.sync().unwrap();
        assert!(node.stats().last_flush.is_some_and(|t| t >= before));
    }

    /// A clock at its end (it followed a version past the limit from an old log) refuses
    /// writes instead of handing out the same version again, which would lose them.
    #[test]
    fn a_clock_at_its_end_refuses_puts() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
        node.inner.hlc.observe(Version::new(u64::MAX - 1));
        let r = node.put(b"k", b"v");
        assert!(matches!(r, Err(Error::VersionTooLarge { .. })), "{r:?}");
        assert!(matches!(
            node.delete(b"k"),
            Err(Error::VersionTooLarge { .. })
        ));
    }

    /// The same in a batch (`log_batch` is `apply_batch` after its lookups).
    #[test]
    fn an_older_batch_write_logged_after_a_tombstone_stays_deleted_after_its_purge() {
        let dir = tempfile::tempdir().unwrap();
        let node = deleted_in_a_sealed_segment(dir.path());
        let w = Write {
            key: b"k",
            value: Some(b"two"),
            version: v(2),
            expires: None,
        };
        let len = record::entry_len(w.key, w.value, None);
        let changed = node.inner.log_batch(&[(kv_ring::token(b"k"), &w, len)]);
        assert_eq!(changed.unwrap(), 0);
        assert_stays_deleted(dir.path(), node);
    }

    /// A crash between the older write's append and the tombstone's restatement leaves the
    /// log as the race made it: recovery marks the tombstone, and compaction keeps it.
    #[test]
    fn recovery_marks_a_tombstone_logged_before_an_older_write() {
        let dir = tempfile::tempdir().unwrap();
        let node = deleted_in_a_sealed_segment(dir.path());
        let wal_opts = node.inner.opts.wal.clone();
        drop(node);
        {
            let wal = kv_wal::Wal::open(dir.path().join("wal"), wal_opts).unwrap();
            let mut buf = Vec::new();
            record::encode_entry(
                &mut buf,
                kv_ring::token(b"k"),
                v(2),
                b"k",
                Some(b"two"),
                None,
            );
            wal.append(&buf).unwrap();
        }
        let node = Node::open(dir.path(), purging_opts()).unwrap();
        assert_eq!(node.get_versioned(b"k").unwrap(), Some((None, v(3))));
        assert_stays_deleted(dir.path(), node);
    }

    /// `get_many` answers with slices of one buffer per batch; what it caches is a copy, so
    /// that a cached value does not keep the batch's other values alive.
    #[test]
    fn get_many_caches_copies_not_slices_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
        node.put(b"a", b"one").unwrap();
        node.put(b"b", b"two").unwrap();
        node.get_many(&[b"a", b"b"]).unwrap(); // first miss: not admitted
        let got = node.get_many(&[b"a", b"b"]).unwrap();
        let (a, b) = (&got[0].as_ref().unwrap().0, &got[1].as_ref().unwrap().0);
        assert_eq!((&a[..], &b[..]), (&b"one"[..], &b"two"[..]));
        // One buffer: the second value right after the first.
        assert_eq!(a.as_ptr().wrapping_add(3), b.as_ptr());
        let cached = node.inner.cache.peek(&b"a"[..]).unwrap().0;
        assert_eq!(&cached[..], b"one");
        assert_ne!(cached.as_ptr(), a.as_ptr());
    }

    /// A newer cached version is left alone by a write that lost.
    #[test]
    fn a_lost_write_keeps_a_newer_cached_version() {
        let dir = tempfile::tempdir().unwrap();
        let node = cached_v1(dir.path());
        assert!(!node.apply(b"k", Some(b"zero"), v(0)).unwrap());
        assert_eq!(node.inner.cache.peek(&b"k"[..]).unwrap().1, v(1));
    }
}
