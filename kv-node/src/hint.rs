//! Hint files: the index entries of one sealed segment, without values, so recovery can
//! rebuild the index without reading the segment (Bitcask's hint files).
//!
//! File `NNNNNNNNNN.hint` next to segment `NNNNNNNNNN.wal`, written once the segment is
//! sealed (to a temporary file, fsynced, renamed, directory fsynced). Little-endian:
//!
//! | field | size |
//! |---|---|
//! | magic `KVHINT\0\n` | 8 |
//! | format version, `2` (`1` is read the same way) | 4 |
//! | reserved, zero | 4 |
//! | segment sequence number | 8 |
//! | item count | 8 |
//! | items | ... |
//! | `end`: offset just past the segment's last record | 4 |
//! | CRC32C of the last record's payload (0 if none) | 4 |
//! | CRC32C of every byte before this field | 4 |
//!
//! An item is `kind: u8 | payload format version (0 or 1) | 2 zero bytes | n: u32 | version: u64 | token: u64 | offset: u32 |
//! payload_len: u32 | key (n bytes)` for a put or tombstone, with `expires: u64` between the
//! header and the key for a put of payload format 1 (a put with an expiry), and the same
//! 32-byte header with `n` ranges of 16 bytes (`start, end`) for a drop record (version and
//! token zero). Version 1 of the file is version 2 without format-1 items.
//!
//! A hint is used only if its checksum, magic, version and sequence number match, its items
//! lie in increasing order before `end`, and the segment still holds the record the hint
//! names last (same payload checksum) with nothing after it. Otherwise recovery scans the
//! segment (a missing, stale or corrupt hint costs time, never data).
//!
//! Those checks cannot tell a segment from a later one with the same number and the same last
//! record, and numbers are used again after a recovery cuts the log (a point-in-time recovery
//! deletes the segments after its cut). Since a hint is written only for a sealed segment,
//! recovery deletes every hint of the active segment or a later one before anything is
//! appended (and syncs the directory): a hint on disk always describes its segment as it was
//! sealed.

use std::path::{Path, PathBuf};

use bytes::BufMut;
use kv_ring::TokenRange;
use kv_wal::durable;
use kv_wal::le::{u32_at, u64_at};

use crate::record::{
    KIND_DROP, KIND_PUT, KIND_TOMBSTONE, LogRecord, PAYLOAD_VERSION, PAYLOAD_VERSION_EXPIRING,
    put_entry_header,
};
use crate::{Error, Result, Version};

const MAGIC: &[u8; 8] = b"KVHINT\0\n";
const FORMAT_VERSION: u32 = 2;
/// The previous version, still read: the same layout, with no items of payload format 1.
const FORMAT_VERSION_1: u32 = 1;
const HEADER: usize = 32;
const ITEM_HEADER: usize = 32;
const FOOTER: usize = 12;

/// The hint file of segment `seq`.
pub(crate) fn path(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("{seq:010}.hint"))
}

/// The sequence number of a hint file's name.
pub(crate) fn parse_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".hint")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One item of a hint file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HintItem<'a> {
    pub offset: u32,
    pub payload_len: u32,
    pub record: HintRecord<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HintRecord<'a> {
    Entry {
        token: u64,
        version: Version,
        key: &'a [u8],
        tombstone: bool,
        /// When the value expires (a put of payload format 1).
        expires: Option<u64>,
    },
    Drop(Vec<TokenRange>),
}

/// Builds a hint file from a segment's records, in order.
pub(crate) struct HintBuilder {
    buf: Vec<u8>,
    count: u64,
    end: u32,
    last_crc: u32,
}

impl HintBuilder {
    pub fn new(seq: u32) -> HintBuilder {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.put_slice(MAGIC);
        buf.put_u32_le(FORMAT_VERSION);
        buf.put_u32_le(0);
        buf.put_u64_le(u64::from(seq));
        buf.put_u64_le(0); // count, patched in `finish`
        HintBuilder {
            buf,
            count: 0,
            end: kv_wal::layout::HEADER_LEN as u32,
            last_crc: 0,
        }
    }

    /// Adds the record at `offset` with this payload.
    pub fn add(&mut self, offset: u32, payload: &[u8], record: &LogRecord<'_>) {
        let b = &mut self.buf;
        match record {
            LogRecord::Entry {
                token,
                version,
                key,
                value,
                expires,
            } => {
                // The payload's 24 first bytes, then where the record is, then its expiry.
                put_entry_header(b, *token, *version, key.len(), value.is_none(), None);
                if expires.is_some() {
                    // Byte 1 of the 24 just written: the record's payload format.
                    let at = b.len() - 23;
                    b[at] = PAYLOAD_VERSION_EXPIRING;
                }
                b.put_u32_le(offset);
                b.put_u32_le(payload.len() as u32);
                if let Some(e) = expires {
                    b.put_u64_le(*e);
                }
                b.put_slice(key);
            }
            LogRecord::Drop(ranges) => {
                b.put_u8(KIND_DROP);
                b.put_u8(PAYLOAD_VERSION);
                b.put_bytes(0, 2);
                b.put_u32_le(ranges.len() as u32);
                b.put_u64_le(0);
                b.put_u64_le(0);
                b.put_u32_le(offset);
                b.put_u32_le(payload.len() as u32);
                for r in ranges {
                    b.put_u64_le(r.start);
                    b.put_u64_le(r.end);
                }
            }
        }
        self.count += 1;
        self.end = offset + kv_wal::layout::frame_len(payload.len()) as u32;
        self.last_crc = crc32c::crc32c(payload);
    }

    /// The file's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[24..32].copy_from_slice(&self.count.to_le_bytes());
        self.buf.put_u32_le(self.end);
        self.buf.put_u32_le(self.last_crc);
        let crc = crc32c::crc32c(&self.buf);
        self.buf.put_u32_le(crc);
        self.buf
    }
}

/// Writes a hint file durably (temporary file, fsync, rename, fsync of the directory).
pub(crate) fn write(dir: &Path, seq: u32, bytes: &[u8]) -> Result<()> {
    durable::write_file_atomic(&path(dir, seq), bytes).map_err(Error::durable)
}

/// A parsed hint file.
#[derive(Debug)]
pub(crate) struct Hint<'a> {
    pub items: Vec<HintItem<'a>>,
    /// Offset just past the last record.
    pub end: u32,
    /// CRC32C of the last record's payload.
    pub last_crc: u32,
}

/// Parses and checks a hint file's bytes on their own (the caller then checks them against
/// the segment). `Err` says why the hint cannot be used.
pub(crate) fn parse(bytes: &[u8], seq: u32) -> Result<Hint<'_>, &'static str> {
    if bytes.len() < HEADER + FOOTER {
        return Err("shorter than a header and footer");
    }
    let body = bytes.len() - 4;
    if u32_at(bytes, body) != Some(crc32c::crc32c(&bytes[..body])) {
        return Err("checksum mismatch");
    }
    if &bytes[..8] != MAGIC {
        return Err("bad magic");
    }
    let file_version = u32_at(bytes, 8);
    if file_version != Some(FORMAT_VERSION) && file_version != Some(FORMAT_VERSION_1) {
        return Err("unknown format version");
    }
    if u64_at(bytes, 16) != Some(u64::from(seq)) {
        return Err("written for another segment");
    }
    let count = u64_at(bytes, 24).ok_or("short header")?;
    let items_end = bytes.len() - FOOTER;
    let end = u32_at(bytes, items_end).ok_or("short footer")?;
    let last_crc = u32_at(bytes, items_end + 4).ok_or("short footer")?;
    let mut items = Vec::with_capacity(count.min(1 << 24) as usize);
    let mut at = HEADER;
    let mut next_free = kv_wal::layout::HEADER_LEN as u64;
    for _ in 0..count {
        let h = bytes.get(at..at + ITEM_HEADER).ok_or("item past the end")?;
        let kind = h[0];
        let expiring = match h[1] {
            PAYLOAD_VERSION => false,
            PAYLOAD_VERSION_EXPIRING
                if kind == KIND_PUT && file_version == Some(FORMAT_VERSION) =>
            {
                true
            }
            _ => return Err("item of an unknown payload format version"),
        };
        let n = u32_at(h, 4).ok_or("short item")? as usize;
        let version = Version::new(u64_at(h, 8).ok_or("short item")?);
        let token = u64_at(h, 16).ok_or("short item")?;
        let offset = u32_at(h, 24).ok_or("short item")?;
        let payload_len = u32_at(h, 28).ok_or("short item")?;
        at += ITEM_HEADER;
        if u64::from(offset) < next_free || offset % 8 != 0 {
            return Err("items out of order or misaligned");
        }
        next_free = u64::from(offset) + kv_wal::layout::frame_len(payload_len as usize) as u64;
        if next_free > u64::from(end) {
            return Err("item points past the end of its segment");
        }
        let record = match kind {
            KIND_PUT | KIND_TOMBSTONE => {
                let expires = if expiring {
                    let e = u64_at(bytes, at).ok_or("expiry past the end")?;
                    at += 8;
                    Some(e)
                } else {
                    None
                };
                let key = bytes.get(at..at + n).ok_or("key past the end")?;
                if key.is_empty() {
                    return Err("empty key");
                }
                at += n;
                HintRecord::Entry {
                    token,
                    version,
                    key,
                    tombstone: kind == KIND_TOMBSTONE,
                    expires,
                }
            }
            KIND_DROP => {
                let raw = bytes.get(at..at + 16 * n).ok_or("ranges past the end")?;
                at += 16 * n;
                HintRecord::Drop(
                    raw.chunks_exact(16)
                        .map(|c| TokenRange {
                            start: u64_at(c, 0).unwrap_or(0),
                            end: u64_at(c, 8).unwrap_or(0),
                        })
                        .collect(),
                )
            }
            _ => return Err("unknown item kind"),
        };
        items.push(HintItem {
            offset,
            payload_len,
            record,
        });
    }
    if at != items_end {
        return Err("item count does not match the file's length");
    }
    if next_free != u64::from(end) {
        return Err("last item does not end where the segment ends");
    }
    Ok(Hint {
        items,
        end,
        last_crc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{decode, encode_drop, encode_entry};

    fn sample() -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut b = HintBuilder::new(7);
        let mut payloads = Vec::new();
        let mut p = Vec::new();
        encode_entry(&mut p, 11, Version::new(5), b"alpha", Some(b"one"), None);
        payloads.push(p.clone());
        encode_entry(&mut p, 12, Version::new(6), b"beta", None, None);
        payloads.push(p.clone());
        encode_entry(
            &mut p,
            13,
            Version::new(7),
            b"gamma",
            Some(b"two"),
            Some(99),
        );
        payloads.push(p.clone());
        payloads.push(encode_drop(&[TokenRange::new(1, 2)]));
        let mut offset = 32u32;
        for p in &payloads {
            b.add(offset, p, &decode(p).unwrap());
            offset += kv_wal::layout::frame_len(p.len()) as u32;
        }
        (b.finish(), payloads)
    }

    #[test]
    fn round_trip() {
        let (file, payloads) = sample();
        let hint = parse(&file, 7).unwrap();
        assert_eq!(hint.items.len(), 4);
        assert_eq!(hint.items[0].offset, 32);
        assert_eq!(
            hint.items[1].record,
            HintRecord::Entry {
                token: 12,
                version: Version::new(6),
                key: b"beta",
                tombstone: true,
                expires: None,
            }
        );
        assert_eq!(
            hint.items[2].record,
            HintRecord::Entry {
                token: 13,
                version: Version::new(7),
                key: b"gamma",
                tombstone: false,
                expires: Some(99),
            }
        );
        assert_eq!(
            hint.items[3].record,
            HintRecord::Drop(vec![TokenRange::new(1, 2)])
        );
        assert_eq!(hint.last_crc, crc32c::crc32c(&payloads[3]));
        assert_eq!(parse(&HintBuilder::new(3).finish(), 3).unwrap().end, 32);
    }

    /// A file of format version 1 (no expiring items) is still read; one claiming version 1
    /// with an expiring item is refused (version 1 never had them).
    #[test]
    fn version_1_files_are_read() {
        let (mut file, _) = sample();
        let set_version = |file: &mut Vec<u8>, v: u32| {
            file[8..12].copy_from_slice(&v.to_le_bytes());
            let body = file.len() - 4;
            let crc = crc32c::crc32c(&file[..body]);
            file[body..].copy_from_slice(&crc.to_le_bytes());
        };
        set_version(&mut file, 1);
        assert_eq!(
            parse(&file, 7).unwrap_err(),
            "item of an unknown payload format version"
        );
        let mut b = HintBuilder::new(7);
        let mut p = Vec::new();
        encode_entry(&mut p, 11, Version::new(5), b"alpha", Some(b"one"), None);
        b.add(32, &p, &decode(&p).unwrap());
        let mut old = b.finish();
        set_version(&mut old, 1);
        assert_eq!(parse(&old, 7).unwrap().items.len(), 1);
        set_version(&mut old, 3);
        assert_eq!(parse(&old, 7).unwrap_err(), "unknown format version");
    }

    #[test]
    fn any_damage_is_detected() {
        let (file, _) = sample();
        assert_eq!(parse(&file, 8).unwrap_err(), "written for another segment");
        for n in 0..file.len() {
            assert!(parse(&file[..n], 7).is_err(), "truncated to {n}");
        }
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            assert!(parse(&bad, 7).is_err(), "bit flip at {i}");
        }
    }

    #[test]
    fn an_item_past_the_end_is_corrupt_even_with_a_valid_checksum() {
        let (mut file, _) = sample();
        // Move the first item's offset far out, then fix the checksum.
        file[HEADER + 24..HEADER + 28].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let body = file.len() - 4;
        let crc = crc32c::crc32c(&file[..body]);
        file[body..].copy_from_slice(&crc.to_le_bytes());
        assert!(parse(&file, 7).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("0000000007.hint"), Some(7));
        assert_eq!(parse_name("0000000007.wal"), None);
        assert_eq!(parse_name("7.hint"), None);
        assert_eq!(path(Path::new("d"), 7), Path::new("d/0000000007.hint"));
    }
}
