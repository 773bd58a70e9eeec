//! Parsing the one item (a leaf frame or an aggregate's header) at the start of a buffer.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::line::{Line, find_line};
use crate::number::{parse_f64, parse_i64_frame, parse_i64_strict};

/// A leaf frame's value, with strings as ranges of the buffer the item was parsed from.
#[derive(Debug)]
pub(crate) enum Leaf {
    Simple(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Range<usize>),
    Null,
    NullArray,
    Double(f64),
    Boolean(bool),
    BulkError(Range<usize>),
    Verbatim([u8; 3], Range<usize>),
    BigNumber(Range<usize>),
}

/// The aggregate types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Array,
    Set,
    Push,
    Map,
    Attribute,
}

/// One complete item at the start of a buffer.
#[derive(Debug)]
pub(crate) enum Item {
    /// A whole leaf frame, `len` bytes long.
    Leaf { len: usize, value: Leaf },
    /// An aggregate's header line, `len` bytes long, followed by `children` frames (twice the
    /// pairs for a map, plus one for an attribute's frame).
    Aggregate {
        len: usize,
        kind: Kind,
        children: usize,
    },
}

/// Parses the item at the start of `buf`, or returns `None` if its bytes have not all
/// arrived. `scanned` carries how much of the header line was already searched for `\r`
/// between calls (reset it to 0 when moving to the next item). A bulk claiming to end past
/// `budget` bytes is [`Error::FrameTooBig`] as soon as its header is read.
///
/// Nothing is allocated and nothing is copied; a bulk's claimed length is only compared with
/// the limit and with the bytes present.
pub(crate) fn parse_item(
    buf: &[u8],
    limits: &Limits,
    scanned: &mut usize,
    budget: usize,
) -> Result<Option<Item>> {
    let Some(&ty) = buf.first() else {
        return Ok(None);
    };
    let cr = match find_line(buf, scanned) {
        Err(offset) => return Err(Error::InvalidTerminator { offset }),
        Ok(Line::Incomplete) => {
            if buf.len() > limits.get_max_inline_len() {
                return Err(Error::LineTooLong {
                    limit: limits.get_max_inline_len(),
                });
            }
            return Ok(None);
        }
        Ok(Line::Complete { cr }) => cr,
    };
    if cr == 0 {
        return Err(Error::UnknownType { byte: ty });
    }
    let body = &buf[1..cr];
    let line_len = cr + 2;
    let leaf = |value| {
        Ok(Some(Item::Leaf {
            len: line_len,
            value,
        }))
    };
    match ty {
        b'+' => leaf(Leaf::Simple(1..cr)),
        b'-' => leaf(Leaf::Error(1..cr)),
        b':' => leaf(Leaf::Integer(
            parse_i64_frame(body).ok_or(Error::InvalidInteger)?,
        )),
        b',' => leaf(Leaf::Double(parse_f64(body).ok_or(Error::InvalidDouble)?)),
        b'#' => match body {
            b"t" => leaf(Leaf::Boolean(true)),
            b"f" => leaf(Leaf::Boolean(false)),
            _ => Err(Error::InvalidBoolean),
        },
        b'_' if body.is_empty() => leaf(Leaf::Null),
        b'_' => Err(Error::InvalidNull),
        b'(' => {
            let digits = body.strip_prefix(b"-").unwrap_or(body);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(Error::InvalidBigNumber);
            }
            leaf(Leaf::BigNumber(1..cr))
        }
        b'$' | b'!' | b'=' => {
            if body == b"?" {
                return Err(Error::Streamed);
            }
            if ty == b'$' && body == b"-1" {
                return leaf(Leaf::Null);
            }
            let len = parse_len(body, limits.get_max_bulk_len()).ok_or(Error::InvalidBulkLength)?;
            if ty == b'=' && len < 4 {
                return Err(Error::InvalidVerbatim);
            }
            // len <= max_bulk_len <= usize::MAX; saturate rather than overflow.
            let data_end = line_len.saturating_add(len);
            let end = data_end.saturating_add(2);
            if end > budget {
                return Err(Error::FrameTooBig {
                    limit: limits.get_max_frame_len(),
                });
            }
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[data_end..end] != b"\r\n" {
                return Err(Error::InvalidTerminator { offset: data_end });
            }
            let data = line_len..data_end;
            let value = match ty {
                b'$' => Leaf::Bulk(data),
                b'!' => Leaf::BulkError(data),
                _ => {
                    let f = &buf[line_len..line_len + 4];
                    if f[3] != b':' {
                        return Err(Error::InvalidVerbatim);
                    }
                    Leaf::Verbatim([f[0], f[1], f[2]], line_len + 4..data_end)
                }
            };
            Ok(Some(Item::Leaf { len: end, value }))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            if body == b"?" {
                return Err(Error::Streamed);
            }
            if ty == b'*' && body == b"-1" {
                return leaf(Leaf::NullArray);
            }
            let n =
                parse_len(body, limits.get_max_array_len()).ok_or(Error::InvalidMultibulkLength)?;
            let (kind, children) = match ty {
                b'*' => (Kind::Array, Some(n)),
                b'~' => (Kind::Set, Some(n)),
                b'>' => (Kind::Push, Some(n)),
                b'%' => (Kind::Map, n.checked_mul(2)),
                _ => (
                    Kind::Attribute,
                    n.checked_mul(2).and_then(|c| c.checked_add(1)),
                ),
            };
            let children = children.ok_or(Error::InvalidMultibulkLength)?;
            Ok(Some(Item::Aggregate {
                len: line_len,
                kind,
                children,
            }))
        }
        byte => Err(Error::UnknownType { byte }),
    }
}

/// A non-negative length no greater than `max`, in Redis's strict decimal syntax.
pub(crate) fn parse_len(body: &[u8], max: usize) -> Option<usize> {
    let n = usize::try_from(parse_i64_strict(body)?).ok()?;
    (n <= max).then_some(n)
}
