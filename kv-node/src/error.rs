//! The crate's error type.

use std::{io, path::PathBuf};

/// Everything that can go wrong in `kv-node`.
///
/// A variant's `Display` says what failed and where, never why: the cause is its
/// [`source`](std::error::Error::source), so a report that prints the chain (`a: b: c`, see
/// [`Error::chain`]) shows each cause once.
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

    /// The log holds a record in a payload format this code does not read (written by a
    /// newer kvstore): open it with that version.
    #[error(
        "record at {lsn:?} has payload format version {version}; this build reads version {supported}"
    )]
    UnsupportedRecordVersion {
        /// Where.
        lsn: kv_wal::Lsn,
        /// The version byte found.
        version: u8,
        /// The version this build reads and writes.
        supported: u8,
    },

    /// The write-ahead log failed (I/O, corruption found on open, a failed flush, ...).
    #[error(transparent)]
    Wal(kv_wal::Error),

    /// An I/O operation on a file of the node's own (a hint file, the directory) failed.
    #[error("{op} {path}")]
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
    /// This error and its causes on one line, `a: b: c`: what a log line or a status field
    /// shows (the `Display` alone leaves the cause out).
    ///
    /// ```
    /// let e = kv_node::Error::from(kv_wal::Error::Io {
    ///     op: "create segment",
    ///     path: "/data/wal/0000000002.wal".into(),
    ///     source: std::io::Error::other("disk full"),
    /// });
    /// assert_eq!(e.to_string(), "create segment /data/wal/0000000002.wal");
    /// assert_eq!(e.chain(), "create segment /data/wal/0000000002.wal: disk full");
    /// ```
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cause = e.source();
        }
        out
    }

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The variant's position in the enum. Exhaustive, so a new variant does not compile
    /// until it is listed here, and `one_of_each` must then hold one of it.
    fn variant(e: &Error) -> usize {
        match e {
            Error::Locked { .. } => 0,
            Error::EmptyKey => 1,
            Error::KeyTooLarge { .. } => 2,
            Error::ValueTooLarge { .. } => 3,
            Error::VersionTooLarge { .. } => 4,
            Error::BatchTooLarge { .. } => 5,
            Error::InvalidOptions { .. } => 6,
            Error::CorruptRecord { .. } => 7,
            Error::Wal(_) => 8,
            Error::Io { .. } => 9,
            Error::Moved { .. } => 10,
            Error::UnsupportedRecordVersion { .. } => 11,
        }
    }
    const VARIANTS: usize = 12;

    fn one_of_each() -> Vec<Error> {
        let path = || PathBuf::from("/data/node1/wal/00000001.log");
        let enospc = || io::Error::other("disk full");
        vec![
            Error::Locked { path: path() },
            Error::EmptyKey,
            Error::KeyTooLarge { len: 10, max: 5 },
            Error::ValueTooLarge { len: 10, max: 5 },
            Error::VersionTooLarge {
                version: crate::Version::LIMIT,
            },
            Error::BatchTooLarge { bytes: 10, max: 5 },
            Error::InvalidOptions { reason: "zero" },
            Error::CorruptRecord {
                lsn: kv_wal::Lsn::new(1, 64),
                reason: "bad tag",
            },
            Error::from(kv_wal::Error::Poisoned {
                path: path(),
                source: Arc::new(enospc()),
            }),
            Error::io("write hints", path(), enospc()),
            Error::Moved { retries: 3 },
            Error::UnsupportedRecordVersion {
                lsn: kv_wal::Lsn::new(1, 64),
                version: 1,
                supported: 0,
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
        assert_eq!(
            with_source, 2,
            "Wal (through the log's error) and Io have a cause"
        );
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let e = Error::io(
            "write hints",
            "/data/node1/hints",
            io::Error::other("disk full"),
        );
        assert_eq!(e.chain(), "write hints /data/node1/hints: disk full");
    }
}
