//! The replica protocol's messages: one [`Request`] per [`Replica`](kv_cluster::Replica)
//! method, one [`Response`] per kind of answer, and the version byte in front of both.
//!
//! A body on the wire is `[PROTOCOL_VERSION as u8][postcard of the enum]`, inside a kv-net
//! `Request` or `Response` frame (`docs/format.md`, "Replica protocol"). The variants' order is
//! the wire format: new variants go at the end, and any other change is a new version.
//!
//! Every length in a body (keys, values, lists) is bounded by the frame that carries it, which
//! kv-net checks against its limit before it reads the frame: postcard decodes from that
//! slice and never reserves more than what is left in it.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// The version of the replica protocol this build speaks: the first byte of every request and
/// response body. A body of another version is refused ([`RemoteError::UnsupportedVersion`]),
/// never guessed at.
pub const PROTOCOL_VERSION: u8 = 2;

/// A key with its value (or tombstone, `None`), version and expiry: one write of
/// [`Replica::apply`](kv_cluster::Replica::apply) and its batch forms, or one record of an
/// import or export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: Bytes,
    /// The value, `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The version, raw ([`kv_node::Version::as_u64`]).
    pub version: u64,
    /// When the value expires, in milliseconds since the Unix epoch (`None`: never, and
    /// always for a tombstone). New in protocol version 2.
    pub expires: Option<u64>,
}

/// A token range `(start, end]` ([`kv_ring::TokenRange`]; `start == end` is the whole ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// The exclusive lower bound.
    pub start: u64,
    /// The inclusive upper bound.
    pub end: u64,
}

/// A request to a replica: one variant per [`Replica`](kv_cluster::Replica) method, and three
/// for the paged export. Variant indexes (the wire's first varint after the version byte) are
/// in the comments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum Request {
    /// 0: [`Replica::apply`](kv_cluster::Replica::apply).
    Apply {
        /// The ring epoch the write was routed with.
        epoch: u64,
        /// The write.
        write: Entry,
    },
    /// 1: [`Replica::apply_swap`](kv_cluster::Replica::apply_swap).
    ApplySwap {
        /// The ring epoch.
        epoch: u64,
        /// The write.
        write: Entry,
        /// Whether a replaced value is returned too.
        read_value: bool,
    },
    /// 2: [`Replica::apply_batch`](kv_cluster::Replica::apply_batch), atomic on the node.
    ApplyBatch {
        /// The ring epoch.
        epoch: u64,
        /// The writes.
        writes: Vec<Entry>,
    },
    /// 3: [`Replica::read`](kv_cluster::Replica::read).
    Read {
        /// The ring epoch.
        epoch: u64,
        /// The key.
        key: Bytes,
    },
    /// 4: [`Replica::read_version`](kv_cluster::Replica::read_version).
    ReadVersion {
        /// The ring epoch.
        epoch: u64,
        /// The key.
        key: Bytes,
    },
    /// 5: [`Replica::read_many`](kv_cluster::Replica::read_many).
    ReadMany {
        /// The ring epoch.
        epoch: u64,
        /// The keys, answered in this order.
        keys: Vec<Bytes>,
    },
    /// 6: [`Replica::read_versions`](kv_cluster::Replica::read_versions).
    ReadVersions {
        /// The ring epoch.
        epoch: u64,
        /// The keys, answered in this order.
        keys: Vec<Bytes>,
    },
    /// 7: [`Replica::import`](kv_cluster::Replica::import).
    Import {
        /// The ring epoch.
        epoch: u64,
        /// The records, applied with last-writer-wins.
        records: Vec<Entry>,
    },
    /// 8: [`Replica::drop_ranges`](kv_cluster::Replica::drop_ranges).
    DropRanges {
        /// The ring epoch.
        epoch: u64,
        /// The ranges to forget.
        ranges: Vec<Range>,
    },
    /// 9: [`Replica::count_in_ranges`](kv_cluster::Replica::count_in_ranges).
    CountInRanges {
        /// The ranges.
        ranges: Vec<Range>,
    },
    /// 10: [`Replica::reserve`](kv_cluster::Replica::reserve).
    Reserve {
        /// The ranges the records will come in.
        ranges: Vec<Range>,
        /// About how many.
        keys: u64,
    },
    /// 11: [`Replica::held`](kv_cluster::Replica::held).
    Held,
    /// 12: [`Replica::fence`](kv_cluster::Replica::fence).
    Fence {
        /// The epoch below which operations are refused from now on.
        epoch: u64,
    },
    /// 13: [`Replica::sync`](kv_cluster::Replica::sync).
    Sync,
    /// 14: [`Replica::compact`](kv_cluster::Replica::compact).
    Compact,
    /// 15: [`Replica::last_flush`](kv_cluster::Replica::last_flush).
    LastFlush,
    /// 16: [`Replica::digests`](kv_cluster::Replica::digests).
    Digests {
        /// The ring epoch.
        epoch: u64,
        /// The range cut into leaves.
        range: Range,
        /// How many leaves (1 to [`MAX_LEAVES`](crate::MAX_LEAVES)).
        leaves: u32,
    },
    /// 17: the start of [`Replica::export`](kv_cluster::Replica::export): opens an export
    /// session on the node and answers its first [`Response::Page`].
    ExportOpen {
        /// The ring epoch.
        epoch: u64,
        /// The ranges to export.
        ranges: Vec<Range>,
        /// Most records per page.
        batch_size: u32,
    },
    /// 18: the next page of an export session.
    ExportNext {
        /// The session, from the first page.
        session: u64,
    },
    /// 19: ends an export session early (the reader stopped).
    ExportClose {
        /// The session.
        session: u64,
    },
    /// 20: [`Replica::expiring_keys`](kv_cluster::Replica::expiring_keys), answered with
    /// [`Response::Count`], or a failure when the node does not know it.
    ExpiringKeys,
    /// 21: a body for the node's metadata service ([`MetaHandler`](crate::MetaHandler)),
    /// opaque here (kv-meta's message, with its own version byte), answered with
    /// [`Response::Meta`], or [`RemoteError::Failed`] with
    /// [`NO_META_SERVICE`](crate::NO_META_SERVICE) when the node has none. A node of a build
    /// before it answers [`RemoteError::BadRequest`] (an unknown operation).
    Meta(Bytes),
}

/// The record a write replaced ([`kv_node::Previous`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousEntry {
    /// Its version.
    pub version: u64,
    /// Whether it held a value.
    pub live: bool,
    /// The value, when asked for and live.
    pub value: Option<Bytes>,
    /// The value's expiry, when the value is sent (protocol version 2).
    pub expires: Option<u64>,
}

/// What an [`apply_swap`](kv_cluster::Replica::apply_swap) did ([`kv_node::Swapped`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Swap {
    /// 0: applied, replacing this record (or none).
    Applied {
        /// The replaced record.
        previous: Option<PreviousEntry>,
    },
    /// 1: not applied: the node holds a version at least as new.
    Kept {
        /// That version.
        current: u64,
    },
}

/// A key's value (`None`: a tombstone), version and expiry, unjudged ([`kv_node::Cell`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedValue {
    /// The value, `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Its version.
    pub version: u64,
    /// The value's expiry (`None`: never; protocol version 2).
    pub expires: Option<u64>,
}

/// What lies in some ranges ([`kv_node::RangeCount`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Keys with a value.
    pub live: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Log bytes of both.
    pub live_bytes: u64,
}

/// What a compaction did ([`kv_node::CompactionReport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// Segments whose live records were copied.
    pub segments_compacted: u64,
    /// Segments deleted.
    pub segments_deleted: u64,
    /// Records copied.
    pub records_copied: u64,
    /// Their bytes.
    pub bytes_copied: u64,
    /// Tombstones purged.
    pub tombstones_purged: u64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
}

/// A leaf's digest ([`kv_node::Digest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafDigest {
    /// XOR of the entries' hashes.
    pub hash: u64,
    /// Entries in the leaf.
    pub keys: u64,
}

/// Why a replica refused or failed a request: what the coordinator needs to rebuild its
/// [`kv_cluster::Error`] (the epoch fence and the invalid requests exactly, anything else as
/// text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteError {
    /// 0: [`kv_cluster::Error::StaleEpoch`]: the request's epoch is below the node's fence.
    StaleEpoch {
        /// The epoch the request carried.
        epoch: u64,
        /// The node's fence.
        current: u64,
    },
    /// 1: [`kv_node::Error::EmptyKey`].
    EmptyKey,
    /// 2: [`kv_node::Error::KeyTooLarge`].
    KeyTooLarge {
        /// The key's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// 3: [`kv_node::Error::ValueTooLarge`].
    ValueTooLarge {
        /// The value's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// 4: [`kv_node::Error::BatchTooLarge`].
    BatchTooLarge {
        /// The batch's encoded size.
        bytes: u64,
        /// What fits.
        max: u64,
    },
    /// 5: [`kv_node::Error::VersionTooLarge`].
    VersionTooLarge {
        /// The version refused, raw.
        version: u64,
    },
    /// 6: any other failure of the node, as its error chain (`a: b: c`).
    Failed {
        /// The chain.
        message: String,
    },
    /// 7: the node could not make sense of the request (its body did not decode, an unknown
    /// operation, an argument out of bounds, an unknown export session).
    BadRequest {
        /// Why.
        reason: String,
    },
    /// 8: the body carried another protocol version than the node speaks.
    UnsupportedVersion {
        /// The version received.
        found: u8,
        /// The version the node speaks.
        supported: u8,
    },
}

/// A replica's answer. Variant indexes are in the comments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum Response {
    /// 0: whether an [`Request::Apply`] changed anything.
    Applied(bool),
    /// 1: what an [`Request::ApplySwap`] did.
    Swapped(Swap),
    /// 2: how many records an [`Request::ApplyBatch`] or [`Request::Import`] changed, or a
    /// [`Request::DropRanges`] dropped.
    Count(u64),
    /// 3: the answer to [`Request::Read`].
    Value(Option<VersionedValue>),
    /// 4: the answer to [`Request::ReadVersion`] (raw version).
    Version(Option<u64>),
    /// 5: the answers to [`Request::ReadMany`], in the keys' order.
    Values(Vec<Option<VersionedValue>>),
    /// 6: the answers to [`Request::ReadVersions`], in the keys' order.
    Versions(Vec<Option<u64>>),
    /// 7: the answer to [`Request::CountInRanges`] and [`Request::Held`].
    Counted(Counts),
    /// 8: done ([`Request::Reserve`], [`Request::Fence`], [`Request::Sync`],
    /// [`Request::ExportClose`]).
    Done,
    /// 9: the answer to [`Request::Compact`].
    Compacted(Compaction),
    /// 10: the answer to [`Request::LastFlush`]: `(seconds, nanoseconds)` since the Unix
    /// epoch, or `None`.
    LastFlush(Option<(u64, u32)>),
    /// 11: the answer to [`Request::Digests`], one per leaf.
    Digests(Vec<LeafDigest>),
    /// 12: a page of an export. An empty page that is not `done` means "nothing yet, ask
    /// again"; `done` ends the session.
    Page {
        /// The session, for [`Request::ExportNext`].
        session: u64,
        /// The records, at most the batch size.
        records: Vec<Entry>,
        /// The export has no more records.
        done: bool,
    },
    /// 13: the request failed.
    Failed(RemoteError),
    /// 14: the metadata service's answer to [`Request::Meta`], opaque here.
    Meta(Bytes),
}

impl Response {
    /// The variant's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Applied(_) => "Applied",
            Response::Swapped(_) => "Swapped",
            Response::Count(_) => "Count",
            Response::Value(_) => "Value",
            Response::Version(_) => "Version",
            Response::Values(_) => "Values",
            Response::Versions(_) => "Versions",
            Response::Counted(_) => "Counted",
            Response::Done => "Done",
            Response::Compacted(_) => "Compacted",
            Response::LastFlush(_) => "LastFlush",
            Response::Digests(_) => "Digests",
            Response::Page { .. } => "Page",
            Response::Failed(_) => "Failed",
            Response::Meta(_) => "Meta",
        }
    }
}

/// A message whose body follows the version byte: the derived (remote) serde functions of
/// [`Request`] and [`Response`].
trait Body: Sized {
    fn encode<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl Body for Request {
    fn encode<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Request::serialize(self, s)
    }
    fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Request::deserialize(d)
    }
}

impl Body for Response {
    fn encode<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Response::serialize(self, s)
    }
    fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Response::deserialize(d)
    }
}

/// Serializes a body through [`Body::encode`].
struct Encode<'a, T>(&'a T);

impl<T: Body> Serialize for Encode<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.encode(s)
    }
}

/// `(version, body)`: a tuple, so postcard writes the version byte and then the body with no
/// length or tag between them.
fn serialize_versioned<T: Body, S: Serializer>(body: &T, s: S) -> Result<S::Ok, S::Error> {
    let mut t = s.serialize_tuple(2)?;
    t.serialize_element(&PROTOCOL_VERSION)?;
    t.serialize_element(&Encode(body))?;
    t.end()
}

/// A body as received: of this version and decoded, of another version (the rest is not
/// read), or of this version and not decodable (and why).
#[derive(Debug)]
pub(crate) enum Envelope<T> {
    Current(T),
    Unsupported(u8),
    Undecodable(String),
}

struct DecodeBody<T>(PhantomData<T>);

impl<'de, T: Body> DeserializeSeed<'de> for DecodeBody<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::decode(d)
    }
}

struct EnvelopeVisitor<T>(PhantomData<T>);

impl<'de, T: Body> Visitor<'de> for EnvelopeVisitor<T> {
    type Value = Envelope<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a protocol version byte and a message")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Envelope<T>, A::Error> {
        let version: u8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        if version != PROTOCOL_VERSION {
            // The rest is another version's: not read at all.
            return Ok(Envelope::Unsupported(version));
        }
        match seq.next_element_seed(DecodeBody::<T>(PhantomData)) {
            Ok(Some(body)) => Ok(Envelope::Current(body)),
            Ok(None) => Err(de::Error::invalid_length(1, &self)),
            Err(e) => Ok(Envelope::Undecodable(e.to_string())),
        }
    }
}

impl<'de, T: Body> Deserialize<'de> for Envelope<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_tuple(2, EnvelopeVisitor(PhantomData))
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_versioned(self, s)
    }
}

impl<'de> Deserialize<'de> for Request {
    /// Refuses a body of another version, or one that does not decode, with a serde error
    /// (the server reads requests as an `Envelope` instead, so that it can answer why).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Envelope::<Request>::deserialize(d)? {
            Envelope::Current(r) => Ok(r),
            Envelope::Unsupported(found) => Err(de::Error::custom(format_args!(
                "replica protocol version {found}; this build speaks {PROTOCOL_VERSION}"
            ))),
            Envelope::Undecodable(reason) => Err(de::Error::custom(reason)),
        }
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_versioned(self, s)
    }
}

impl<'de> Deserialize<'de> for Response {
    /// A body of another version reads as [`Response::Failed`] with
    /// [`RemoteError::UnsupportedVersion`], so the caller gets a typed error naming both
    /// versions.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Envelope::<Response>::deserialize(d)? {
            Envelope::Current(r) => Ok(r),
            Envelope::Unsupported(found) => Ok(Response::Failed(RemoteError::UnsupportedVersion {
                found,
                supported: PROTOCOL_VERSION,
            })),
            Envelope::Undecodable(reason) => Err(de::Error::custom(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_starts_with_the_version_then_the_variant() {
        let bytes = postcard::to_allocvec(&Request::Fence { epoch: 3 }).unwrap();
        assert_eq!(bytes, [PROTOCOL_VERSION, 12, 3]);
        let back: Request = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, Request::Fence { epoch: 3 });
    }

    #[test]
    fn the_meta_variants_are_appended_after_the_others() {
        let bytes = postcard::to_allocvec(&Request::Meta(Bytes::from_static(b"ab"))).unwrap();
        assert_eq!(bytes, [PROTOCOL_VERSION, 21, 2, b'a', b'b']);
        let bytes = postcard::to_allocvec(&Response::Meta(Bytes::from_static(b"c"))).unwrap();
        assert_eq!(bytes, [PROTOCOL_VERSION, 14, 1, b'c']);
        // A body claiming more bytes than it carries does not decode (and reserves nothing).
        let env: Envelope<Request> =
            postcard::from_bytes(&[PROTOCOL_VERSION, 21, 0xff, 0xff, 0xff, 0x0f, 1]).unwrap();
        assert!(matches!(env, Envelope::Undecodable(_)), "{env:?}");
    }

    #[test]
    fn another_version_is_refused_without_reading_on() {
        // Version 3 (a future one) and version 1 (the one before expiries) alike.
        let env: Envelope<Request> = postcard::from_bytes(&[3, 0xff, 0xff]).unwrap();
        assert!(matches!(env, Envelope::Unsupported(3)));
        assert!(postcard::from_bytes::<Request>(&[3, 12, 3]).is_err());
        let env: Envelope<Request> = postcard::from_bytes(&[1, 12, 3]).unwrap();
        assert!(matches!(env, Envelope::Unsupported(1)));
        let resp: Response = postcard::from_bytes(&[9]).unwrap();
        assert_eq!(
            resp,
            Response::Failed(RemoteError::UnsupportedVersion {
                found: 9,
                supported: PROTOCOL_VERSION
            })
        );
    }

    #[test]
    fn an_unknown_operation_is_undecodable_not_an_error_of_the_envelope() {
        let env: Envelope<Request> = postcard::from_bytes(&[PROTOCOL_VERSION, 99]).unwrap();
        assert!(matches!(env, Envelope::Undecodable(_)), "{env:?}");
        // A truncated body too.
        let env: Envelope<Request> = postcard::from_bytes(&[PROTOCOL_VERSION, 0, 1, 5]).unwrap();
        assert!(matches!(env, Envelope::Undecodable(_)), "{env:?}");
        // An empty body has no version at all: an error of the envelope itself.
        assert!(postcard::from_bytes::<Envelope<Request>>(&[]).is_err());
    }
}
