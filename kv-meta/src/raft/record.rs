//! The meta log's records (membership.md §1.4; format.md, "Meta log records"): the payload
//! of one kv-wal record.
//!
//! ```text
//! offset  size  field
//! 0       1     record format version, 1
//! 1       1     kind: 1 entry, 2 vote, 3 committed, 4 truncate-from, 5 purged-through
//! 2       rest  postcard of the kind's value: Entry<MetaTypes>, Vote<u64>, Option<LogId<u64>>,
//!               u64 (the first index dropped), LogId<u64> (the last index purged)
//! ```

use openraft::{Entry, LogId, Vote};

use crate::error::{Error, Result};
use crate::raft::MetaTypes;

/// The meta log record version this build reads and writes.
pub const LOG_RECORD_VERSION: u8 = 1;

/// One record of the meta log. The log is replayed in order on open: the last `Vote` and
/// `Committed` win, `TruncateFrom` forgets the entries at and after an index, `PurgedThrough`
/// those up to one.
#[derive(Debug, Clone)]
pub enum LogRecord {
    /// A raft log entry (kind 1).
    Entry(Entry<MetaTypes>),
    /// The vote (kind 2).
    Vote(Vote<u64>),
    /// The committed log id (kind 3).
    Committed(Option<LogId<u64>>),
    /// Entries from this index on are gone (kind 4).
    TruncateFrom(u64),
    /// Entries up to this log id are purged (kind 5).
    PurgedThrough(LogId<u64>),
}

impl LogRecord {
    fn kind(&self) -> u8 {
        match self {
            LogRecord::Entry(_) => 1,
            LogRecord::Vote(_) => 2,
            LogRecord::Committed(_) => 3,
            LogRecord::TruncateFrom(_) => 4,
            LogRecord::PurgedThrough(_) => 5,
        }
    }

    /// The record's payload: version, kind, postcard body.
    ///
    /// # Errors
    /// [`Error::Encode`] if postcard fails (it does not for these types).
    ///
    /// # Example
    ///
    /// ```
    /// use kv_meta::LogRecord;
    /// let bytes = LogRecord::TruncateFrom(300).encode()?;
    /// assert_eq!(bytes, [1, 4, 0xac, 0x02]); // version 1, kind 4, varint 300
    /// # Ok::<(), kv_meta::Error>(())
    /// ```
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![LOG_RECORD_VERSION, self.kind()];
        let body = match self {
            LogRecord::Entry(e) => postcard::to_extend(e, out),
            LogRecord::Vote(v) => postcard::to_extend(v, out),
            LogRecord::Committed(c) => postcard::to_extend(c, out),
            LogRecord::TruncateFrom(i) => postcard::to_extend(i, out),
            LogRecord::PurgedThrough(l) => postcard::to_extend(l, out),
        };
        out = body.map_err(|e| Error::Encode {
            what: "meta log record",
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    /// Reads a record's payload; `lsn` (the record's position) only names it in errors.
    ///
    /// # Errors
    /// [`Error::UnsupportedRecord`] for another version (the node does not start),
    /// [`Error::BadRecord`] for an unknown kind or a body that does not decode exactly.
    pub fn decode(lsn: u64, payload: &[u8]) -> Result<LogRecord> {
        let bad = |reason: String| Error::BadRecord { lsn, reason };
        let (&version, rest) = payload
            .split_first()
            .ok_or_else(|| bad("empty record".into()))?;
        if version != LOG_RECORD_VERSION {
            return Err(Error::UnsupportedRecord {
                lsn,
                version,
                supported: LOG_RECORD_VERSION,
            });
        }
        let (&kind, body) = rest
            .split_first()
            .ok_or_else(|| bad("no record kind".into()))?;
        fn exact<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> std::result::Result<T, String> {
            let (value, rest) = postcard::take_from_bytes(body).map_err(|e| e.to_string())?;
            if rest.is_empty() {
                Ok(value)
            } else {
                Err(format!("{} bytes after the body", rest.len()))
            }
        }
        let record = match kind {
            1 => exact(body).map(LogRecord::Entry),
            2 => exact(body).map(LogRecord::Vote),
            3 => exact(body).map(LogRecord::Committed),
            4 => exact(body).map(LogRecord::TruncateFrom),
            5 => exact(body).map(LogRecord::PurgedThrough),
            k => Err(format!("unknown record kind {k}")),
        };
        record.map_err(bad)
    }
}
