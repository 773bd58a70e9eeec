//! The node's log records: the payloads it appends to the WAL (format described in the crate
//! docs), and the public [`Record`] / [`Write`] types of its API.

use bytes::{BufMut, Bytes};
use kv_ring::TokenRange;
use kv_wal::le::{u32_at, u64_at};

use crate::{Error, Version};

/// A key with its value (or tombstone) and version: what [`Node::export`](crate::Node::export)
/// yields and [`Node::import`](crate::Node::import) applies.
///
/// ```
/// use bytes::Bytes;
/// use kv_node::{Record, Version};
/// let r = Record { key: Bytes::from_static(b"k"), value: None, version: Version::new(9), expires: None };
/// assert!(r.is_tombstone());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Bytes,
    /// The value, or `None` for a tombstone (a delete).
    pub value: Option<Bytes>,
    /// The write's version.
    pub version: Version,
    /// When the value expires, in milliseconds since the Unix epoch (`None`: never; always
    /// `None` for a tombstone). `docs/design.md`, *Expiring keys*.
    pub expires: Option<u64>,
}

impl Record {
    /// Whether this is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The borrowed form, for [`Node::apply_batch`](crate::Node::apply_batch).
    pub fn as_write(&self) -> Write<'_> {
        Write {
            key: &self.key,
            value: self.value.as_deref(),
            version: self.version,
            expires: self.expires,
        }
    }
}

/// One write of a batch (borrowed): see [`Node::apply_batch`](crate::Node::apply_batch).
///
/// ```
/// use kv_node::{Version, Write};
/// let w = Write { key: b"user:1", value: Some(b"Alice"), version: Version::new(1), expires: None };
/// assert_eq!(w.key, b"user:1");
/// // The same value, gone at 2030-01-01T00:00:00Z (a session key, say).
/// let session = Write { expires: Some(1_893_456_000_000), ..w };
/// assert!(session.expires.is_some());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value, or `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The write's version.
    pub version: Version,
    /// When the value expires, in milliseconds since the Unix epoch (the unit of
    /// [`Version::millis`]); `None`: never. From that time on (the node's clock reading at
    /// least `expires`) the key reads as deleted at this write's version. Ignored for a
    /// tombstone. `docs/design.md`, *Expiring keys*.
    pub expires: Option<u64>,
}

/// A key's newest record as a read reports it *unjudged*: the value (`None` for a
/// tombstone), its version and its expiry, whether or not that expiry has passed. What
/// [`Node::get_cell`](crate::Node::get_cell) answers and what a cluster coordinator reads, so
/// that it judges expiry against its own clock rather than each replica's
/// (`docs/design.md`, *Expiring keys*, the cluster part). [`Cell::judged`] turns an expired
/// value into the tombstone at its version that it stands for.
///
/// ```
/// use bytes::Bytes;
/// use kv_node::{Cell, Version};
/// let c = Cell { value: Some(Bytes::from_static(b"v")), version: Version::new(7), expires: Some(1_000) };
/// assert!(c.is_live_at(999));
/// assert!(!c.is_live_at(1_000));
/// assert_eq!(c.clone().judged(1_000), Cell::tombstone(Version::new(7)));
/// assert_eq!(c.as_write(b"k").expires, Some(1_000));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The value, or `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The write's version.
    pub version: Version,
    /// When the value expires, in milliseconds since the Unix epoch (`None`: never; always
    /// `None` for a tombstone).
    pub expires: Option<u64>,
}

impl Cell {
    /// A tombstone at `version`.
    pub fn tombstone(version: Version) -> Cell {
        Cell {
            value: None,
            version,
            expires: None,
        }
    }

    /// Whether it holds a value that has not expired at `now` (ms since the Unix epoch).
    #[inline]
    pub fn is_live_at(&self, now: u64) -> bool {
        self.value.is_some() && !is_expired(self.expires, now)
    }

    /// The cell as a reader at `now` must treat it: an expired value becomes a tombstone at
    /// its version (which shadows older versions as a delete does).
    #[inline]
    pub fn judged(self, now: u64) -> Cell {
        if self.value.is_some() && is_expired(self.expires, now) {
            Cell::tombstone(self.version)
        } else {
            self
        }
    }

    /// The write that reproduces this cell under `key` (same version, same expiry): what
    /// read repair sends a stale replica.
    #[inline]
    pub fn as_write<'a>(&'a self, key: &'a [u8]) -> Write<'a> {
        Write {
            key,
            value: self.value.as_deref(),
            version: self.version,
            expires: if self.value.is_some() {
                self.expires
            } else {
                None
            },
        }
    }
}

/// Whether a record with this expiry is expired at `now` (milliseconds since the Unix
/// epoch): at or after its expiry. The one place the rule is written in code.
///
/// ```
/// assert!(!kv_node::is_expired(None, u64::MAX));
/// assert!(!kv_node::is_expired(Some(1_000), 999));
/// assert!(kv_node::is_expired(Some(1_000), 1_000));
/// ```
#[inline]
pub fn is_expired(expires: Option<u64>, now: u64) -> bool {
    expires.is_some_and(|e| now >= e)
}

/// The payload format version this code writes and reads: byte 1 of every payload (the
/// byte after the kind). A reader refuses any other value with
/// [`Error::UnsupportedRecordVersion`], so a log written by a newer format is never misread.
pub(crate) const PAYLOAD_VERSION: u8 = 0;
/// The payload format version of a put with an expiry (`docs/format.md`): the 24 bytes of a
/// version-0 put header, then `expires: u64`, then key and value. Only such puts use it, so
/// plain writes cost exactly what they did.
pub(crate) const PAYLOAD_VERSION_EXPIRING: u8 = 1;
/// The newest payload format version this code reads.
pub(crate) const PAYLOAD_VERSION_NEWEST: u8 = PAYLOAD_VERSION_EXPIRING;

pub(crate) const KIND_PUT: u8 = 1;
pub(crate) const KIND_TOMBSTONE: u8 = 2;
pub(crate) const KIND_DROP: u8 = 3;

/// Bytes before the key in a put or tombstone payload of format 0.
pub(crate) const ENTRY_HEADER: usize = 24;
/// Bytes before the key in a put with an expiry (format 1).
pub(crate) const ENTRY_HEADER_EXPIRING: usize = ENTRY_HEADER + 8;

/// Bytes before the key of an entry with this (normalized) expiry.
#[inline]
pub(crate) fn header_len(expires: Option<u64>) -> usize {
    if expires.is_some() {
        ENTRY_HEADER_EXPIRING
    } else {
        ENTRY_HEADER
    }
}

/// A write's expiry as it is stored: none for a tombstone.
#[inline]
pub(crate) fn normalize(value: Option<&[u8]>, expires: Option<u64>) -> Option<u64> {
    if value.is_some() { expires } else { None }
}
/// Bytes before the ranges in a drop payload.
const DROP_HEADER: usize = 8;

/// Why a payload cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The payload is malformed (the WAL's checksum passed, so a bug or a foreign log).
    Corrupt(&'static str),
    /// The payload carries a format version this code does not read.
    UnsupportedVersion(u8),
}

impl DecodeError {
    /// The node error for a payload at `lsn`.
    pub(crate) fn at(self, lsn: kv_wal::Lsn) -> Error {
        match self {
            DecodeError::Corrupt(reason) => Error::CorruptRecord { lsn, reason },
            DecodeError::UnsupportedVersion(version) => Error::UnsupportedRecordVersion {
                lsn,
                version,
                supported: PAYLOAD_VERSION_NEWEST,
            },
        }
    }
}

impl From<&'static str> for DecodeError {
    fn from(reason: &'static str) -> Self {
        DecodeError::Corrupt(reason)
    }
}

/// A decoded log payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogRecord<'a> {
    /// A put or a tombstone.
    Entry {
        token: u64,
        version: Version,
        key: &'a [u8],
        /// `None` for a tombstone.
        value: Option<&'a [u8]>,
        /// When the value expires (format 1 puts only).
        expires: Option<u64>,
    },
    /// Every key in these ranges written before this record is forgotten.
    Drop(Vec<TokenRange>),
}

/// Encodes a put or tombstone payload into `out` (cleared first). `expires` must be
/// normalized ([`normalize`]: none for a tombstone).
pub(crate) fn encode_entry(
    out: &mut Vec<u8>,
    token: u64,
    version: Version,
    key: &[u8],
    value: Option<&[u8]>,
    expires: Option<u64>,
) {
    out.clear();
    append_entry(out, token, version, key, value, expires);
}

/// [`encode_entry`] at the end of `out` (for a batch: payloads back to back).
pub(crate) fn append_entry(
    out: &mut Vec<u8>,
    token: u64,
    version: Version,
    key: &[u8],
    value: Option<&[u8]>,
    expires: Option<u64>,
) {
    out.reserve(entry_len(key, value, expires));
    put_entry_header(out, token, version, key.len(), value.is_none(), expires);
    out.put_slice(key);
    if let Some(v) = value {
        out.put_slice(v);
    }
}

/// The bytes before the key of a put or tombstone: `kind | format | 0 0 | key_len | version |
/// token`, then `expires` for a put with one (format 1). Hint file items start the same way.
pub(crate) fn put_entry_header(
    out: &mut Vec<u8>,
    token: u64,
    version: Version,
    key_len: usize,
    tombstone: bool,
    expires: Option<u64>,
) {
    out.put_u8(if tombstone { KIND_TOMBSTONE } else { KIND_PUT });
    out.put_u8(if expires.is_some() {
        PAYLOAD_VERSION_EXPIRING
    } else {
        PAYLOAD_VERSION
    });
    out.put_bytes(0, 2);
    out.put_u32_le(key_len as u32);
    out.put_u64_le(version.as_u64());
    out.put_u64_le(token);
    if let Some(e) = expires {
        out.put_u64_le(e);
    }
}

/// Length of an encoded put or tombstone payload (`expires` normalized).
pub(crate) fn entry_len(key: &[u8], value: Option<&[u8]>, expires: Option<u64>) -> usize {
    header_len(expires) + key.len() + value.map_or(0, <[u8]>::len)
}

/// Encodes a drop-ranges payload.
pub(crate) fn encode_drop(ranges: &[TokenRange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DROP_HEADER + 16 * ranges.len());
    out.put_u8(KIND_DROP);
    out.put_u8(PAYLOAD_VERSION);
    out.put_bytes(0, 2);
    out.put_u32_le(ranges.len() as u32);
    for r in ranges {
        out.put_u64_le(r.start);
        out.put_u64_le(r.end);
    }
    out
}

/// Decodes a payload; `Err` names what is wrong (the WAL's checksum passed, so this means a
/// bug, a log written by something else, or a newer payload format).
pub(crate) fn decode(payload: &[u8]) -> Result<LogRecord<'_>, DecodeError> {
    let kind = *payload.first().ok_or("empty record")?;
    let format = match payload.get(1) {
        Some(&v @ (PAYLOAD_VERSION | PAYLOAD_VERSION_EXPIRING)) => v,
        None => PAYLOAD_VERSION,
        Some(&other) => return Err(DecodeError::UnsupportedVersion(other)),
    };
    if format == PAYLOAD_VERSION_EXPIRING && kind != KIND_PUT {
        // Only a put with an expiry is written in format 1.
        return Err("a tombstone or drop record in the format of expiring puts".into());
    }
    match kind {
        KIND_PUT | KIND_TOMBSTONE => {
            let key_len = u32_at(payload, 4).ok_or("short record header")? as usize;
            if key_len == 0 {
                // Never written (keys are at least a byte), and the index's tables take an
                // empty key for an empty slot.
                return Err("empty key".into());
            }
            let version = Version::new(u64_at(payload, 8).ok_or("short record header")?);
            let token = u64_at(payload, 16).ok_or("short record header")?;
            let (header, expires) = if format == PAYLOAD_VERSION_EXPIRING {
                let e = u64_at(payload, ENTRY_HEADER).ok_or("short record header")?;
                (ENTRY_HEADER_EXPIRING, Some(e))
            } else {
                (ENTRY_HEADER, None)
            };
            let key = payload
                .get(header..header + key_len)
                .ok_or("key length past the end of the record")?;
            let rest = &payload[header + key_len..];
            let value = if kind == KIND_PUT {
                Some(rest)
            } else if rest.is_empty() {
                None
            } else {
                return Err("tombstone with a value".into());
            };
            Ok(LogRecord::Entry {
                token,
                version,
                key,
                value,
                expires,
            })
        }
        KIND_DROP => {
            let n = u32_at(payload, 4).ok_or("short drop record")? as usize;
            if payload.len() != DROP_HEADER + 16 * n {
                return Err("drop record length does not match its range count".into());
            }
            let ranges = (0..n)
                .map(|i| {
                    let at = DROP_HEADER + 16 * i;
                    TokenRange {
                        start: u64_at(payload, at).unwrap_or(0),
                        end: u64_at(payload, at + 8).unwrap_or(0),
                    }
                })
                .collect();
            Ok(LogRecord::Drop(ranges))
        }
        _ => Err("unknown record kind".into()),
    }
}

/// The value of an encoded put, copied out of the payload, or `None` for a tombstone; with
/// the put's expiry.
pub(crate) fn value_of(payload: &[u8]) -> Result<(Option<Bytes>, Option<u64>), DecodeError> {
    let (value, expires) = value_in(payload)?;
    Ok((value.map(Bytes::copy_from_slice), expires))
}

/// The value of an encoded put, in the payload, or `None` for a tombstone; with the put's
/// expiry.
pub(crate) fn value_in(payload: &[u8]) -> Result<(Option<&[u8]>, Option<u64>), DecodeError> {
    match decode(payload)? {
        LogRecord::Entry { value, expires, .. } => Ok((value, expires)),
        LogRecord::Drop(_) => Err("expected a put, found a drop record".into()),
    }
}

/// The expiry of an encoded put (read from its header alone: no value is decoded).
pub(crate) fn expires_of(payload: &[u8]) -> Result<Option<u64>, DecodeError> {
    Ok(value_in(payload)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_key_is_corrupt() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, 1, Version::new(3), b"", Some(b"v"), None);
        assert_eq!(decode(&buf), Err(DecodeError::Corrupt("empty key")));
    }

    #[test]
    fn entries_round_trip() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, 42, Version::new(7), b"key", Some(b"value"), None);
        assert_eq!(buf.len(), entry_len(b"key", Some(b"value"), None));
        assert_eq!(
            decode(&buf).unwrap(),
            LogRecord::Entry {
                token: 42,
                version: Version::new(7),
                key: b"key",
                value: Some(b"value"),
                expires: None,
            }
        );
        assert_eq!(value_of(&buf).unwrap().0.unwrap(), &b"value"[..]);
        encode_entry(&mut Vec::new(), 1, Version::ZERO, b"k", None, None);
        let mut t = Vec::new();
        encode_entry(&mut t, 1, Version::new(3), b"k", None, None);
        assert!(matches!(
            decode(&t).unwrap(),
            LogRecord::Entry { value: None, .. }
        ));
        // An empty value is a put, not a tombstone.
        encode_entry(&mut t, 1, Version::new(3), b"k", Some(b""), None);
        assert!(matches!(
            decode(&t).unwrap(),
            LogRecord::Entry {
                value: Some(b""),
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_payload_version_is_refused_with_its_own_error() {
        let mut put = Vec::new();
        encode_entry(&mut put, 1, Version::new(3), b"k", Some(b"v"), None);
        assert_eq!(put[1], PAYLOAD_VERSION);
        for mut payload in [put, encode_drop(&[TokenRange::new(1, 2)])] {
            payload[1] = 2;
            assert_eq!(decode(&payload), Err(DecodeError::UnsupportedVersion(2)));
            let lsn = kv_wal::Lsn::new(1, 32);
            assert!(matches!(
                DecodeError::UnsupportedVersion(2).at(lsn),
                Error::UnsupportedRecordVersion {
                    version: 2,
                    supported: PAYLOAD_VERSION_NEWEST,
                    ..
                }
            ));
        }
    }

    /// A put with an expiry is written in format 1 (8 more bytes), every other payload in
    /// format 0 as before; both decode, with the expiry.
    #[test]
    fn expiring_puts_round_trip_in_format_1() {
        let mut buf = Vec::new();
        encode_entry(
            &mut buf,
            42,
            Version::new(7),
            b"key",
            Some(b"value"),
            Some(1234),
        );
        assert_eq!(buf[1], PAYLOAD_VERSION_EXPIRING);
        assert_eq!(buf.len(), entry_len(b"key", Some(b"value"), Some(1234)));
        assert_eq!(buf.len(), entry_len(b"key", Some(b"value"), None) + 8);
        assert_eq!(
            decode(&buf).unwrap(),
            LogRecord::Entry {
                token: 42,
                version: Version::new(7),
                key: b"key",
                value: Some(b"value"),
                expires: Some(1234),
            }
        );
        assert_eq!(expires_of(&buf), Ok(Some(1234)));
        // The first 24 bytes are a format-0 put's header.
        let mut plain = Vec::new();
        encode_entry(
            &mut plain,
            42,
            Version::new(7),
            b"key",
            Some(b"value"),
            None,
        );
        assert_eq!(plain[1], PAYLOAD_VERSION);
        assert_eq!(buf[2..24], plain[2..24]);
        assert_eq!(expires_of(&plain), Ok(None));
        // Every truncation fails cleanly.
        for n in 0..ENTRY_HEADER_EXPIRING + 3 {
            assert!(decode(&buf[..n]).is_err(), "{n}");
        }
        // A tombstone or a drop in format 1 is never written: corrupt.
        let mut t = Vec::new();
        encode_entry(&mut t, 1, Version::new(3), b"k", None, None);
        t[1] = PAYLOAD_VERSION_EXPIRING;
        assert!(matches!(decode(&t), Err(DecodeError::Corrupt(_))));
        let mut d = encode_drop(&[]);
        d[1] = PAYLOAD_VERSION_EXPIRING;
        assert!(matches!(decode(&d), Err(DecodeError::Corrupt(_))));
        assert_eq!(normalize(None, Some(5)), None);
        assert_eq!(normalize(Some(b"v"), Some(5)), Some(5));
    }

    #[test]
    fn drops_round_trip() {
        let ranges = vec![TokenRange::new(1, 5), TokenRange::new(9, 2)];
        assert_eq!(
            decode(&encode_drop(&ranges)).unwrap(),
            LogRecord::Drop(ranges)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            &[9u8, 0, 0, 0][..],
            &[1u8, 0, 0, 0, 255, 255, 255, 255][..],
            &[3u8, 0, 0, 0, 2, 0, 0, 0, 1][..],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let mut t = Vec::new();
        encode_entry(&mut t, 1, Version::new(3), b"k", None, None);
        t.push(1);
        assert!(decode(&t).is_err());
        assert!(value_of(&encode_drop(&[])).is_err());
        // every truncation of a valid entry fails cleanly
        encode_entry(&mut t, 1, Version::new(3), b"key", Some(b"v"), None);
        for n in 0..ENTRY_HEADER + 3 {
            assert!(decode(&t[..n]).is_err(), "{n}");
        }
    }
}
