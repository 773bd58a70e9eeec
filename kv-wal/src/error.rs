//! The crate's error type.

use std::{io, path::PathBuf, sync::Arc};

use crate::Lsn;

/// Everything that can go wrong in `kv-wal`.
///
/// Variants carry the file, segment and offset involved, so a message alone says where to look.
///
/// A variant's `Display` says what failed and where, never why: the cause is its
/// [`source`](std::error::Error::source), so a report that prints the chain (`a: b: c`, as
/// `anyhow`'s `{:#}` does) shows each cause once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`"create segment"`, `"open directory"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another `Wal` (in this process or another) holds the directory's `LOCK` file.
    #[error("{path} is locked by another open Wal")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The options are not usable.
    #[error("invalid WalOptions: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: &'static str,
    },

    /// A segment file's header is not valid (wrong magic, version, checksum or sequence number).
    #[error("segment {path}: bad header: {reason}")]
    BadHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },

    /// Recovery found corruption that the [`RecoveryMode`](crate::RecoveryMode) does not allow
    /// it to discard (by default: anything but the tail of the newest segment).
    #[error("segment {segment} ({path}) is corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// The segment's sequence number.
        segment: u32,
        /// Byte offset of the first invalid record or stray byte.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },

    /// A segment between the oldest and the newest is missing from the directory.
    #[error("segment {segment} is missing from {dir}")]
    MissingSegment {
        /// The log directory.
        dir: PathBuf,
        /// The missing sequence number.
        segment: u32,
    },

    /// A record or batch does not fit in one segment.
    #[error("record of {len} bytes (framed) does not fit in a segment ({max} bytes of room)")]
    RecordTooLarge {
        /// Framed size of the record or batch.
        len: usize,
        /// Room in an empty segment.
        max: usize,
    },

    /// `append_batch` was given no records.
    #[error("empty batch")]
    EmptyBatch,

    /// The segment sequence numbers are exhausted (after 2^32 segments).
    #[error("segment sequence numbers exhausted in {dir}")]
    SequenceExhausted {
        /// The log directory.
        dir: PathBuf,
    },

    /// The `Lsn` does not name a readable record: past the end of the log, in a removed
    /// segment, or not at a record boundary.
    #[error("no record at {lsn}: {reason}")]
    InvalidLsn {
        /// The `Lsn` asked for.
        lsn: Lsn,
        /// Why.
        reason: &'static str,
    },

    /// A record read back from a live segment failed its checksum.
    #[error("record at {lsn} in {path} is corrupt: {reason}")]
    CorruptRecord {
        /// The segment file.
        path: PathBuf,
        /// The record's position.
        lsn: Lsn,
        /// What is wrong.
        reason: &'static str,
    },

    /// A flush (`msync`) failed. The log is now poisoned: nothing written since the last good
    /// flush can be trusted to be durable, so further appends fail until the `Wal` is reopened
    /// (reopening re-scans the files and keeps what is really there). The appends that got
    /// this error are in the log but not known to be durable: after a reopen they may or may
    /// not be there, like any unacknowledged append.
    #[error("flush of {path} failed; the log is poisoned")]
    SyncFailed {
        /// The segment whose flush failed.
        path: PathBuf,
        /// The error the flush returned (shared by every append that waited for it).
        #[source]
        source: Arc<io::Error>,
    },

    /// An earlier flush failed (see [`Error::SyncFailed`]); the log refuses appends and syncs
    /// until it is reopened.
    #[error("the log is poisoned by an earlier failed flush of {path}")]
    Poisoned {
        /// The segment whose flush failed.
        path: PathBuf,
        /// The error that flush returned.
        #[source]
        source: Arc<io::Error>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// The variant's position in the enum. Exhaustive, so a new variant does not compile
    /// until it is listed here, and `one_of_each` must then hold one of it.
    fn variant(e: &Error) -> usize {
        match e {
            Error::Io { .. } => 0,
            Error::Locked { .. } => 1,
            Error::InvalidOptions { .. } => 2,
            Error::BadHeader { .. } => 3,
            Error::Corrupt { .. } => 4,
            Error::MissingSegment { .. } => 5,
            Error::RecordTooLarge { .. } => 6,
            Error::EmptyBatch => 7,
            Error::SequenceExhausted { .. } => 8,
            Error::InvalidLsn { .. } => 9,
            Error::CorruptRecord { .. } => 10,
            Error::SyncFailed { .. } => 11,
            Error::Poisoned { .. } => 12,
        }
    }
    const VARIANTS: usize = 13;

    fn one_of_each() -> Vec<Error> {
        let path = || PathBuf::from("/data/wal/00000001.log");
        let enospc = || io::Error::from_raw_os_error(libc::ENOSPC);
        vec![
            Error::io("create segment", path(), enospc()),
            Error::Locked { path: path() },
            Error::InvalidOptions { reason: "zero" },
            Error::BadHeader {
                path: path(),
                reason: "bad magic",
            },
            Error::Corrupt {
                path: path(),
                segment: 1,
                offset: 64,
                reason: "bad checksum",
            },
            Error::MissingSegment {
                dir: path(),
                segment: 2,
            },
            Error::RecordTooLarge { len: 10, max: 5 },
            Error::EmptyBatch,
            Error::SequenceExhausted { dir: path() },
            Error::InvalidLsn {
                lsn: Lsn::new(1, 64),
                reason: "past the end",
            },
            Error::CorruptRecord {
                path: path(),
                lsn: Lsn::new(1, 64),
                reason: "bad checksum",
            },
            Error::SyncFailed {
                path: path(),
                source: Arc::new(io::Error::from_raw_os_error(libc::EIO)),
            },
            Error::Poisoned {
                path: path(),
                source: Arc::new(io::Error::from_raw_os_error(libc::EIO)),
            },
        ]
    }

    #[test]
    fn no_error_repeats_its_source_in_its_message() {
        let errors = one_of_each();
        let mut seen: Vec<usize> = errors.iter().map(variant).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), VARIANTS, "one sample of every variant");
        let mut with_source = 0;
        for e in &errors {
            let mut current: &dyn std::error::Error = e;
            while let Some(source) = current.source() {
                with_source += 1;
                let (message, cause) = (current.to_string(), source.to_string());
                assert!(
                    !message.contains(&cause),
                    "{e:?}: {message:?} repeats its source {cause:?}"
                );
                current = source;
            }
        }
        assert_eq!(with_source, 3, "Io, SyncFailed and Poisoned have a cause");
    }
}
