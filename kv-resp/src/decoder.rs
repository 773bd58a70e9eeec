//! The resumable decoder of whole frames.

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::item::{Item, Kind, Leaf, parse_item};
use crate::limits::Limits;

/// Decodes [`Frame`]s of either protocol version from a growing read buffer.
///
/// Feed it the same buffer after every read: [`FrameDecoder::decode`] returns `Ok(None)`
/// until a whole frame is in the buffer, then splits the frame's bytes off the front and
/// returns it, its strings sharing the buffer's memory. Between calls the decoder remembers how
/// far it has validated (a position and one counter per open aggregate), so each byte is
/// examined once however the frame is split across reads: an array of a million elements
/// arriving in a thousand reads costs one pass, not a thousand. Only the current header line
/// is examined again, and at most once per call.
///
/// Nothing is allocated for a length until its bytes are there: a bulk claiming 512 MB or an
/// array claiming a billion elements is a comparison with the [`Limits`] and with the bytes
/// present; the frame is built, with exact-size vectors, only once it is complete.
///
/// ```
/// use bytes::BytesMut;
/// use kv_resp::{Frame, FrameDecoder};
///
/// let mut decoder = FrameDecoder::new();
/// let mut buf = BytesMut::from(&b"%1\r\n+key\r\n:4"[..]);
/// assert_eq!(decoder.decode(&mut buf)?, None); // incomplete
/// buf.extend_from_slice(b"2\r\n");
/// assert_eq!(
///     decoder.decode(&mut buf)?,
///     Some(Frame::Map(vec![(Frame::simple("key"), Frame::Integer(42))]))
/// );
/// assert!(buf.is_empty());
/// # Ok::<(), kv_resp::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    limits: Limits,
    /// Bytes of the buffer that belong to complete items of the frame being decoded.
    pos: usize,
    /// Children still expected by each open aggregate, outermost first.
    open: Vec<usize>,
    /// Bytes after `pos` already searched for the header line's `\r`.
    scanned: usize,
}

impl FrameDecoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets the progress on a partial frame, e.g. to decode a different buffer.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
        self.scanned = 0;
    }

    /// Decodes the next frame from the front of `buf`, removing its bytes from `buf`.
    ///
    /// Returns `Ok(None)` if the frame is not complete yet: append more bytes to the same
    /// buffer and call again (the buffer's front must not change in between, only grow at
    /// the back).
    ///
    /// # Errors
    ///
    /// [`Error`] if the bytes are not valid RESP or pass a limit; the stream cannot be resumed
    /// after that.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>> {
        if self.pos > buf.len() {
            // Not the buffer of the previous call: start over rather than trust the state.
            self.reset();
        }
        loop {
            let rest = &buf[self.pos..];
            let budget = self.limits.get_max_frame_len().saturating_sub(self.pos);
            let item = match parse_item(rest, &self.limits, &mut self.scanned, budget) {
                Ok(Some(item)) => item,
                Ok(None) => return Ok(None),
                Err(e) => {
                    let at = self.pos;
                    self.reset();
                    return Err(shift(e, at));
                }
            };
            self.scanned = 0;
            let len = match item {
                Item::Leaf { len, .. } | Item::Aggregate { len, .. } => len,
            };
            if self.pos.saturating_add(len) > self.limits.get_max_frame_len() {
                let limit = self.limits.get_max_frame_len();
                self.reset();
                return Err(Error::FrameTooBig { limit });
            }
            match item {
                Item::Leaf { len, .. } => self.pos += len,
                Item::Aggregate { len, children, .. } => {
                    if self.open.len() >= self.limits.get_max_depth() {
                        let limit = self.limits.get_max_depth();
                        self.reset();
                        return Err(Error::TooDeep { limit });
                    }
                    self.pos += len;
                    if children > 0 {
                        self.open.push(children);
                        continue;
                    }
                }
            }
            // An item is complete: it completes its parents whose last child it is.
            loop {
                match self.open.last_mut() {
                    None => {
                        let frame = buf.split_to(self.pos).freeze();
                        self.reset();
                        return build(&frame, &self.limits).map(Some);
                    }
                    Some(remaining) => {
                        *remaining -= 1;
                        if *remaining > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// Makes an error's offset relative to the frame's start.
fn shift(e: Error, by: usize) -> Error {
    match e {
        Error::InvalidTerminator { offset } => Error::InvalidTerminator {
            offset: offset + by,
        },
        e => e,
    }
}

/// An aggregate being built.
struct Open {
    kind: Kind,
    want: usize,
    items: Vec<Frame>,
}

/// Builds the frame held, complete and validated, in `data`, without recursion (the depth is
/// the caller's choice, the stack is not).
fn build(data: &Bytes, limits: &Limits) -> Result<Frame> {
    let mut stack: Vec<Open> = Vec::new();
    let mut pos = 0;
    loop {
        let mut scanned = 0;
        let item = parse_item(&data[pos..], limits, &mut scanned, usize::MAX)
            .map_err(|e| shift(e, pos))?
            .ok_or(Error::InvalidTerminator { offset: pos })?;
        let at = |r: std::ops::Range<usize>| data.slice(pos + r.start..pos + r.end);
        let mut done = match item {
            Item::Leaf { len, value } => {
                let frame = match value {
                    Leaf::Simple(r) => Frame::Simple(at(r)),
                    Leaf::Error(r) => Frame::Error(at(r)),
                    Leaf::Integer(i) => Frame::Integer(i),
                    Leaf::Bulk(r) => Frame::Bulk(at(r)),
                    Leaf::Null => Frame::Null,
                    Leaf::NullArray => Frame::NullArray,
                    Leaf::Double(d) => Frame::Double(d),
                    Leaf::Boolean(b) => Frame::Boolean(b),
                    Leaf::BulkError(r) => Frame::BulkError(at(r)),
                    Leaf::Verbatim(format, r) => Frame::Verbatim {
                        format,
                        text: at(r),
                    },
                    Leaf::BigNumber(r) => Frame::BigNumber(at(r)),
                };
                pos += len;
                frame
            }
            Item::Aggregate {
                len,
                kind,
                children,
            } => {
                pos += len;
                if children > 0 {
                    // The children are all in `data`, each at least 3 bytes: this allocation
                    // is bounded by bytes received, not by a claim.
                    stack.push(Open {
                        kind,
                        want: children,
                        items: Vec::with_capacity(children),
                    });
                    continue;
                }
                finish(kind, Vec::new())
            }
        };
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(done);
            };
            top.items.push(done);
            if top.items.len() < top.want {
                break;
            }
            let Some(open) = stack.pop() else {
                return Err(Error::InvalidTerminator { offset: pos });
            };
            done = finish(open.kind, open.items);
        }
    }
}

/// The frame of a complete aggregate of `kind` with children `items`.
fn finish(kind: Kind, items: Vec<Frame>) -> Frame {
    match kind {
        Kind::Array => Frame::Array(items),
        Kind::Set => Frame::Set(items),
        Kind::Push => Frame::Push(items),
        Kind::Map => Frame::Map(pairs(items)),
        Kind::Attribute => {
            let mut items = items;
            // An attribute has 2n + 1 >= 1 children: the last is the frame described.
            let frame = items.pop().unwrap_or(Frame::Null);
            Frame::Attribute {
                attributes: pairs(items),
                frame: Box::new(frame),
            }
        }
    }
}

/// Pairs up `[k1, v1, k2, v2, ...]`.
fn pairs(items: Vec<Frame>) -> Vec<(Frame, Frame)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>> {
        let mut d = FrameDecoder::new();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    fn one(bytes: &[u8]) -> Frame {
        let mut frames = decode_all(bytes).expect("valid");
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames.remove(0)
    }

    #[test]
    fn decodes_every_type() {
        assert_eq!(one(b"+OK\r\n"), Frame::simple("OK"));
        assert_eq!(one(b"-ERR no\r\n"), Frame::error("ERR no"));
        assert_eq!(one(b":-7\r\n"), Frame::Integer(-7));
        assert_eq!(one(b"$3\r\na\r\n\r\n"), Frame::bulk("a\r\n"));
        assert_eq!(one(b"$0\r\n\r\n"), Frame::bulk(""));
        assert_eq!(one(b"$-1\r\n"), Frame::Null);
        assert_eq!(one(b"*-1\r\n"), Frame::NullArray);
        assert_eq!(one(b"_\r\n"), Frame::Null);
        assert_eq!(one(b"*0\r\n"), Frame::Array(vec![]));
        assert_eq!(one(b",1.5\r\n"), Frame::Double(1.5));
        assert_eq!(one(b",-inf\r\n"), Frame::Double(f64::NEG_INFINITY));
        assert_eq!(one(b"#t\r\n"), Frame::Boolean(true));
        assert_eq!(one(b"#f\r\n"), Frame::Boolean(false));
        assert_eq!(one(b"!3\r\nERR\r\n"), Frame::BulkError("ERR".into()));
        assert_eq!(
            one(b"=8\r\ntxt:abcd\r\n"),
            Frame::Verbatim {
                format: *b"txt",
                text: "abcd".into()
            }
        );
        assert_eq!(one(b"(-123\r\n"), Frame::BigNumber("-123".into()));
        assert_eq!(
            one(b"~2\r\n:1\r\n:2\r\n"),
            Frame::Set(vec![Frame::Integer(1), Frame::Integer(2)])
        );
        assert_eq!(
            one(b">2\r\n+message\r\n$2\r\nhi\r\n"),
            Frame::Push(vec![Frame::simple("message"), Frame::bulk("hi")])
        );
        assert_eq!(
            one(b"|1\r\n+ttl\r\n:3\r\n*1\r\n%0\r\n"),
            Frame::Attribute {
                attributes: vec![(Frame::simple("ttl"), Frame::Integer(3))],
                frame: Box::new(Frame::Array(vec![Frame::Map(vec![])])),
            }
        );
    }

    #[test]
    fn nested_frames_complete_their_parents() {
        let frames = decode_all(b"*2\r\n*1\r\n:1\r\n*0\r\n:9\r\n").expect("valid");
        assert_eq!(
            frames,
            vec![
                Frame::Array(vec![
                    Frame::Array(vec![Frame::Integer(1)]),
                    Frame::Array(vec![])
                ]),
                Frame::Integer(9)
            ]
        );
    }

    #[test]
    fn bulk_strings_share_the_read_buffer() {
        let mut buf = BytesMut::from(&b"$5\r\nhello\r\n"[..]);
        let start = buf.as_ptr() as usize;
        let Some(Frame::Bulk(b)) = FrameDecoder::new().decode(&mut buf).expect("valid") else {
            panic!("not a bulk");
        };
        assert_eq!(b.as_ptr() as usize, start + 4);
    }

    #[test]
    fn resumes_where_it_stopped() {
        let mut d = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let input = b"*3\r\n$5\r\nhello\r\n:1\r\n+x\r\n";
        for (i, &b) in input.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let got = d.decode(&mut buf).expect("valid");
            assert_eq!(got.is_some(), i == input.len() - 1, "at byte {i}");
        }
        // The validated position moved forward element by element.
        assert!(buf.is_empty());
    }

    #[test]
    fn claimed_lengths_allocate_nothing_before_the_bytes() {
        let mut d = FrameDecoder::with_limits(Limits::new().max_array_len(usize::MAX >> 2));
        let mut buf = BytesMut::from(&b"*1000000000\r\n$2\r\nab\r\n"[..]);
        assert_eq!(d.decode(&mut buf).expect("valid so far"), None);
        // One counter for the open array: nothing sized by the claim.
        assert_eq!(d.open, vec![1_000_000_000 - 1]);
        assert!(d.open.capacity() < 16);
    }

    #[test]
    fn errors_on_malformed_frames() {
        let cases: [(&[u8], Error); 12] = [
            (b"?x\r\n", Error::UnknownType { byte: b'?' }),
            (b"\r\n", Error::UnknownType { byte: b'\r' }),
            (b":12a\r\n", Error::InvalidInteger),
            (b",x\r\n", Error::InvalidDouble),
            (b"#x\r\n", Error::InvalidBoolean),
            (b"_x\r\n", Error::InvalidNull),
            (b"(1-\r\n", Error::InvalidBigNumber),
            (b"=2\r\nab\r\n", Error::InvalidVerbatim),
            (b"$-2\r\n", Error::InvalidBulkLength),
            (b"*-2\r\n", Error::InvalidMultibulkLength),
            (b"$1\r\nabc\r\n", Error::InvalidTerminator { offset: 5 }),
            (b"$?\r\n", Error::Streamed),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            decode_all(b"*1\r\n:1\rx"),
            Err(Error::InvalidTerminator { offset: 7 })
        );
    }

    #[test]
    fn nesting_past_the_limit_is_an_error() {
        let limits = Limits::new().max_depth(3);
        let mut ok = BytesMut::from(&b"*1\r\n*1\r\n*1\r\n:1\r\n"[..]);
        assert!(FrameDecoder::with_limits(limits).decode(&mut ok).is_ok());
        let mut deep = BytesMut::from(&b"*1\r\n*1\r\n*1\r\n*0\r\n"[..]);
        assert_eq!(
            FrameDecoder::with_limits(limits).decode(&mut deep),
            Err(Error::TooDeep { limit: 3 })
        );
    }

    #[test]
    fn deep_nesting_within_a_large_limit_does_not_overflow_the_stack() {
        let depth = 100_000;
        let mut input = b"*1\r\n".repeat(depth);
        input.extend_from_slice(b":1\r\n");
        let mut d = FrameDecoder::with_limits(Limits::new().max_depth(depth));
        let mut buf = BytesMut::from(&input[..]);
        let mut frame = d.decode(&mut buf).expect("valid").expect("complete");
        let mut seen = 0;
        // Unwind iteratively: dropping a 100,000-deep frame recursively could itself
        // overflow the test thread's stack.
        while let Frame::Array(mut items) = frame {
            seen += 1;
            frame = items.pop().expect("one child");
        }
        assert_eq!(seen, depth);
    }

    #[test]
    fn a_frame_longer_than_its_limit_is_refused_at_the_bulk_header() {
        let limits = Limits::new().max_frame_len(64);
        let mut buf = BytesMut::from(&b"*2\r\n$10\r\n0123456789\r\n$60\r\n"[..]);
        assert_eq!(
            FrameDecoder::with_limits(limits).decode(&mut buf),
            Err(Error::FrameTooBig { limit: 64 })
        );
        let mut buf = BytesMut::from(&b"*2\r\n$10\r\n0123456789\r\n$30\r\n"[..]);
        assert_eq!(FrameDecoder::with_limits(limits).decode(&mut buf), Ok(None));
    }

    #[test]
    fn long_lines_are_refused() {
        let limits = Limits::new().max_inline_len(10);
        let mut buf = BytesMut::from(&b"+0123456789a"[..]);
        assert_eq!(
            FrameDecoder::with_limits(limits).decode(&mut buf),
            Err(Error::LineTooLong { limit: 10 })
        );
    }
}
