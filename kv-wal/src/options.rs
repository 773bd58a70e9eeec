//! Options: segment size, sync policy, recovery mode.

use std::{fmt, io, path::Path, sync::Arc, time::Duration};

use crate::{
    Error, Result,
    format::{ALIGN, HEADER_LEN, RECORD_HEADER_LEN},
};

/// When appended records become durable (survive a power cut or kernel crash).
///
/// Records are written by copying them into a shared file mapping, so once an append returns
/// they are in the kernel's page cache: **a crash of the process (even `SIGKILL`) loses nothing
/// that was acknowledged, under every policy.** The policy decides what survives a power cut or
/// a kernel crash, i.e. when the dirty pages are written back with `msync(MS_SYNC)` (which on
/// Linux is `fdatasync` of the byte range: data and the metadata needed to read it back).
///
/// Whatever the policy, recovery returns a *prefix* of the appends: it stops at the first
/// missing or invalid record and never skips a hole to return later records.
///
/// # Example
///
/// ```
/// use kv_wal::{SyncPolicy, Wal, WalOptions};
/// # let dir = tempfile::tempdir()?;
/// let wal = Wal::open(dir.path(), WalOptions::new().sync(SyncPolicy::Always))?;
/// let lsn = wal.append(b"acknowledged = durable")?;
/// assert!(wal.durable_lsn() > lsn);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// An append returns only after a flush that covers it has completed: every acknowledged
    /// record survives a power cut. Concurrent appends share flushes (group commit): one
    /// appender flushes everything published so far while the others wait and are woken with
    /// its result, including its error.
    Always,
    /// A background thread flushes every `interval`: a power cut loses at most about the last
    /// interval of acknowledged appends (like Redis `appendfsync everysec`). Dropping the `Wal`
    /// stops the thread and makes a last flush.
    Periodic(Duration),
    /// The log flushes only when a segment fills up (one flush per segment, so that only the
    /// newest segment can be torn) and when [`Wal::sync`](crate::Wal::sync) is called; the
    /// kernel writes other pages back when it chooses. A power cut can lose any acknowledged
    /// append not covered by one of those flushes, and can leave holes in the newest segment
    /// (the default recovery truncates at the first; [`RecoveryMode::PointInTime`] salvages a
    /// log damaged elsewhere).
    Never,
}

impl Default for SyncPolicy {
    /// `Periodic(1 s)`.
    fn default() -> Self {
        SyncPolicy::Periodic(Duration::from_secs(1))
    }
}

/// What recovery on open may discard (after RocksDB's `wal_recovery_mode`).
///
/// Recovery always stops at the first invalid record of a segment; the modes differ in where
/// such a stop is acceptable. Whatever is discarded is zeroed on disk and reported in the
/// [`RecoveryReport`](crate::RecoveryReport).
///
/// # Example
///
/// ```
/// use kv_wal::{RecoveryMode, Wal, WalOptions};
/// # let dir = tempfile::tempdir()?;
/// // Salvage whatever prefix is valid, whatever the damage:
/// let wal = Wal::open(dir.path(), WalOptions::new().recovery(RecoveryMode::PointInTime))?;
/// if let Some(t) = &wal.recovery_report().truncation {
///     eprintln!("discarded from segment {} offset {}: {}", t.segment, t.offset, t.reason);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Any invalid record or stray byte is an [`Error::Corrupt`]: use after a clean shutdown,
    /// when nothing can be torn.
    AbsoluteConsistency,
    /// The default. A torn or corrupt tail of the *newest* segment (what a crash leaves) is
    /// truncated; corruption in any older segment is an [`Error::Corrupt`] naming the segment
    /// and offset. Older segments are flushed whole before the next one gets its first record
    /// (under every sync policy), so a crash cannot tear them.
    #[default]
    TolerateCorruptedTail,
    /// Recover to the last consistent point: stop at the first invalid record in *any*
    /// segment, truncate there and delete every later segment. Never fails because of file
    /// contents. Use after a power cut under `SyncPolicy::Never`, or to salvage a damaged log.
    PointInTime,
}

/// A completed flush, as seen by a [`WalOptions::flush_hook`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FlushEvent<'a> {
    /// The segment file.
    pub path: &'a Path,
    /// The segment's sequence number.
    pub segment: u32,
    /// First byte made durable.
    pub offset: usize,
    /// Number of bytes made durable.
    pub len: usize,
}

/// A callback run after each successful `msync`; see [`WalOptions::flush_hook`].
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use kv_wal::{FlushEvent, SyncPolicy, Wal, WalOptions};
/// # let dir = tempfile::tempdir()?;
/// let flushed = Arc::new(AtomicU64::new(0));
/// let f = Arc::clone(&flushed);
/// let opts = WalOptions::new().sync(SyncPolicy::Always).flush_hook(Arc::new(move |ev: &FlushEvent<'_>| {
///     f.fetch_add(ev.len as u64, Ordering::Relaxed);
///     Ok(())
/// }));
/// let wal = Wal::open(dir.path(), opts)?;
/// wal.append(b"x")?;
/// assert!(flushed.load(Ordering::Relaxed) >= 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type FlushHook = Arc<dyn Fn(&FlushEvent<'_>) -> io::Result<()> + Send + Sync>;

/// Options for [`Wal::open`](crate::Wal::open), as a builder.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use kv_wal::{RecoveryMode, SyncPolicy, WalOptions};
///
/// let opts = WalOptions::new()
///     .segment_size(1 << 20)
///     .sync(SyncPolicy::Periodic(Duration::from_millis(100)))
///     .recovery(RecoveryMode::TolerateCorruptedTail);
/// assert_eq!(opts.get_segment_size(), 1 << 20);
/// ```
#[derive(Clone)]
pub struct WalOptions {
    pub(crate) segment_size: u32,
    pub(crate) initial_segment_size: u32,
    pub(crate) sync: SyncPolicy,
    pub(crate) recovery: RecoveryMode,
    pub(crate) prefault: bool,
    pub(crate) flush_hook: Option<FlushHook>,
    pub(crate) recycle_segments: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            initial_segment_size: 1 << 20,
            sync: SyncPolicy::default(),
            recovery: RecoveryMode::default(),
            prefault: false,
            flush_hook: None,
            recycle_segments: 0,
        }
    }
}

impl fmt::Debug for WalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalOptions")
            .field("segment_size", &self.segment_size)
            .field("initial_segment_size", &self.initial_segment_size)
            .field("sync", &self.sync)
            .field("recovery", &self.recovery)
            .field("prefault", &self.prefault)
            .field("flush_hook", &self.flush_hook.is_some())
            .field("recycle_segments", &self.recycle_segments)
            .finish()
    }
}

impl WalOptions {
    /// The defaults: segments growing from 1 MiB to 64 MiB, `SyncPolicy::Periodic(1 s)`,
    /// `RecoveryMode::TolerateCorruptedTail`, no prefaulting, no flush hook, no recycling.
    pub fn new() -> Self {
        Self::default()
    }

    /// The size segments grow to, in bytes (default 64 MiB). Must be a multiple of 8, at least
    /// 64 and below 4 GiB. The largest record (or batch) is `segment_size - 40` bytes. Applies
    /// to segments created from now on; existing segments keep their size.
    ///
    /// A new log's first segment is [`initial_segment_size`](WalOptions::initial_segment_size)
    /// long; each next one twice the one before, up to this size (and never smaller than the
    /// record that opens it): see the crate docs, *Segment sizes*.
    pub fn segment_size(mut self, bytes: u32) -> Self {
        self.segment_size = bytes;
        self
    }

    /// The size of a new log's first segment, in bytes (default 1 MiB; at most
    /// [`segment_size`](WalOptions::segment_size), which a larger value is cut to). Must be a
    /// multiple of 8 and at least 64. Later segments double from it.
    ///
    /// ```
    /// use kv_wal::WalOptions;
    /// let opts = WalOptions::new().segment_size(1 << 20).initial_segment_size(4 << 20);
    /// assert_eq!(opts.get_initial_segment_size(), 1 << 20); // cut to `segment_size`
    /// ```
    pub fn initial_segment_size(mut self, bytes: u32) -> Self {
        self.initial_segment_size = bytes;
        self
    }

    /// The [`SyncPolicy`] (default `Periodic(1 s)`).
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// The [`RecoveryMode`] used when opening (default `TolerateCorruptedTail`).
    pub fn recovery(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        self
    }

    /// Map new segments with `MAP_POPULATE` (default `false`), so that appends into a fresh
    /// segment do not take a page fault per page. Costs the time to fault in the whole segment
    /// when it is created.
    pub fn prefault(mut self, yes: bool) -> Self {
        self.prefault = yes;
        self
    }

    /// A callback run after every successful flush, with the byte range it made durable (for
    /// metrics and for fault-injection tests that model what a power cut keeps). If it returns
    /// an error or panics, the flush is treated as failed: the log is poisoned. Default: none.
    pub fn flush_hook(mut self, hook: FlushHook) -> Self {
        self.flush_hook = Some(hook);
        self
    }

    /// How many released segments the log keeps for reuse (default 0: off; kv-node's
    /// `NodeOptions` sets 2): RocksDB's `recycle_log_file_num`. A full-size segment that
    /// [`Wal::truncate_before`](crate::Wal::truncate_before) drops is renamed into the log's
    /// pool (`NNNNNNNNNN.pool`) while the pool has room, and the next roll-over to a
    /// full-size segment reuses it instead of creating a fresh file: its pages are often
    /// still in the page cache, and its blocks are written already, so appends do not make
    /// the kernel allocate and zero new pages. The pool costs up to this many times
    /// `segment_size` of disk.
    ///
    /// A recycled segment is written in format version 2 (its records' checksums are masked
    /// with its sequence number, so its leftovers never pass for new records; see the crate
    /// docs), which versions of this crate before it refuse to open.
    ///
    /// Not under [`SyncPolicy::Always`], which drops a new segment's cached pages (to get
    /// one-page folios, see the crate docs): there the option is ignored.
    ///
    /// ```
    /// use kv_wal::WalOptions;
    /// assert_eq!(WalOptions::new().get_recycle_segments(), 0);
    /// assert_eq!(WalOptions::new().recycle_segments(2).get_recycle_segments(), 2);
    /// ```
    pub fn recycle_segments(mut self, files: usize) -> Self {
        self.recycle_segments = files;
        self
    }

    /// How many released segments the log keeps for reuse: the configured number, 0 under
    /// [`SyncPolicy::Always`].
    pub fn get_recycle_segments(&self) -> usize {
        if self.sync == SyncPolicy::Always {
            0
        } else {
            self.recycle_segments
        }
    }

    /// The configured segment size.
    pub fn get_segment_size(&self) -> u32 {
        self.segment_size
    }

    /// The size of a new log's first segment: the configured initial size, at most the
    /// segment size.
    pub fn get_initial_segment_size(&self) -> u32 {
        self.initial_segment_size.min(self.segment_size)
    }

    /// The size of the segment that follows one of `prev` bytes, opened by a record (or batch)
    /// of `total` framed bytes: twice `prev`, at least the initial size, at most the segment
    /// size, and never too small for the record. (`total` is at most `segment_size - 32`, as
    /// an append checks, so the result is at most the segment size.)
    pub(crate) fn next_segment_size(&self, prev: usize, total: usize) -> u32 {
        let max = self.segment_size as usize;
        let grown = prev
            .saturating_mul(2)
            .clamp(self.get_initial_segment_size() as usize, max);
        let need = HEADER_LEN.saturating_add(total);
        // Both are multiples of 8 (sizes are, framed records are) and fit in a u32.
        u32::try_from(grown.max(need)).unwrap_or(self.segment_size)
    }

    /// The configured sync policy.
    pub fn get_sync(&self) -> SyncPolicy {
        self.sync
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let size = self.segment_size as usize;
        if !size.is_multiple_of(ALIGN) {
            return Err(Error::InvalidOptions {
                reason: "segment_size must be a multiple of 8",
            });
        }
        if size < 64 || size < HEADER_LEN + RECORD_HEADER_LEN {
            return Err(Error::InvalidOptions {
                reason: "segment_size must be at least 64 bytes",
            });
        }
        let initial = self.initial_segment_size as usize;
        if !initial.is_multiple_of(ALIGN) || initial < 64 {
            return Err(Error::InvalidOptions {
                reason: "initial_segment_size must be a multiple of 8, at least 64 bytes",
            });
        }
        if let SyncPolicy::Periodic(d) = self.sync
            && d.is_zero()
        {
            return Err(Error::InvalidOptions {
                reason: "the Periodic interval must be nonzero",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_as_documented() {
        let o = WalOptions::new();
        assert_eq!(o.get_segment_size(), 64 << 20);
        assert_eq!(o.get_initial_segment_size(), 1 << 20);
        assert_eq!(o.get_sync(), SyncPolicy::Periodic(Duration::from_secs(1)));
        assert_eq!(o.recovery, RecoveryMode::TolerateCorruptedTail);
        assert!(!o.prefault && o.flush_hook.is_none());
        assert_eq!(o.get_recycle_segments(), 0);
        let always = o.clone().recycle_segments(2).sync(SyncPolicy::Always);
        assert_eq!(always.get_recycle_segments(), 0, "never under Always");
        assert!(o.validate().is_ok());
    }

    #[test]
    fn segments_double_from_the_initial_size_and_fit_the_record_that_opens_them() {
        let o = WalOptions::new().segment_size(8 << 20);
        let next = |prev: usize, total: usize| o.next_segment_size(prev, total) as usize;
        assert_eq!(next(1 << 20, 16), 2 << 20);
        assert_eq!(next(4 << 20, 16), 8 << 20);
        assert_eq!(next(8 << 20, 16), 8 << 20);
        // From a segment smaller than the initial size (an older log's): the initial size.
        assert_eq!(next(4096, 16), 1 << 20);
        // From one larger than the segment size (the option shrank): the segment size.
        assert_eq!(next(64 << 20, 16), 8 << 20);
        // A record larger than the doubled size gets a segment its size.
        assert_eq!(next(1 << 20, 5 << 20), (5 << 20) + 32);
        assert_eq!(next(1 << 20, (8 << 20) - 32), 8 << 20);
    }

    #[test]
    fn bad_options_are_refused() {
        for o in [
            WalOptions::new().segment_size(100),
            WalOptions::new().segment_size(56),
            WalOptions::new().sync(SyncPolicy::Periodic(Duration::ZERO)),
            WalOptions::new().initial_segment_size(100),
            WalOptions::new().initial_segment_size(56),
        ] {
            assert!(matches!(o.validate(), Err(Error::InvalidOptions { .. })));
        }
        assert!(WalOptions::new().segment_size(64).validate().is_ok());
    }
}
