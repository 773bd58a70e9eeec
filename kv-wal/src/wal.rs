//! The log: appends (reservation and publication are in `sequencer`), roll-over, group
//! commit, reading, truncation.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use fs2::FileExt as _;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::pool::Pool;
use crate::prefault::Prefault;
use crate::{
    Error, FlushEvent, Lsn, RecoveryReport, Result, SyncPolicy, WalOptions, durable,
    format::{self, HEADER_LEN, MAX_PAYLOAD, RECORD_HEADER_LEN, Slot},
    iter::WalIter,
    recovery,
    segment::{self, Segment},
    sequencer::{Claim, Sequencer},
};

/// How many times a group-commit follower yields, polling for its flush, before it sleeps.
const SPIN_YIELDS: usize = 64;

/// A write-ahead log: a directory of preallocated, memory-mapped segments.
///
/// `Wal` is `Send + Sync`; share it (e.g. in an `Arc`) and append from any number of threads.
/// Appends are ordered by their [`Lsn`]; a reader or a recovery never sees a record unless every
/// record before it is complete.
///
/// # Durability
///
/// An append returns once its record is in the shared mapping, i.e. in the kernel's page
/// cache, so it survives a crash of the process under every [`SyncPolicy`]. What survives a
/// power cut depends on the policy: under [`SyncPolicy::Always`] every append that returned;
/// under `Periodic` what the last flush covered; under `Never` what [`Wal::sync`] covered.
/// After a failed flush the log is *poisoned* ([`Error::SyncFailed`], then
/// [`Error::Poisoned`]) until it is reopened. Under `Always` each appender gets the result of
/// the flush that covered its record: `Ok` from an earlier flush that succeeded, even if a
/// later one has failed by the time it wakes; the failed flush's error for its own waiters and
/// every waiter after them.
///
/// # Example
///
/// ```
/// use kv_wal::{SyncPolicy, Wal, WalOptions};
///
/// let dir = tempfile::tempdir()?;
/// let opts = WalOptions::new().segment_size(1 << 16).sync(SyncPolicy::Always);
/// let wal = Wal::open(dir.path(), opts.clone())?;
/// let a = wal.append(b"hello")?;
/// let b = wal.append_batch(&[b"two", b"records"])?;
/// assert_eq!(&wal.read(a)?[..], b"hello");
/// drop(wal);
///
/// let wal = Wal::open(dir.path(), opts)?;
/// assert_eq!(wal.recovery_report().records, 3);
/// let all: Vec<_> = wal.iter_from(b).map(|r| r.map(|r| r.payload)).collect::<Result<_, _>>()?;
/// assert_eq!(all, [&b"two"[..], b"records"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    prefaulter: Option<JoinHandle<()>>,
    report: RecoveryReport,
    _lock: File,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("options", &self.shared.opts)
            .field("published", &self.end_lsn())
            .finish()
    }
}

pub(crate) struct Shared {
    dir: PathBuf,
    opts: WalOptions,
    /// Every mapped segment, by sequence number.
    pub(crate) segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// The segment receiving appends. Replaced only by a roll-over, once every record in it
    /// is published.
    active: Mutex<Arc<Segment>>,
    /// `active`, for appenders: they read it after a reservation without taking the mutex.
    active_ptr: AtomicPtr<Segment>,
    /// Reservation and publication (see `sequencer`).
    sequencer: Sequencer,
    poisoned: AtomicBool,
    /// Mirror of `SyncState::durable`, for followers polling without the mutex.
    durable: AtomicU64,
    /// Mirror of `SyncState::leader`.
    leading: AtomicBool,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    /// Requests for the prefault thread (see `prefault`).
    prefault: Prefault,
    /// Released segments kept for reuse (see `pool`). Taken by `truncate_before` (which
    /// releases into it) and by a roll-over (which takes from it), never while holding
    /// `segments`.
    pool: Mutex<Pool>,
}

/// Bytes reserved for one append: ticket `ticket`, `start..` in `seg`.
struct Reservation<'a> {
    /// Valid until the reservation is completed (see `Shared::reserve`).
    seg: &'a Segment,
    ticket: u32,
    start: usize,
}

/// Group commit.
struct SyncState {
    /// Everything before this is durable.
    durable: Lsn,
    /// Whether a thread is flushing now.
    leader: bool,
    poisoned: Option<(PathBuf, Arc<io::Error>)>,
    /// When the last flush that made records durable finished.
    last_flush: Option<SystemTime>,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering what is there.
    ///
    /// Takes an exclusive lock on `dir/LOCK`, then scans every segment as described in
    /// [`RecoveryMode`](crate::RecoveryMode): a torn tail is zeroed and reported in
    /// [`Wal::recovery_report`]; corruption the mode does not allow to discard is an error.
    /// Recovery never panics, whatever the files contain.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another `Wal` has the directory open; [`Error::Corrupt`],
    /// [`Error::BadHeader`] or [`Error::MissingSegment`] if recovery refuses the files;
    /// [`Error::InvalidOptions`]; [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        opts.validate()?;
        let dir = dir.as_ref().to_owned();
        durable::create_dir_all(&dir)?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        lock.try_lock_exclusive().map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock
                || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
            {
                Error::Locked {
                    path: lock_path.clone(),
                }
            } else {
                Error::io("lock", &lock_path, e)
            }
        })?;

        let rec = recovery::recover(&dir, &opts)?;
        let mut map = BTreeMap::new();
        for seg in rec.segments {
            map.insert(seg.seq(), Arc::new(seg));
        }
        let Some(active) = map.values().next_back().cloned() else {
            return Err(Error::io(
                "recover",
                &dir,
                io::Error::other("recovery returned no segment"),
            ));
        };
        let end = Lsn::new(active.seq(), rec.end as u32);
        if opts.sync == SyncPolicy::Always {
            active.prepare_for_appends(rec.end);
        }
        let shared = Arc::new(Shared {
            dir,
            segments: RwLock::new(map),
            active_ptr: AtomicPtr::new(Arc::as_ptr(&active).cast_mut()),
            sequencer: Sequencer::new(end, active.len()),
            active: Mutex::new(active),
            poisoned: AtomicBool::new(false),
            durable: AtomicU64::new(end.as_u64()),
            leading: AtomicBool::new(false),
            sync: Mutex::new(SyncState {
                durable: end,
                leader: false,
                poisoned: None,
                last_flush: None,
            }),
            sync_cv: Condvar::new(),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            prefault: Prefault::default(),
            pool: Mutex::new(rec.pool),
            opts,
        });
        let flusher = match shared.opts.sync {
            SyncPolicy::Periodic(interval) => {
                let s = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("kv-wal-flusher".into())
                    .spawn(move || s.flusher_loop(interval))
                    .map_err(|e| Error::io("spawn flusher thread", &shared.dir, e))?;
                Some(handle)
            }
            _ => None,
        };
        // Best effort, like the faults it saves: without the thread, appenders fault their
        // pages in themselves (and an error here would leave the flusher running).
        let prefaulter = {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("kv-wal-prefault".into())
                .spawn(move || s.prefault_loop())
                .ok()
        };
        Ok(Wal {
            shared,
            flusher,
            prefaulter,
            report: rec.report,
            _lock: lock,
        })
    }

    /// What recovery found and discarded when this log was opened.
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new())?;
    /// let report = wal.recovery_report();
    /// assert_eq!((report.records, report.truncation.is_none()), (0, true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends one record and returns its [`Lsn`].
    ///
    /// Under [`SyncPolicy::Always`] it returns once the record is durable.
    ///
    /// # Errors
    ///
    /// [`Error::RecordTooLarge`] if it cannot fit in a segment; [`Error::SyncFailed`] /
    /// [`Error::Poisoned`] after a failed flush; [`Error::Io`] if a new segment cannot be
    /// created (e.g. the disk is full).
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new())?;
    /// let a = wal.append(b"first")?;
    /// let b = wal.append(b"second")?;
    /// assert!(a < b);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        self.shared.append(&[payload])
    }

    /// Appends records atomically: after a crash, recovery returns all of them or none.
    /// Returns the [`Lsn`] of the first; the others follow it contiguously (iterate from it).
    ///
    /// The batch must fit in one segment.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`], and [`Error::EmptyBatch`].
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new())?;
    /// let first = wal.append_batch(&[b"debit a", b"credit b"])?;
    /// let batch: Vec<_> = wal.iter_from(first).map(|r| r.map(|r| r.payload)).collect::<Result<_, _>>()?;
    /// assert_eq!(batch, [&b"debit a"[..], &b"credit b"[..]]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<Lsn> {
        self.shared.append(payloads)
    }

    /// Makes every append that has returned so far durable (one shared flush).
    ///
    /// # Errors
    ///
    /// [`Error::SyncFailed`] if the flush fails (the log is then poisoned) or
    /// [`Error::Poisoned`].
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_wal::{SyncPolicy, Wal, WalOptions};
    /// let wal = Wal::open(dir.path(), WalOptions::new().sync(SyncPolicy::Never))?;
    /// let lsn = wal.append(b"x")?;
    /// wal.sync()?;
    /// assert!(wal.durable_lsn() > lsn);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sync(&self) -> Result<()> {
        // Every append that has returned is published.
        self.shared.sync_to(self.shared.published())
    }

    /// Reads the payload of the record at `lsn` (an `Lsn` returned by an append or an iterator).
    ///
    /// The payload is copied out of the map (so the segment can be removed while the caller
    /// holds it); the checksum is verified on every read.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLsn`] if `lsn` is past the end, in a removed segment, before the first
    /// record or not 8-aligned; [`Error::CorruptRecord`] if the bytes there fail their
    /// checksum. An aligned `lsn` inside another record is not always detected: if the bytes
    /// there happen to frame a valid record (a payload that embeds one), they are returned.
    /// Pass only `Lsn`s the log gave you.
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new())?;
    /// let lsn = wal.append(b"value")?;
    /// // An index would store `lsn.as_u64()` and come back later:
    /// assert_eq!(wal.read(kv_wal::Lsn::from_u64(lsn.as_u64()))?, &b"value"[..]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(&self, lsn: Lsn) -> Result<Bytes> {
        self.read_with(lsn, Bytes::copy_from_slice)
    }

    /// Runs `f` on the payload of the record at `lsn`, in place in the mapped segment (no
    /// copy), and returns what it returns. Errors as [`read`](Wal::read).
    ///
    /// While `f` runs the log holds a read lock on its segment list, which a roll-over to a
    /// new segment and [`truncate_before`](Wal::truncate_before) wait for: keep `f` short.
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new())?;
    /// let lsn = wal.append(b"key=value")?;
    /// let value_len = wal.read_with(lsn, |payload| payload.len() - b"key=".len())?;
    /// assert_eq!(value_len, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_with<R>(&self, lsn: Lsn, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let published = self.end_lsn();
        let segments = self.shared.segments.read();
        // The header, payload and checksum check touch up to three cache lines: ask for all
        // of them at once rather than one miss after another.
        if let Some(seg) = segments.get(&lsn.segment()) {
            seg.prefetch(lsn.offset() as usize);
        }
        read_in(&segments, published, lsn).map(f)
    }

    /// Reads many records: the same as calling [`read`](Wal::read) on each `Lsn`, in order,
    /// but faster when the records are not in the CPU's caches: one pass asks the memory for
    /// every record at once (a prefetch), a second parses them, so the cache misses overlap
    /// instead of following one another. What an index serving a multi-get needs.
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new())?;
    /// let a = wal.append(b"a")?;
    /// let b = wal.append(b"b")?;
    /// let read = wal.read_many(&[b, a, kv_wal::Lsn::ZERO]);
    /// assert_eq!(read[0].as_ref().unwrap(), &b"b"[..]);
    /// assert_eq!(read[1].as_ref().unwrap(), &b"a"[..]);
    /// assert!(read[2].is_err()); // not a record
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_many(&self, lsns: &[Lsn]) -> Vec<Result<Bytes>> {
        let mut out = Vec::with_capacity(lsns.len());
        self.read_many_with(lsns, |_, payload| {
            out.push(payload.map(Bytes::copy_from_slice));
        });
        out
    }

    /// [`read_many`](Wal::read_many) without the copies: calls `f(i, payload)` for each
    /// `lsns[i]` in order, the payload in place in the mapped segment (or the error
    /// [`read`](Wal::read) would return). The segment list is read-locked throughout, as
    /// for [`read_with`](Wal::read_with): keep `f` short.
    pub fn read_many_with(&self, lsns: &[Lsn], mut f: impl FnMut(usize, Result<&[u8]>)) {
        let published = self.end_lsn();
        let segments = self.shared.segments.read();
        for &lsn in lsns {
            if lsn < published
                && let Some(seg) = segments.get(&lsn.segment())
            {
                seg.prefetch(lsn.offset() as usize);
            }
        }
        for (i, &lsn) in lsns.iter().enumerate() {
            f(i, read_in(&segments, published, lsn));
        }
    }

    /// Iterates over the records from `from` (inclusive) to the end of the log.
    ///
    /// Appends may continue while iterating: the iterator yields every record published
    /// before it reaches them, and returns `None` when it has caught up; calling `next` again
    /// later yields records appended since. [`Lsn::ZERO`] starts at the oldest record; an
    /// `Lsn` in a segment that was removed (by [`truncate_before`](Wal::truncate_before)) yields
    /// [`Error::InvalidLsn`], so a reader resuming from a position that is gone learns that it
    /// missed records.
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new())?;
    /// let mut tail = wal.iter_from(kv_wal::Lsn::ZERO);
    /// assert!(tail.next().is_none()); // caught up
    /// wal.append(b"later")?;
    /// assert_eq!(tail.next().unwrap()?.payload, &b"later"[..]); // and continues
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter_from(&self, from: Lsn) -> WalIter<'_> {
        WalIter::new(self, from)
    }

    /// The `Lsn` the next record will get if nothing is in flight: every record before it is
    /// complete and readable.
    pub fn end_lsn(&self) -> Lsn {
        self.shared.published()
    }

    /// Everything before this `Lsn` has been flushed.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.sync.lock().durable
    }

    /// When the last flush that made appended records durable finished (periodic, on a
    /// segment roll-over, `Always` group commit or [`Wal::sync`]); `None` before the first
    /// since the log was opened. What `INFO persistence` reports as the last flush.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_wal::{SyncPolicy, Wal, WalOptions};
    /// let wal = Wal::open(dir.path(), WalOptions::new().sync(SyncPolicy::Never))?;
    /// assert!(wal.last_flush().is_none());
    /// wal.append(b"x")?;
    /// wal.sync()?;
    /// assert!(wal.last_flush().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn last_flush(&self) -> Option<SystemTime> {
        self.shared.sync.lock().last_flush
    }

    /// The `Lsn` of the oldest record still in the log.
    pub fn first_lsn(&self) -> Lsn {
        let first = self
            .shared
            .segments
            .read()
            .keys()
            .next()
            .copied()
            .unwrap_or(0);
        Lsn::new(first, HEADER_LEN as u32)
    }

    /// Whether a failed flush has poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Deletes every whole segment that ends before `lsn` (for checkpointing: once the state
    /// up to `lsn` is saved elsewhere). The active segment is never deleted. Returns the number
    /// of segments deleted.
    ///
    /// A segment still in use by an iterator or a flush in progress is kept, and so is every
    /// later one (the log stays contiguous); a later call deletes them.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be deleted or the directory cannot be synced. Segments
    /// are deleted oldest first and the first failure stops the call: that segment and the
    /// later ones stay in the log (a later call deletes them), and the deletes that succeeded
    /// are synced all the same.
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_wal::{Wal, WalOptions};
    /// let wal = Wal::open(dir.path(), WalOptions::new().segment_size(4096))?;
    /// let mut last = wal.append(&[0u8; 1000])?;
    /// for _ in 0..20 {
    ///     last = wal.append(&[0u8; 1000])?;
    /// }
    /// // State up to `last` is checkpointed elsewhere: drop the segments before it.
    /// assert!(wal.truncate_before(last)? > 0);
    /// assert_eq!(wal.first_lsn().segment(), last.segment());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        // Segments before the active one have no reservation left: a roll-over replaces the
        // active segment only once everything in it is published.
        let active = self.shared.active.lock().seq();
        let mut deleted = 0;
        // Oldest first, one at a time, stopping at the first failure: the segments left are
        // contiguous and still tracked, so a later call deletes them.
        let outcome = loop {
            let victim = {
                let mut segs = self.shared.segments.write();
                match segs.first_key_value() {
                    Some((&seq, seg))
                        if seq < lsn.segment() && seq < active && Arc::strong_count(seg) == 1 =>
                    {
                        segs.remove(&seq)
                    }
                    _ => None,
                }
            };
            let Some(victim) = victim else {
                break Ok(());
            };
            let seg = match Arc::try_unwrap(victim) {
                Ok(seg) => seg,
                Err(seg) => {
                    // Unreachable: the count was 1 under the write lock and the map held it.
                    self.shared.segments.write().insert(seg.seq(), seg);
                    break Err(Error::io(
                        "delete segment",
                        &self.shared.dir,
                        io::Error::other("segment still in use"),
                    ));
                }
            };
            let released = match self.shared.pool.lock().release(seg) {
                Ok(None) => Ok(()),
                Ok(Some(seg)) => seg.delete(),
                Err(e) => Err(e),
            };
            match released {
                Ok(()) => deleted += 1,
                Err((seg, e)) => {
                    self.shared
                        .segments
                        .write()
                        .insert(seg.seq(), Arc::new(seg));
                    break Err(e);
                }
            }
        };
        // The deletes that succeeded are made durable even when a later one failed.
        let synced = if deleted > 0 {
            durable::sync_dir(&self.shared.dir).map_err(Error::from)
        } else {
            Ok(())
        };
        outcome.and(synced).map(|()| deleted)
    }

    /// Flushes everything appended (whatever the policy), stops the background flusher and
    /// releases the directory lock. Dropping the `Wal` does the same but cannot report an
    /// error (and does not flush under `Never`).
    ///
    /// # Errors
    ///
    /// As [`Wal::sync`].
    ///
    /// # Example
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_wal::{SyncPolicy, Wal, WalOptions};
    /// let wal = Wal::open(dir.path(), WalOptions::new().sync(SyncPolicy::Never))?;
    /// wal.append(b"x")?;
    /// wal.close()?; // durable now
    /// let wal = Wal::open(dir.path(), WalOptions::new())?;
    /// assert_eq!(wal.recovery_report().records, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) -> Result<()> {
        self.sync()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.stop_cv.notify_all();
        self.shared.prefault.wake();
        if let Some(h) = self.prefaulter.take() {
            let _ = h.join();
        }
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
            // Periodic: a last flush, best effort (errors cannot be reported from drop).
            let _ = self.sync();
        }
        self.shared.mark_end_of_recycled();
    }
}

impl Shared {
    /// Every record before this is complete.
    pub(crate) fn published(&self) -> Lsn {
        self.sequencer.published()
    }

    fn append(&self, payloads: &[&[u8]]) -> Result<Lsn> {
        if payloads.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let max = self.opts.segment_size as usize - HEADER_LEN;
        let mut total = 0usize;
        for p in payloads {
            let framed = (p.len() <= MAX_PAYLOAD)
                .then(|| format::frame_len(p.len()))
                .flatten();
            total = framed
                .and_then(|f| total.checked_add(f))
                .unwrap_or(usize::MAX);
        }
        if total > max {
            return Err(Error::RecordTooLarge { len: total, max });
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        // Frame the headers (and so compute the checksums) before reserving: every appender
        // behind this one waits from our reservation to our completion, so keep that short.
        let one;
        let many: Vec<[u8; RECORD_HEADER_LEN]>;
        let headers: &[[u8; RECORD_HEADER_LEN]] = if let [p] = payloads {
            one = [format::record_header(p, false)];
            &one
        } else {
            many = payloads
                .iter()
                .enumerate()
                .map(|(i, p)| format::record_header(p, i + 1 < payloads.len()))
                .collect();
            &many
        };
        let Reservation { seg, ticket, start } = self.reserve(total)?;
        // The next appends' lines (see `Segment::prefetch_for_write`).
        seg.prefetch_for_write(start + total);
        let mut at = start;
        let mask = seg.mask();
        for (header, p) in headers.iter().zip(payloads) {
            // The checksum is masked with the segment's sequence number only now that the
            // reservation has named the segment (see `format::mask`).
            let mut header = *header;
            if mask != 0 {
                format::mask_header(&mut header, mask);
            }
            // SAFETY: `start..start + total` was reserved for this call alone (ticket
            // `ticket`) and is not published until `complete` below.
            unsafe {
                seg.write(at, &header);
                seg.write(at + header.len(), p);
                let padded = at + format::frame_len(p.len()).unwrap_or(0);
                seg.zero(
                    at + header.len() + p.len(),
                    padded - at - header.len() - p.len(),
                );
                at = padded;
            }
        }
        // Crossing into a new chunk: have the one after it faulted in, ahead of the appends.
        let chunk = (start + total) / segment::POPULATE_CHUNK;
        if start / segment::POPULATE_CHUNK != chunk {
            self.prefault.request(seg.seq(), chunk + 1);
        }
        let first = Lsn::new(seg.seq(), start as u32);
        let end = Lsn::new(seg.seq(), (start + total) as u32);
        // From here on `seg` may be rolled away and deleted: not used again.
        self.sequencer.complete(ticket, start + total);
        if self.opts.sync == SyncPolicy::Always {
            // The flush leader awaits publication; followers only wait for the flush.
            self.sync_to(end)?;
        } else {
            self.wait_published(end);
        }
        Ok(first)
    }

    /// Reserves `total` bytes in the active segment, rolling over to a new segment if it is
    /// too full. The caller must complete the reservation (`Sequencer::complete`) and must not
    /// use the returned segment reference after that.
    fn reserve(&self, total: usize) -> Result<Reservation<'_>> {
        loop {
            match self.sequencer.claim(total) {
                Claim::Reserved { ticket, start } => {
                    let ptr = self.active_ptr.load(Ordering::Acquire);
                    // SAFETY: `ptr` comes from `Arc::as_ptr` of the segment our reservation
                    // is in: a roll-over stores the new segment's pointer before it reopens the
                    // tail (release; our CAS on the tail acquired it), and replaces it only
                    // after our reservation is published. Until then that `Arc` is held by
                    // `active` and `segments` (`truncate_before` removes only segments before
                    // the active one), so the segment lives at least until our completion;
                    // the caller does not use the reference after that.
                    let seg = unsafe { &*ptr };
                    return Ok(Reservation { seg, ticket, start });
                }
                Claim::Retry => std::hint::spin_loop(),
                Claim::Sealed => self.sequencer.wait_unsealed(),
                Claim::Roll { ticket, at } => self.roll(ticket, at, total)?,
            }
        }
    }

    /// Rolls over from the active segment, whose tail this thread sealed at offset `at` with
    /// ticket `ticket` for a record (or batch) of `total` framed bytes: waits until every
    /// record reserved in it is published (so no later segment ever holds a record while an
    /// earlier one still has a hole), flushes it, creates the next segment (its size by
    /// `WalOptions::next_segment_size`, so the record fits), makes it the active one and
    /// reopens the tail there.
    fn roll(&self, ticket: u32, at: usize, total: usize) -> Result<()> {
        let sealed = Arc::clone(&self.active.lock());
        let sealed_end = Lsn::new(sealed.seq(), at as u32);
        self.sequencer.wait_sealed_segment_published(ticket);
        debug_assert_eq!(self.published(), sealed_end);
        let made = (|| {
            let next = sealed
                .seq()
                .checked_add(1)
                .ok_or_else(|| Error::SequenceExhausted {
                    dir: self.dir.clone(),
                })?;
            // Make the sealed segment durable before the next one gets records, under
            // every policy (`Never` too: one flush per segment): a power cut can then tear
            // only the newest segment. Without it a lost page at the end of an older
            // segment looks like a clean end, and recovery would go on past the hole.
            self.sync_to(sealed_end)?;
            if sealed.is_recycled() && at + RECORD_HEADER_LEN <= sealed.len() {
                // A recycled segment's bytes after the seal are leftovers, not zeros: an
                // explicit end marker (an all-zero record header), durable before the next
                // segment can hold a durable record, is where a later scan of it stops.
                // SAFETY: nothing at or after `at` was reserved (the tail is sealed there)
                // and readers stop at the published end, `at`.
                unsafe { sealed.zero(at, RECORD_HEADER_LEN) };
                let flushed = sealed.flush(at, RECORD_HEADER_LEN).and_then(|()| {
                    // The flush hook sees it as any flush (crash models need it).
                    self.opts.flush_hook.as_ref().map_or(Ok(()), |hook| {
                        hook(&FlushEvent {
                            path: sealed.path(),
                            segment: sealed.seq(),
                            offset: at,
                            len: RECORD_HEADER_LEN,
                        })
                    })
                });
                if let Err(e) = flushed {
                    return Err(self.poison(sealed.path().to_owned(), e));
                }
            }
            let size = self.opts.next_segment_size(sealed.len(), total);
            let seg = self
                .pool
                .lock()
                .new_segment(next, size, self.opts.prefault)?;
            if self.opts.sync == SyncPolicy::Always {
                seg.prepare_for_appends(HEADER_LEN);
            }
            Ok(Arc::new(seg))
        })();
        let seg = match made {
            Ok(seg) => seg,
            Err(e) => {
                self.sequencer.unseal(ticket, at);
                return Err(e);
            }
        };
        // Readers find the segment in the map before `published` points into it.
        self.segments.write().insert(seg.seq(), Arc::clone(&seg));
        if self.opts.sync != SyncPolicy::Always {
            // (`prepare_for_appends` faulted the first two chunks in already.)
            self.prefault.request(seg.seq(), 1);
        }
        let first = Lsn::new(seg.seq(), HEADER_LEN as u32);
        let len = seg.len();
        {
            let mut active = self.active.lock();
            self.active_ptr
                .store(Arc::as_ptr(&seg).cast_mut(), Ordering::Release);
            *active = seg;
        }
        self.sequencer.start_segment(ticket, first, len);
        Ok(())
    }

    /// On close: if the active segment is recycled, an end marker (an all-zero record
    /// header) right after its last record, flushed unless the policy is `Never`. A reopen
    /// then finds a clean end there rather than whatever leftover follows (which may be
    /// part of an old record and so look torn: a spurious truncation in the report, and an
    /// error under `AbsoluteConsistency`). Best effort: recovery is safe without it.
    fn mark_end_of_recycled(&self) {
        let active = Arc::clone(&self.active.lock());
        let end = self.published();
        if !active.is_recycled() || end.segment() != active.seq() {
            return;
        }
        let at = end.offset() as usize;
        if at + RECORD_HEADER_LEN > active.len() {
            return;
        }
        // SAFETY: the log is closing (`Wal` is being dropped: no appender, iterator or
        // background thread is left), so nothing reserves or reads at or after the
        // published end.
        unsafe { active.zero(at, RECORD_HEADER_LEN) };
        if self.opts.sync != SyncPolicy::Never {
            let _ = active.flush(at, RECORD_HEADER_LEN);
        }
    }

    /// Poisons the log after a failed flush outside group commit; returns the error to
    /// report.
    fn poison(&self, path: PathBuf, e: io::Error) -> Error {
        let e = Arc::new(e);
        let mut s = self.sync.lock();
        if s.poisoned.is_none() {
            s.poisoned = Some((path.clone(), Arc::clone(&e)));
        }
        self.poisoned.store(true, Ordering::Release);
        self.sync_cv.notify_all();
        Error::SyncFailed { path, source: e }
    }

    /// Returns once everything before `end` is published.
    ///
    /// An append is acknowledged only when every record before it is complete: otherwise a
    /// crash of the process while an earlier appender is still copying would leave a hole
    /// that hides the acknowledged record from recovery.
    fn wait_published(&self, end: Lsn) {
        self.sequencer.wait_published(end);
    }
    fn poison_error(&self) -> Error {
        match &self.sync.lock().poisoned {
            Some((path, e)) => Error::Poisoned {
                path: path.clone(),
                source: Arc::clone(e),
            },
            None => Error::Poisoned {
                path: self.dir.clone(),
                source: Arc::new(io::Error::other("poisoned")),
            },
        }
    }

    /// Returns once everything before `target` is durable: group commit.
    ///
    /// The first caller to find no flush in progress becomes the leader: it waits until its
    /// own target is published, flushes everything published so far (which covers every
    /// waiter whose record is published), then wakes the others with the result. A waiter not
    /// covered becomes the next leader.
    pub(crate) fn sync_to(&self, target: Lsn) -> Result<()> {
        // While a flush is in progress, poll for a little before sleeping on the condvar: a
        // sleep and a wake-up per append (two context switches) cost more than the flush
        // itself once many appenders share it, and the flush usually covers the poller.
        for _ in 0..SPIN_YIELDS {
            if self.durable.load(Ordering::Acquire) >= target.as_u64() {
                return Ok(());
            }
            if !self.leading.load(Ordering::Acquire) || self.poisoned.load(Ordering::Acquire) {
                break;
            }
            std::thread::yield_now();
        }
        self.sync_to_locked(target)
    }

    /// `sync_to` after its polling: under the mutex, as a follower or the leader.
    fn sync_to_locked(&self, target: Lsn) -> Result<()> {
        let mut s = self.sync.lock();
        // A target that is durable is `Ok` even once the log is poisoned: a waiter that an
        // earlier flush covered gets that flush's result, not a later flush's error.
        if s.durable < target
            && let Some((path, e)) = &s.poisoned
        {
            return Err(Error::Poisoned {
                path: path.clone(),
                source: Arc::clone(e),
            });
        }
        loop {
            if s.durable >= target {
                return Ok(());
            }
            if let Some((path, e)) = &s.poisoned {
                // The flush we waited for failed: report its error.
                return Err(Error::SyncFailed {
                    path: path.clone(),
                    source: Arc::clone(e),
                });
            }
            if s.leader {
                self.sync_cv.wait(&mut s);
                continue;
            }
            s.leader = true;
            self.leading.store(true, Ordering::Release);
            let from = s.durable;
            drop(s);
            // Only the leader waits for publication (of its own record; everything published
            // by then rides along). Never waits on a flush, so this cannot deadlock.
            self.wait_published(target);
            let upto = self.published();
            // A panic inside the flush (from a user's flush hook) must not leave `leader` set
            // for ever, hanging every later `Always` append, `sync` and `Drop`: it counts as a
            // failed flush, which poisons the log and wakes every waiter with the error.
            let res =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.flush(from, upto)))
                    .unwrap_or_else(|_| {
                        Err((
                            self.dir.clone(),
                            io::Error::other("the flush panicked (in the flush hook?)"),
                        ))
                    });
            s = self.sync.lock();
            s.leader = false;
            self.leading.store(false, Ordering::Release);
            match res {
                Ok(()) => {
                    s.last_flush = Some(SystemTime::now());
                    s.durable = s.durable.max(upto);
                    self.durable.store(s.durable.as_u64(), Ordering::Release);
                }
                Err((path, e)) => {
                    let e = Arc::new(e);
                    s.poisoned = Some((path.clone(), Arc::clone(&e)));
                    self.poisoned.store(true, Ordering::Release);
                    self.sync_cv.notify_all();
                    return Err(Error::SyncFailed { path, source: e });
                }
            }
            self.sync_cv.notify_all();
        }
    }

    /// `msync`s `from..upto`, segment by segment, in order.
    fn flush(&self, from: Lsn, upto: Lsn) -> Result<(), (PathBuf, io::Error)> {
        if upto <= from {
            return Ok(());
        }
        let segs: Vec<Arc<Segment>> = self
            .segments
            .read()
            .range(from.segment()..=upto.segment())
            .map(|(_, s)| Arc::clone(s))
            .collect();
        for seg in segs {
            let start = if seg.seq() == from.segment() {
                from.offset() as usize
            } else {
                0
            };
            let end = if seg.seq() == upto.segment() {
                upto.offset() as usize
            } else {
                seg.len()
            };
            if end <= start {
                continue;
            }
            seg.flush(start, end - start)
                .map_err(|e| (seg.path().to_owned(), e))?;
            if let Some(hook) = &self.opts.flush_hook {
                let ev = FlushEvent {
                    path: seg.path(),
                    segment: seg.seq(),
                    offset: start,
                    len: end - start,
                };
                hook(&ev).map_err(|e| (seg.path().to_owned(), e))?;
            }
        }
        Ok(())
    }

    /// The prefault thread: serves requests until the log is dropped.
    fn prefault_loop(&self) {
        self.prefault.serve_from(std::thread::current());
        while !*self.stop.lock() {
            match self.prefault.take() {
                Some((seq, chunk)) => {
                    let seg = self.segments.read().get(&seq).cloned();
                    if let Some(seg) = seg {
                        seg.populate_chunk(chunk);
                    }
                }
                None => std::thread::park_timeout(Duration::from_millis(100)),
            }
        }
    }

    fn flusher_loop(&self, interval: Duration) {
        loop {
            {
                let mut stop = self.stop.lock();
                if !*stop {
                    self.stop_cv.wait_for(&mut stop, interval);
                }
                if *stop {
                    return;
                }
            }
            let published = self.published();
            if self.sync.lock().durable < published {
                // An error poisons the log; appenders see it on their next call.
                let _ = self.sync_to(published);
            }
        }
    }
}

/// [`Wal::read`] with the segment map held and the published end read.
fn read_in(segments: &BTreeMap<u32, Arc<Segment>>, published: Lsn, lsn: Lsn) -> Result<&[u8]> {
    if (lsn.offset() as usize) < HEADER_LEN || !lsn.offset().is_multiple_of(8) {
        return Err(Error::InvalidLsn {
            lsn,
            reason: "not a record boundary",
        });
    }
    if lsn >= published {
        return Err(Error::InvalidLsn {
            lsn,
            reason: "past the end of the log",
        });
    }
    let seg = segments.get(&lsn.segment()).ok_or(Error::InvalidLsn {
        lsn,
        reason: "segment removed or never existed",
    })?;
    let limit = if lsn.segment() == published.segment() {
        published.offset() as usize
    } else {
        seg.len()
    };
    // SAFETY: `0..limit` is published (or in a sealed segment): nobody writes it any more.
    let bytes = unsafe { seg.bytes(limit) };
    match format::parse_record(bytes, lsn.offset() as usize, seg.mask()) {
        Ok(Slot::Record(p)) => Ok(&bytes[p.payload_at..p.payload_at + p.payload_len]),
        Ok(Slot::End | Slot::Full) => Err(Error::InvalidLsn {
            lsn,
            reason: "no record there",
        }),
        Err(reason) => Err(Error::CorruptRecord {
            path: seg.path().to_owned(),
            lsn,
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(dir: &Path) -> Wal {
        Wal::open(
            dir,
            WalOptions::new().segment_size(4096).sync(SyncPolicy::Never),
        )
        .unwrap()
    }

    #[test]
    fn roll_over_waits_for_the_sealed_segment_and_starts_after_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let wal = wal(dir.path());
        let big = vec![1u8; 3000];
        let a = wal.append(&big).unwrap();
        let b = wal.append(&big).unwrap();
        assert_eq!(b, Lsn::new(a.segment() + 1, HEADER_LEN as u32));
        assert_eq!(wal.read(a).unwrap(), &big[..]);
        assert_eq!(wal.read(b).unwrap(), &big[..]);
    }

    /// A caller whose target an earlier flush made durable gets `Ok` even once a later flush
    /// has failed, not `Poisoned`: a follower that a successful flush covered, but that takes
    /// the mutex only after the next flush failed, must not report an error for a durable
    /// record.
    #[test]
    fn a_durable_target_is_ok_after_a_later_flush_fails() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let opts = WalOptions::new()
            .sync(SyncPolicy::Never)
            .flush_hook(Arc::new(move |_ev: &FlushEvent<'_>| {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::other("injected EIO"))
                }
            }));
        let wal = Wal::open(dir.path(), opts).unwrap();
        wal.append(b"a").unwrap();
        wal.sync().unwrap();
        let a_end = wal.durable_lsn();
        wal.append(b"b").unwrap();
        assert!(matches!(wal.sync(), Err(Error::SyncFailed { .. })));
        assert!(wal.is_poisoned());
        // The state of a follower that the first flush covered, reaching the mutex (after
        // its polling) only once the second flush has failed.
        assert!(wal.shared().sync_to_locked(a_end).is_ok());
        assert!(matches!(
            wal.shared().sync_to(wal.end_lsn()),
            Err(Error::Poisoned { .. })
        ));
    }

    /// A segment file that cannot be deleted stops `truncate_before` with an error, and it and
    /// every later victim stay tracked, so that a later call deletes them.
    #[test]
    fn a_segment_that_cannot_be_deleted_stays_tracked_for_a_later_truncation() {
        let dir = tempfile::tempdir().unwrap();
        // Deleted, not pooled, whatever the default (`tests/segment_recycling.rs` has the pool).
        let wal = Wal::open(
            dir.path(),
            WalOptions::new()
                .segment_size(4096)
                .sync(SyncPolicy::Never)
                .recycle_segments(0),
        )
        .unwrap();
        let mut last = Lsn::ZERO;
        while last.segment() < 6 {
            last = wal.append(&[7u8; 1000]).unwrap();
        }
        // Segment 2 becomes a non-empty directory: `remove_file` fails on it.
        let stuck = dir.path().join(segment::file_name(2));
        std::fs::remove_file(&stuck).unwrap();
        std::fs::create_dir(&stuck).unwrap();
        std::fs::write(stuck.join("x"), b"x").unwrap();
        durable::tests::take_synced();
        assert!(matches!(
            wal.truncate_before(last),
            Err(Error::Io {
                op: "delete segment",
                ..
            })
        ));
        // Segment 1's delete is made durable all the same.
        assert_eq!(durable::tests::take_synced(), [dir.path().to_owned()]);
        assert!(!dir.path().join(segment::file_name(1)).exists());
        assert_eq!(wal.first_lsn().segment(), 2);
        for seq in 3..6 {
            assert!(dir.path().join(segment::file_name(seq)).exists());
        }
        // The obstacle goes: a later call deletes the rest.
        std::fs::remove_dir_all(&stuck).unwrap();
        std::fs::write(&stuck, b"").unwrap();
        assert_eq!(wal.truncate_before(last).unwrap(), 4);
        assert_eq!(wal.first_lsn().segment(), 6);
        for seq in 1..6 {
            assert!(!dir.path().join(segment::file_name(seq)).exists(), "{seq}");
        }
        assert_eq!(wal.read(last).unwrap(), &[7u8; 1000][..]);
    }

    #[test]
    fn a_log_opened_in_a_fresh_directory_syncs_every_level_it_creates() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        let b = a.join("b");
        durable::tests::take_synced();
        drop(wal(&b));
        let synced = durable::tests::take_synced();
        // `a` in the root, `b` in `a`, then the first segment in `b`.
        assert_eq!(synced, [root.path().to_owned(), a, b]);
    }

    #[test]
    fn wal_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Wal>();
    }
}
