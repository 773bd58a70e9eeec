//! The range stream's wire format: what a source sends a destination over a kv-net bulk
//! stream during a membership change (`docs/membership.md` §3.4, `docs/format.md` "Range
//! streams").
//!
//! The stream's opening header and each chunk are one version byte
//! ([`STREAM_FORMAT_VERSION`]) then a postcard body: a [`StreamHeader`] for the header, a
//! [`StreamMessage`] for a chunk. Records travel as the replica protocol's [`Entry`], so a
//! record means the same thing here as in an `Import` request.

use bytes::Bytes;
use kv_node::{Record, Version};
use kv_ring::TokenRange;
use serde::{Deserialize, Serialize, Serializer};

use crate::protocol::{Entry, Range};

/// The version of the range stream format: the first byte of the header and of every chunk.
/// A stream or chunk of another version is refused, never guessed at.
pub const STREAM_FORMAT_VERSION: u8 = 1;

/// Most records in one chunk.
pub const MAX_CHUNK_RECORDS: usize = 1000;

/// Most key and value bytes in one chunk, unless a single record is larger (it then travels
/// alone; kv-net's frame limit bounds it).
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

/// A checkpoint follows at most this many chunks of records (and each range's end).
pub const CHECKPOINT_EVERY: u64 = 64;

/// A stream's opening header: which change's task it carries, under which driver term, and
/// the metadata epoch its records are imported at.
///
/// # Example
/// ```
/// use kv_remote::StreamHeader;
///
/// let h = StreamHeader { change: 3, task: 1, term: 7, epoch: 12 };
/// assert_eq!(StreamHeader::decode(&h.encode())?, h);
/// # Ok::<(), kv_remote::StreamError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHeader {
    /// The membership change.
    pub change: u64,
    /// The task within it (a source, a destination and their ranges).
    pub task: u64,
    /// The driver's term that issued the task: a stream of a newer term for the same task
    /// cancels this one.
    pub term: u64,
    /// The metadata epoch the destination imports at (its fence refuses an older one).
    pub epoch: u64,
}

/// One chunk of a range stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamMessage {
    /// 0: records, at most [`MAX_CHUNK_RECORDS`], imported with last-writer-wins.
    Records(Vec<Entry>),
    /// 1: every record of `range` up to `done_through` (clockwise from the range's start,
    /// inclusive) has been sent: a task resumed later starts after it.
    Checkpoint {
        /// The task's range.
        range: Range,
        /// The last token sent in full (the range's end: the range is finished).
        done_through: u64,
    },
}

/// What is wrong with a range stream, as the destination sees it (and the source, from the
/// destination's verdict text).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A header or chunk of another format version.
    #[error("range stream format version {found}, this node reads {supported}")]
    UnsupportedVersion {
        /// The version received.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A header or chunk that does not decode (a lying length, a truncated body, ...).
    #[error("a range stream {what} does not decode")]
    Decode {
        /// The header or a chunk.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: postcard::Error,
    },
    /// A header or chunk with nothing in it.
    #[error("an empty range stream {what}")]
    Empty {
        /// The header or a chunk.
        what: &'static str,
    },
    /// A chunk with more records than [`MAX_CHUNK_RECORDS`].
    #[error("a chunk of {records} records, more than {MAX_CHUNK_RECORDS}")]
    TooManyRecords {
        /// The records it holds.
        records: usize,
    },
    /// A checkpoint whose token is outside its range.
    #[error("a checkpoint at {done_through:#x} outside its range ({start:#x}, {end:#x}]")]
    BadCheckpoint {
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
        /// The token claimed.
        done_through: u64,
    },
    /// The sending node is not a member this node serves.
    #[error("node {node} is not a member")]
    NotAMember {
        /// The sender.
        node: String,
    },
    /// This node takes no range streams (no receiver is set).
    #[error("this node takes no range streams")]
    NoReceiver,
    /// A stream of the same task under a newer term replaced this one (or one already runs
    /// under a newer term than this one's).
    #[error("task {task} of change {change}: term {term} superseded by term {by}")]
    Superseded {
        /// The change.
        change: u64,
        /// The task.
        task: u64,
        /// This stream's term.
        term: u64,
        /// The newer term.
        by: u64,
    },
    /// Importing or syncing on the destination failed.
    #[error("the destination's node failed")]
    Node(#[source] kv_cluster::Error),
}

/// `body` behind the version byte.
fn framed<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![STREAM_FORMAT_VERSION];
    // Serializing into a Vec cannot fail for these types (no maps with non-string keys,
    // no sequences of unknown length).
    if let Ok(body) = postcard::to_allocvec(value) {
        out.extend_from_slice(&body);
    }
    out
}

/// The body behind the version byte, checked.
fn unframed<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T, StreamError> {
    let (&version, body) = bytes.split_first().ok_or(StreamError::Empty { what })?;
    if version != STREAM_FORMAT_VERSION {
        return Err(StreamError::UnsupportedVersion {
            found: version,
            supported: STREAM_FORMAT_VERSION,
        });
    }
    postcard::from_bytes(body).map_err(|source| StreamError::Decode { what, source })
}

impl StreamHeader {
    /// The header's bytes: the version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        framed(self)
    }

    /// A header from its bytes.
    ///
    /// # Errors
    /// [`StreamError::Empty`], [`StreamError::UnsupportedVersion`], [`StreamError::Decode`].
    pub fn decode(bytes: &[u8]) -> Result<StreamHeader, StreamError> {
        unframed("header", bytes)
    }
}

impl StreamMessage {
    /// The chunk's bytes: the version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        framed(self)
    }

    /// A chunk from its bytes, checked: at most [`MAX_CHUNK_RECORDS`] records, a checkpoint
    /// inside its range. postcard never allocates for a length it has not read the bytes of
    /// (serde caps a sequence's preallocation), and kv-net bounds the chunk's size.
    ///
    /// # Errors
    /// [`StreamError::Empty`], [`StreamError::UnsupportedVersion`], [`StreamError::Decode`],
    /// [`StreamError::TooManyRecords`], [`StreamError::BadCheckpoint`].
    ///
    /// # Example
    /// ```
    /// use kv_remote::{Range, StreamError, StreamMessage};
    ///
    /// let m = StreamMessage::Checkpoint { range: Range { start: 10, end: 20 }, done_through: 15 };
    /// assert_eq!(StreamMessage::decode(&m.encode())?, m);
    /// let mut bad = m.encode();
    /// bad[0] = 9;
    /// assert!(matches!(StreamMessage::decode(&bad), Err(StreamError::UnsupportedVersion { found: 9, .. })));
    /// # Ok::<(), StreamError>(())
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<StreamMessage, StreamError> {
        let m: StreamMessage = unframed("chunk", bytes)?;
        match &m {
            StreamMessage::Records(r) if r.len() > MAX_CHUNK_RECORDS => {
                return Err(StreamError::TooManyRecords { records: r.len() });
            }
            StreamMessage::Checkpoint {
                range,
                done_through,
            } if !TokenRange::from(*range).contains(*done_through) => {
                return Err(StreamError::BadCheckpoint {
                    start: range.start,
                    end: range.end,
                    done_through: *done_through,
                });
            }
            _ => {}
        }
        Ok(m)
    }
}

/// A chunk of records in [`StreamMessage::Records`]'s encoding, serialized from the records
/// themselves: the sender encodes a chunk without building an [`Entry`] per record (two
/// reference-count increments and decrements each, on a buffer another thread frees).
#[derive(Serialize)]
enum RecordsOut<'a> {
    /// Variant 0, as [`StreamMessage::Records`].
    Records(#[serde(serialize_with = "records_as_entries")] &'a [Record]),
}

/// Bytes as serde bytes (as [`Bytes`] serializes), not as a sequence of `u8`.
struct BytesOut<'a>(&'a [u8]);

impl Serialize for BytesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// An [`Entry`]'s fields, in its order, borrowed from a record.
#[derive(Serialize)]
struct EntryOut<'a> {
    key: BytesOut<'a>,
    value: Option<BytesOut<'a>>,
    version: u64,
    expires: Option<u64>,
}

fn records_as_entries<S: Serializer>(records: &&[Record], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(records.iter().map(|r| EntryOut {
        key: BytesOut(&r.key),
        value: r.value.as_deref().map(BytesOut),
        version: r.version.as_u64(),
        // A tombstone's expiry is not sent (as `Entry::from_record`).
        expires: r.expires.filter(|_| r.value.is_some()),
    }))
}

/// The bytes of `StreamMessage::Records` of `records` (the same bytes as building the
/// entries and encoding that), written once into one buffer.
pub(crate) fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        16 + records
            .iter()
            .map(|r| r.key.len() + r.value.as_ref().map_or(0, Bytes::len) + 24)
            .sum::<usize>(),
    );
    out.push(STREAM_FORMAT_VERSION);
    // Serializing into a Vec cannot fail for these types (see `framed`).
    postcard::to_extend(&RecordsOut::Records(records), out).unwrap_or_default()
}

/// A chunk as the receiver decodes it: records borrowing the chunk's buffer.
#[derive(Deserialize)]
enum MessageIn<'a> {
    Records(#[serde(borrow)] Vec<EntryIn<'a>>),
    Checkpoint { range: Range, done_through: u64 },
}

/// An [`Entry`] borrowed from the chunk.
#[derive(Deserialize)]
struct EntryIn<'a> {
    #[serde(borrow)]
    key: &'a [u8],
    #[serde(borrow)]
    value: Option<&'a [u8]>,
    version: u64,
    expires: Option<u64>,
}

/// A decoded chunk whose records share the chunk's buffer: what the receiver imports.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// The records of a [`StreamMessage::Records`], keys and values slices of the chunk.
    Records(Vec<Record>),
    /// A [`StreamMessage::Checkpoint`].
    Checkpoint {
        /// The task's range.
        range: Range,
        /// The last token sent in full.
        done_through: u64,
    },
}

/// [`StreamMessage::decode`] without copying: each key and value is a slice of `data` (one
/// buffer per chunk instead of two allocations per record). The same checks.
pub(crate) fn decode_chunk(data: &Bytes) -> Result<Chunk, StreamError> {
    match unframed::<MessageIn<'_>>("chunk", data)? {
        MessageIn::Records(entries) => {
            if entries.len() > MAX_CHUNK_RECORDS {
                return Err(StreamError::TooManyRecords {
                    records: entries.len(),
                });
            }
            Ok(Chunk::Records(
                entries
                    .into_iter()
                    .map(|e| Record {
                        key: data.slice_ref(e.key),
                        value: e.value.map(|v| data.slice_ref(v)),
                        version: Version::new(e.version),
                        expires: e.expires.filter(|_| e.value.is_some()),
                    })
                    .collect(),
            ))
        }
        MessageIn::Checkpoint {
            range,
            done_through,
        } => {
            if !TokenRange::from(range).contains(done_through) {
                return Err(StreamError::BadCheckpoint {
                    start: range.start,
                    end: range.end,
                    done_through,
                });
            }
            Ok(Chunk::Checkpoint {
                range,
                done_through,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        vec![
            Record {
                key: Bytes::from_static(b"k1"),
                value: Some(Bytes::from(vec![7u8; 300])),
                version: Version::new(5),
                expires: Some(1_900_000_000_000),
            },
            Record {
                key: Bytes::from_static(b""),
                value: None,
                version: Version::new(u64::MAX),
                expires: None,
            },
            Record {
                key: Bytes::from(vec![1u8; 200]),
                value: Some(Bytes::new()),
                version: Version::new(1),
                expires: None,
            },
        ]
    }

    #[test]
    fn records_encode_as_entries_do() {
        let r = records();
        let entries = r.iter().map(Entry::from_record).collect();
        assert_eq!(encode_records(&r), StreamMessage::Records(entries).encode());
        assert_eq!(encode_records(&[]), StreamMessage::Records(vec![]).encode());
    }

    #[test]
    fn chunks_decode_as_messages_do_sharing_the_buffer() {
        let r = records();
        let data = Bytes::from(encode_records(&r));
        let Ok(Chunk::Records(got)) = decode_chunk(&data) else {
            panic!("records expected");
        };
        assert_eq!(got, r);
        // The key is a slice of the chunk, not a copy.
        let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
        assert!(range.contains(&(got[0].key.as_ptr() as usize)));
        let m = StreamMessage::Checkpoint {
            range: Range { start: 10, end: 20 },
            done_through: 15,
        };
        assert_eq!(
            decode_chunk(&Bytes::from(m.encode())).ok(),
            Some(Chunk::Checkpoint {
                range: Range { start: 10, end: 20 },
                done_through: 15
            })
        );
        let bad = StreamMessage::Checkpoint {
            range: Range { start: 10, end: 20 },
            done_through: 25,
        };
        assert!(matches!(
            decode_chunk(&Bytes::from(bad.encode())),
            Err(StreamError::BadCheckpoint { .. })
        ));
        let many: Vec<Record> = (0..=MAX_CHUNK_RECORDS).map(|_| r[1].clone()).collect();
        assert!(matches!(
            decode_chunk(&Bytes::from(encode_records(&many))),
            Err(StreamError::TooManyRecords { .. })
        ));
        let mut wrong = encode_records(&r);
        wrong[0] = 9;
        assert!(matches!(
            decode_chunk(&Bytes::from(wrong)),
            Err(StreamError::UnsupportedVersion { found: 9, .. })
        ));
        let truncated = encode_records(&r);
        assert!(matches!(
            decode_chunk(&Bytes::copy_from_slice(&truncated[..truncated.len() - 3])),
            Err(StreamError::Decode { .. })
        ));
    }
}
