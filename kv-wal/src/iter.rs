//! Iterating over the log.

use std::sync::Arc;

use bytes::Bytes;

use crate::{
    Error, Lsn, Result, Wal,
    format::{self, HEADER_LEN, Slot},
    segment::Segment,
};

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Where it is.
    pub lsn: Lsn,
    /// Its payload.
    pub payload: Bytes,
}

/// An iterator over the records of a [`Wal`], from [`Wal::iter_from`].
///
/// It returns `None` when it has caught up with the appenders; calling `next` again later
/// continues with records appended since (it is not fused). After an error it returns `None`.
#[derive(Debug)]
pub struct WalIter<'a> {
    wal: &'a Wal,
    pos: Lsn,
    seg: Option<Arc<Segment>>,
    failed: bool,
}

impl<'a> WalIter<'a> {
    pub(crate) fn new(wal: &'a Wal, from: Lsn) -> Self {
        WalIter {
            wal,
            pos: from,
            seg: None,
            failed: false,
        }
    }

    /// The `Lsn` of the next record this iterator will look at.
    pub fn position(&self) -> Lsn {
        self.pos
    }
}

impl Iterator for WalIter<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        // Bounded: each turn either returns or moves to a later segment.
        loop {
            if self.failed {
                return None;
            }
            let published = self.wal.shared().published();
            if (self.pos.offset() as usize) < HEADER_LEN {
                self.pos = Lsn::new(self.pos.segment(), HEADER_LEN as u32);
            }
            if self.pos >= published {
                return None;
            }
            let seg = match &self.seg {
                Some(s) if s.seq() == self.pos.segment() => Arc::clone(s),
                _ => {
                    let segs = self.wal.shared().segments.read();
                    if let Some(s) = segs.get(&self.pos.segment()) {
                        let s = Arc::clone(s);
                        drop(segs);
                        self.seg = Some(Arc::clone(&s));
                        s
                    } else if let Some(&oldest) = segs.keys().next()
                        && self.pos.segment() == 0
                        && self.seg.is_none()
                    {
                        // Starting at `Lsn::ZERO`: begin at the oldest record. (A position in a
                        // removed segment is an error instead: a reader resuming there would
                        // otherwise skip records without noticing.)
                        self.pos = Lsn::new(oldest, HEADER_LEN as u32);
                        continue;
                    } else {
                        self.failed = true;
                        return Some(Err(Error::InvalidLsn {
                            lsn: self.pos,
                            reason: "segment removed or never existed",
                        }));
                    }
                }
            };
            let limit = if seg.seq() == published.segment() {
                published.offset() as usize
            } else {
                seg.len()
            };
            // SAFETY: `0..limit` is published, so nobody writes it any more.
            let bytes = unsafe { seg.bytes(limit) };
            match format::parse_record(bytes, self.pos.offset() as usize, seg.mask()) {
                Ok(Slot::Record(p)) => {
                    let rec = Record {
                        lsn: self.pos,
                        payload: Bytes::copy_from_slice(
                            &bytes[p.payload_at..p.payload_at + p.payload_len],
                        ),
                    };
                    self.pos = Lsn::new(seg.seq(), p.next as u32);
                    return Some(Ok(rec));
                }
                Ok(Slot::End | Slot::Full) if seg.seq() < published.segment() => {
                    // End of a sealed segment: continue with the next one.
                    let next = seg.seq().checked_add(1)?;
                    self.pos = Lsn::new(next, HEADER_LEN as u32);
                }
                Ok(Slot::End | Slot::Full) => return None,
                Err(reason) => {
                    self.failed = true;
                    return Some(Err(Error::CorruptRecord {
                        path: seg.path().to_owned(),
                        lsn: self.pos,
                        reason,
                    }));
                }
            }
        }
    }
}
