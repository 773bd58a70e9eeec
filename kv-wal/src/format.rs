//! The byte layout of segments and records, and the pure functions that encode and scan them.
//!
//! Everything here works on byte slices, so recovery can be tested (and fuzzed) on buffers
//! without files or maps. The layout is specified in the crate docs (`lib.rs`).

use crate::le;

/// Magic number at offset 0 of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"KVWAL\0\r\n";
/// Format version at offset 8 of a segment created fresh (zero-filled).
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Format version at offset 8 of a *recycled* segment: a released segment file reused under a
/// new sequence number, whose bytes after the end of its records may be records of earlier
/// incarnations. Its records' checksums are masked with the sequence number (see
/// [`record_header`] and the crate docs), so those leftovers never pass for its own.
pub(crate) const RECYCLED_VERSION: u32 = 2;
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

/// Encodes the header of segment `seq`, a fresh (zero-filled) file of `size` bytes.
pub(crate) fn encode_header(seq: u32, size: u32) -> [u8; HEADER_LEN] {
    encode_header_version(seq, size, FORMAT_VERSION)
}

/// Encodes the header of segment `seq`, a file of `size` bytes, with format version `version`
/// ([`FORMAT_VERSION`] or [`RECYCLED_VERSION`]).
pub(crate) fn encode_header_version(seq: u32, size: u32, version: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&size.to_le_bytes());
    h[16..24].copy_from_slice(&u64::from(seq).to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The sequence number.
    pub seq: u32,
    /// The segment's size in bytes.
    pub size: u32,
    /// Whether the segment is recycled (format version 2).
    pub recycled: bool,
}

impl Header {
    /// The mask of this segment's record checksums (see [`mask`]).
    pub(crate) fn mask(&self) -> u32 {
        if self.recycled { mask(self.seq) } else { 0 }
    }
}

/// The value XORed into the checksum of every record of recycled segment `seq`: the sequence
/// number itself. Fresh segments use 0 (no mask).
///
/// Why this is enough to tell a recycled file's leftovers from its new records: a leftover
/// record written in an earlier incarnation of the file, as segment `old`, stores
/// `crc ^ mask(old)` (0 for a fresh segment), which equals `crc ^ mask(seq)` only if
/// `old == seq`; a file's sequence numbers only grow, so a leftover whose bytes are intact
/// fails the check deterministically, not with a 2^-32 chance. It is also recognisable as
/// such: `stored ^ crc` names its incarnation (see [`scan`], `Stop::Stale`).
pub(crate) fn mask(seq: u32) -> u32 {
    seq
}

/// Whether segment `seq` may be recycled: not if its mask would turn the checksum of an empty
/// record (`crc32c([0; 4])`) into 0, making its header the all-zero end marker.
pub(crate) fn recyclable_seq(seq: u32) -> bool {
    seq != 0 && mask(seq) != crc32c::crc32c(&[0u8; 4])
}

/// Checks a segment header and returns what it carries.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, &'static str> {
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
    if version != FORMAT_VERSION && version != RECYCLED_VERSION {
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
    let recycled = version == RECYCLED_VERSION;
    if recycled && !recyclable_seq(seq) {
        return Err("a recycled segment with a sequence number that cannot be recycled");
    }
    Ok(Header {
        seq,
        size,
        recycled,
    })
}

/// The length word and checksum of a record in a fresh segment. A record in a recycled
/// segment stores the checksum XORed with the segment's [`mask`] ([`mask_header`]).
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

/// Applies checksum mask `mask` to a record header built by [`record_header`].
#[inline]
pub(crate) fn mask_header(h: &mut [u8; RECORD_HEADER_LEN], mask: u32) {
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) ^ mask;
    h[4..8].copy_from_slice(&crc.to_le_bytes());
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

/// Parses the record at `at` within `bytes` (which ends where the readable log ends), in a
/// segment whose record checksums are masked with `mask` (0 for a fresh segment).
pub(crate) fn parse_record(bytes: &[u8], at: usize, mask: u32) -> Result<Slot, &'static str> {
    parse_record_inner(bytes, at, mask).map_err(|(reason, _)| reason)
}

/// [`parse_record`], whose error also carries, for a record that is well framed and whose
/// checksum is right under another mask, that mask (`stored ^ crc`): the incarnation a leftover
/// record of a recycled segment was written in.
fn parse_record_inner(
    bytes: &[u8],
    at: usize,
    mask: u32,
) -> Result<Slot, (&'static str, Option<u32>)> {
    let bad = |reason| (reason, None);
    if !at.is_multiple_of(ALIGN) {
        return Err(bad("misaligned record offset"));
    }
    let Some(hdr_end) = at.checked_add(RECORD_HEADER_LEN) else {
        return Ok(Slot::Full);
    };
    if hdr_end > bytes.len() {
        return Ok(Slot::Full);
    }
    let word = le::u32_at(bytes, at).ok_or(bad("short record header"))?;
    let crc = le::u32_at(bytes, at + 4).ok_or(bad("short record header"))?;
    if word == 0 && crc == 0 {
        return Ok(Slot::End);
    }
    let payload_len = (word & !MORE) as usize;
    let padded = align_up(payload_len).ok_or(bad("record length overflows"))?;
    let next = hdr_end
        .checked_add(padded)
        .ok_or(bad("record length overflows"))?;
    if next > bytes.len() {
        return Err(bad("record length runs past the end of the segment"));
    }
    let payload = &bytes[hdr_end..hdr_end + payload_len];
    let want = crc32c::crc32c_append(crc32c::crc32c(&word.to_le_bytes()), payload);
    let padding_ok = bytes[hdr_end + payload_len..next].iter().all(|&b| b == 0);
    if want ^ mask != crc {
        let other = padding_ok.then_some(want ^ crc);
        return Err(("record checksum mismatch", other));
    }
    if !padding_ok {
        return Err(bad("nonzero record padding"));
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
    /// In a recycled segment: a well-framed record whose checksum is right for an *earlier*
    /// incarnation of the file (a leftover), after a complete batch: the end of this
    /// incarnation's records, as clean as an all-zero header.
    Stale {
        /// The mask (sequence number, or 0 for a fresh segment) it was written under.
        incarnation: u32,
    },
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
    /// the valid log (a torn tail, a hole, or corruption). Always `None` for a recycled
    /// segment (`mask != 0`), where bytes after the end are expected: leftovers.
    pub last_nonzero: Option<usize>,
}

/// Scans a whole segment (header included) from its first record; `mask` is the segment's
/// checksum mask (0 for a fresh segment, see [`mask`]).
///
/// Never panics, whatever the bytes. A batch counts only when its last record (the one without
/// [`MORE`]) is valid; otherwise the scan ends at the batch's first record.
pub(crate) fn scan(bytes: &[u8], mask: u32) -> Scan {
    let mut records = 0u64;
    let mut end = HEADER_LEN.min(bytes.len());
    let mut at = end;
    let mut in_batch = 0u64;
    let stop = loop {
        match parse_record_inner(bytes, at, mask) {
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
            // A leftover of an earlier incarnation (a smaller mask: sequence numbers only
            // grow) right after a complete batch is where this incarnation's records end.
            Err((_, Some(incarnation))) if mask != 0 && incarnation < mask && in_batch == 0 => {
                break Stop::Stale { incarnation };
            }
            Err((reason, _)) => break Stop::Invalid { offset: at, reason },
        }
    };
    Scan {
        records,
        end,
        stop,
        last_nonzero: if mask == 0 {
            last_nonzero(bytes, end)
        } else {
            None
        },
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
        assert_eq!(
            decode_header(&encode_header(42, 4096)).map(|h| (h.seq, h.size, h.recycled)),
            Ok((42, 4096, false))
        );
        assert!(decode_header(&encode_header(42, 4097)).is_err());
        let mut h = encode_header(42, 4096);
        h[17] ^= 1;
        assert!(decode_header(&h).is_err());
    }

    #[test]
    fn scan_counts_records_and_stops_at_end() {
        let s = segment(&[(b"a", false), (b"", false), (b"0123456789", false)], 256);
        let r = scan(&s, 0);
        assert_eq!(r.records, 3);
        assert_eq!(r.end, HEADER_LEN + 16 + 8 + 24);
        assert_eq!(r.stop, Stop::End);
        assert_eq!(r.last_nonzero, None);
    }

    #[test]
    fn incomplete_batch_is_not_counted() {
        let s = segment(&[(b"a", false), (b"b", true), (b"c", true)], 256);
        let r = scan(&s, 0);
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
        let r = scan(&s, 0);
        assert_eq!((r.records, r.stop), (2, Stop::Full));
    }

    #[test]
    fn huge_length_is_invalid_not_a_panic() {
        let mut s = segment(&[], 128);
        s[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let r = scan(&s, 0);
        assert!(matches!(r.stop, Stop::Invalid { .. }));
        assert_eq!(scan(&s[..3], 0).records, 0);
    }

    /// A segment as written in incarnation `mask` (0: fresh), from `at` on.
    fn write_masked(s: &mut [u8], mut at: usize, records: &[&[u8]], mask: u32) -> usize {
        for p in records {
            let mut h = record_header(p, false);
            mask_header(&mut h, mask);
            s[at..at + 8].copy_from_slice(&h);
            s[at + 8..at + 8 + p.len()].copy_from_slice(p);
            s[at + 8 + p.len()..at + frame_len(p.len()).unwrap()].fill(0);
            at += frame_len(p.len()).unwrap();
        }
        at
    }

    #[test]
    fn a_recycled_segment_never_takes_an_earlier_incarnations_records_for_its_own() {
        // Incarnation 0 (fresh) wrote four records; incarnation 5 (recycled) overwrote the
        // first two with records of the same sizes; then incarnation 9 the first one.
        let mut s = segment(&[], 256);
        write_masked(
            &mut s,
            HEADER_LEN,
            &[b"old-a", b"old-b", b"old-c", b"old-d"],
            0,
        );
        let end5 = write_masked(&mut s, HEADER_LEN, &[b"new-a", b"new-b"], mask(5));
        let r = scan(&s, mask(5));
        assert_eq!((r.records, r.end), (2, end5));
        assert_eq!(r.stop, Stop::Stale { incarnation: 0 });
        assert_eq!(
            r.last_nonzero, None,
            "leftovers are expected in a recycled segment"
        );
        let end9 = write_masked(&mut s, HEADER_LEN, &[b"9-a"], mask(9));
        let r = scan(&s, mask(9));
        assert_eq!((r.records, r.end), (1, end9));
        assert_eq!(r.stop, Stop::Stale { incarnation: 5 });
        // Read as incarnation 5 or as a fresh segment, incarnation 9's record is not valid.
        assert!(parse_record(&s, HEADER_LEN, mask(5)).is_err());
        assert!(parse_record(&s, HEADER_LEN, 0).is_err());
        assert!(matches!(
            parse_record(&s, HEADER_LEN, mask(9)),
            Ok(Slot::Record(_))
        ));
        // A record of a *later* incarnation (impossible unless sequence numbers went back) is
        // not a clean end: it is invalid.
        let r = scan(&s, mask(3));
        assert_eq!(r.records, 0);
        assert!(matches!(r.stop, Stop::Invalid { .. }));
    }

    #[test]
    fn garbage_after_a_recycled_segments_records_is_invalid_not_stale() {
        let mut s = segment(&[], 256);
        let end = write_masked(&mut s, HEADER_LEN, &[b"new"], mask(7));
        // A leftover cut in the middle (an old record's payload bytes at a record boundary).
        s[end..end + 8].copy_from_slice(&[0x11, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        let r = scan(&s, mask(7));
        assert_eq!((r.records, r.end), (1, end));
        assert!(matches!(r.stop, Stop::Invalid { .. }));
        // A stale record inside an incomplete batch is a torn batch, not a clean end.
        let mut s = segment(&[], 256);
        write_masked(&mut s, HEADER_LEN, &[b"old-a", b"old-b", b"old-c"], 0);
        let mut h = record_header(b"new-a", true);
        mask_header(&mut h, mask(7));
        s[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&h);
        s[HEADER_LEN + 8..HEADER_LEN + 13].copy_from_slice(b"new-a");
        let r = scan(&s, mask(7));
        assert_eq!((r.records, r.end), (0, HEADER_LEN));
        assert!(matches!(r.stop, Stop::Invalid { .. }));
    }

    #[test]
    fn no_recyclable_sequence_number_turns_an_empty_record_into_the_end_marker() {
        let empty_crc = crc32c::crc32c(&[0u8; 4]);
        assert!(!recyclable_seq(0));
        assert!(!recyclable_seq(empty_crc));
        for seq in [1, 2, empty_crc - 1, empty_crc + 1, u32::MAX] {
            assert!(recyclable_seq(seq));
            let mut h = record_header(b"", false);
            mask_header(&mut h, mask(seq));
            assert_ne!(h, [0u8; 8], "seq {seq}");
        }
    }

    #[test]
    fn recycled_header_round_trip_and_refusals() {
        let h = encode_header_version(9, 4096, RECYCLED_VERSION);
        let d = decode_header(&h).unwrap();
        assert_eq!(
            (d.seq, d.size, d.recycled, d.mask()),
            (9, 4096, true, mask(9))
        );
        assert_eq!(decode_header(&encode_header(9, 4096)).unwrap().mask(), 0);
        let bad = encode_header_version(crc32c::crc32c(&[0u8; 4]), 4096, RECYCLED_VERSION);
        assert!(decode_header(&bad).is_err());
        assert_eq!(
            decode_header(&encode_header_version(9, 4096, 3)),
            Err("unsupported format version")
        );
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
