//! The byte layout of segments and records, and the pure functions that encode and scan them.
//!
//! Everything here works on byte slices, so recovery can be tested (and fuzzed) on buffers
//! without files or maps. The layout is specified in the crate docs (`lib.rs`).

use crate::le;

/// Magic number at offset 0 of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"KVWAL\0\r\n";
/// Format version at offset 8 of every segment.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header; the first record starts here.
pub(crate) const HEADER_LEN: usize = 32;
/// Bytes of a record header (`len | crc`).
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// Records start at multiples of this.
pub(crate) const ALIGN: usize = 8;
/// Bit 31 of the length word: "more records of this batch follow".
pub(crate) const MORE: u32 = 1 << 31;
/// Largest payload a length word can describe.
pub(crate) const MAX_PAYLOAD: usize = (MORE - 1) as usize;

/// Rounds `n` up to the next multiple of [`ALIGN`], or `None` on overflow.
pub(crate) fn align_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// Bytes a record with a `payload_len`-byte payload occupies, header and padding included.
pub(crate) fn frame_len(payload_len: usize) -> Option<usize> {
    align_up(payload_len)?.checked_add(RECORD_HEADER_LEN)
}

/// Encodes the header of segment `seq`, a file of `size` bytes.
pub(crate) fn encode_header(seq: u32, size: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&size.to_le_bytes());
    h[16..24].copy_from_slice(&u64::from(seq).to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header and returns the sequence number and the segment size it carries.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<(u32, u32), &'static str> {
    let h = bytes
        .get(..HEADER_LEN)
        .ok_or("file shorter than the segment header")?;
    if h[0..8] != MAGIC {
        return Err("bad magic number");
    }
    let crc = le::u32_at(h, 24).ok_or("short header")?;
    if crc != crc32c::crc32c(&h[0..24]) {
        return Err("header checksum mismatch");
    }
    let version = le::u32_at(h, 8).ok_or("short header")?;
    if version != FORMAT_VERSION {
        return Err("unsupported format version");
    }
    if le::u32_at(h, 28) != Some(0) {
        return Err("nonzero reserved header bytes");
    }
    let size = le::u32_at(h, 12).ok_or("short header")?;
    if (size as usize) < HEADER_LEN || !(size as usize).is_multiple_of(8) {
        return Err("segment size in the header is not a multiple of 8 above the header");
    }
    let seq = le::u64_at(h, 16).ok_or("short header")?;
    let seq = u32::try_from(seq).map_err(|_| "sequence number out of range")?;
    Ok((seq, size))
}

/// The length word and checksum of a record.
pub(crate) fn record_header(payload: &[u8], more: bool) -> [u8; RECORD_HEADER_LEN] {
    // Callers check `payload.len() <= MAX_PAYLOAD` first; the cast cannot truncate then.
    let word = (payload.len() as u32 & !MORE) | if more { MORE } else { 0 };
    let word = word.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&word), payload);
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&word);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// One record parsed from a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Offset of the payload.
    pub payload_at: usize,
    /// Length of the payload.
    pub payload_len: usize,
    /// Whether more records of the same batch follow.
    pub more: bool,
    /// Offset of the next record.
    pub next: usize,
}

/// What [`parse_record`] found at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A valid record.
    Record(Parsed),
    /// An all-zero record header: the end of the written log.
    End,
    /// Less than a record header of room left.
    Full,
}

/// Parses the record at `at` within `bytes` (which ends where the readable log ends).
pub(crate) fn parse_record(bytes: &[u8], at: usize) -> Result<Slot, &'static str> {
    if !at.is_multiple_of(ALIGN) {
        return Err("misaligned record offset");
    }
    let Some(hdr_end) = at.checked_add(RECORD_HEADER_LEN) else {
        return Ok(Slot::Full);
    };
    if hdr_end > bytes.len() {
        return Ok(Slot::Full);
    }
    let word = le::u32_at(bytes, at).ok_or("short record header")?;
    let crc = le::u32_at(bytes, at + 4).ok_or("short record header")?;
    if word == 0 && crc == 0 {
        return Ok(Slot::End);
    }
    let payload_len = (word & !MORE) as usize;
    let padded = align_up(payload_len).ok_or("record length overflows")?;
    let next = hdr_end
        .checked_add(padded)
        .ok_or("record length overflows")?;
    if next > bytes.len() {
        return Err("record length runs past the end of the segment");
    }
    let payload = &bytes[hdr_end..hdr_end + payload_len];
    let want = crc32c::crc32c_append(crc32c::crc32c(&word.to_le_bytes()), payload);
    if want != crc {
        return Err("record checksum mismatch");
    }
    if bytes[hdr_end + payload_len..next].iter().any(|&b| b != 0) {
        return Err("nonzero record padding");
    }
    Ok(Slot::Record(Parsed {
        payload_at: hdr_end,
        payload_len,
        more: word & MORE != 0,
        next,
    }))
}

/// Why a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// An all-zero record header after a complete batch.
    End,
    /// The segment has no room for another record header.
    Full,
    /// An invalid record, or an incomplete batch.
    Invalid {
        /// Offset of the offending record.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
}

/// The result of scanning the records of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Records in complete batches.
    pub records: u64,
    /// Offset just past the last complete batch: where the valid log ends.
    pub end: usize,
    /// Why the scan stopped.
    pub stop: Stop,
    /// Offset of the last nonzero byte at or after `end`, if any: bytes that are not part of
    /// the valid log (a torn tail, a hole, or corruption).
    pub last_nonzero: Option<usize>,
}

/// Scans a whole segment (header included) from its first record.
///
/// Never panics, whatever the bytes. A batch counts only when its last record (the one without
/// [`MORE`]) is valid; otherwise the scan ends at the batch's first record.
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    let mut records = 0u64;
    let mut end = HEADER_LEN.min(bytes.len());
    let mut at = end;
    let mut in_batch = 0u64;
    let stop = loop {
        match parse_record(bytes, at) {
            Ok(Slot::Record(p)) => {
                in_batch += 1;
                at = p.next;
                if !p.more {
                    records += in_batch;
                    in_batch = 0;
                    end = at;
                }
            }
            Ok(Slot::End) if in_batch == 0 => break Stop::End,
            Ok(Slot::Full) if in_batch == 0 => break Stop::Full,
            Ok(Slot::End | Slot::Full) => {
                break Stop::Invalid {
                    offset: at,
                    reason: "batch ends without its last record",
                };
            }
            Err(reason) => break Stop::Invalid { offset: at, reason },
        }
    };
    Scan {
        records,
        end,
        stop,
        last_nonzero: last_nonzero(bytes, end),
    }
}

/// Offset of the last nonzero byte at or after `from`.
pub(crate) fn last_nonzero(bytes: &[u8], from: usize) -> Option<usize> {
    let tail = bytes.get(from..)?;
    // Word-at-a-time from the back: the tail of a fresh segment is megabytes of zeros.
    let mut chunks = tail.rchunks_exact(8);
    let mut end = tail.len();
    for c in chunks.by_ref() {
        if c.iter().any(|&b| b != 0) {
            break;
        }
        end -= 8;
    }
    tail[..end].iter().rposition(|&b| b != 0).map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(&[u8], bool)], size: usize) -> Vec<u8> {
        let mut s = vec![0u8; size];
        let size = s.len() as u32;
        s[..HEADER_LEN].copy_from_slice(&encode_header(7, size));
        let mut at = HEADER_LEN;
        for (p, more) in records {
            s[at..at + 8].copy_from_slice(&record_header(p, *more));
            s[at + 8..at + 8 + p.len()].copy_from_slice(p);
            at += frame_len(p.len()).unwrap();
        }
        s
    }

    #[test]
    fn crc32c_test_vector() {
        assert_eq!(crc32c::crc32c(b"Hello world!"), 0x7B98_E751);
    }

    #[test]
    fn empty_record_header_is_not_the_end_marker() {
        assert_ne!(record_header(b"", false), [0u8; 8]);
    }

    #[test]
    fn header_round_trip() {
        assert_eq!(decode_header(&encode_header(42, 4096)), Ok((42, 4096)));
        assert!(decode_header(&encode_header(42, 4097)).is_err());
        let mut h = encode_header(42, 4096);
        h[17] ^= 1;
        assert!(decode_header(&h).is_err());
    }

    #[test]
    fn scan_counts_records_and_stops_at_end() {
        let s = segment(&[(b"a", false), (b"", false), (b"0123456789", false)], 256);
        let r = scan(&s);
        assert_eq!(r.records, 3);
        assert_eq!(r.end, HEADER_LEN + 16 + 8 + 24);
        assert_eq!(r.stop, Stop::End);
        assert_eq!(r.last_nonzero, None);
    }

    #[test]
    fn incomplete_batch_is_not_counted() {
        let s = segment(&[(b"a", false), (b"b", true), (b"c", true)], 256);
        let r = scan(&s);
        assert_eq!(r.records, 1);
        assert_eq!(r.end, HEADER_LEN + 16);
        assert!(matches!(r.stop, Stop::Invalid { .. }));
        assert!(r.last_nonzero.is_some());
    }

    #[test]
    fn full_segment_stops_cleanly() {
        let s = segment(
            &[(b"12345678", false), (b"12345678", false)],
            HEADER_LEN + 32 + 4,
        );
        let r = scan(&s);
        assert_eq!((r.records, r.stop), (2, Stop::Full));
    }

    #[test]
    fn huge_length_is_invalid_not_a_panic() {
        let mut s = segment(&[], 128);
        s[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let r = scan(&s);
        assert!(matches!(r.stop, Stop::Invalid { .. }));
        assert_eq!(scan(&s[..3]).records, 0);
    }

    #[test]
    fn last_nonzero_finds_stray_bytes() {
        let mut v = vec![0u8; 100];
        assert_eq!(last_nonzero(&v, 0), None);
        v[97] = 1;
        assert_eq!(last_nonzero(&v, 0), Some(97));
        assert_eq!(last_nonzero(&v, 98), None);
        v[3] = 1;
        assert_eq!(last_nonzero(&v, 4), Some(97));
        assert_eq!(last_nonzero(&v, 1000), None);
    }
}
