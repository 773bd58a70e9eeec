//! The crate's error type.

use std::{io, path::PathBuf};

/// Everything that can go wrong in `kv-node`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another open `Node` (in this process or another) holds the directory.
    #[error("node directory {path} is in use by another process or Node (its WAL lock is held)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// Keys must be at least one byte long.
    #[error("empty key")]
    EmptyKey,

    /// The key is longer than the limit.
    #[error("key of {len} bytes is over the limit of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The value is longer than the limit (or than what fits in a log segment).
    #[error("value of {len} bytes is over the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit for this key.
        max: usize,
    },

    /// The version is at or past [`Version::LIMIT`](crate::Version::LIMIT).
    #[error(
        "version {version} is past the limit (year 6429); is a clock or a client sending garbage?"
    )]
    VersionTooLarge {
        /// The version refused.
        version: crate::Version,
    },

    /// A batch must fit in one log segment, to be atomic.
    #[error("batch of {bytes} bytes does not fit in one log segment ({max} bytes)")]
    BatchTooLarge {
        /// The batch's encoded size.
        bytes: usize,
        /// What fits.
        max: usize,
    },

    /// The options are not usable.
    #[error("invalid NodeOptions: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: &'static str,
    },

    /// The log holds a record this node cannot decode (its checksum was valid).
    #[error("corrupt record at {lsn:?}: {reason}")]
    CorruptRecord {
        /// Where.
        lsn: kv_wal::Lsn,
        /// What is wrong.
        reason: &'static str,
    },

    /// The write-ahead log failed (I/O, corruption found on open, a failed flush, ...).
    #[error(transparent)]
    Wal(kv_wal::Error),

    /// An I/O operation on a file of the node's own (a hint file, the directory) failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A read found the record moved by compaction more times in a row than it retries.
    #[error("key moved by compaction {retries} times during one read; try again")]
    Moved {
        /// How many times the read looked again.
        retries: usize,
    },
}

impl From<kv_wal::Error> for Error {
    fn from(e: kv_wal::Error) -> Self {
        match e {
            kv_wal::Error::Locked { path } => Error::Locked { path },
            e => Error::Wal(e),
        }
    }
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An error of [`kv_wal::durable`] on a file of the node's own: the node's
    /// [`Error::Io`], not a failure of the log.
    pub(crate) fn durable(e: kv_wal::durable::Error) -> Error {
        Error::io(e.op, e.path, e.source)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
