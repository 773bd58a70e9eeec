//! Writing frames and replies in either protocol version.

use bytes::{BufMut, BytesMut};

use crate::frame::{Frame, Protocol};
use crate::number::{MAX_F64_LEN, MAX_I64_LEN, format_f64, format_i64};

/// Writes frames for a connection speaking `protocol`, downgrading RESP3 types for RESP2
/// clients as Redis does:
///
/// | frame          | RESP3                 | RESP2                                 |
/// |----------------|-----------------------|---------------------------------------|
/// | `Null`         | `_`                   | `$-1` (null bulk string)              |
/// | `NullArray`    | `_`                   | `*-1` (null array)                    |
/// | `Double`       | `,1.5`                | bulk string `1.5`                     |
/// | `Boolean`      | `#t` / `#f`           | integer `1` / `0`                     |
/// | `BulkError`    | `!<len>`              | simple error (`\r`, `\n` as spaces)   |
/// | `Verbatim`     | `=<len>\r\ntxt:...`   | bulk string of the text               |
/// | `BigNumber`    | `(123`                | bulk string of the digits             |
/// | `Map`          | `%<n>`                | flat array of `2n` elements           |
/// | `Set`, `Push`  | `~<n>`, `>` `<n>`     | array                                 |
/// | `Attribute`    | `\|<n>` pairs, frame  | the frame alone                       |
///
/// Simple strings and errors cannot contain `\r` or `\n`: they are written as spaces (Redis
/// does the same to error messages), so the output is always valid RESP.
///
/// Besides whole [`Frame`]s, the reply methods (`simple`, `bulk`, `array_header`, ...) write
/// straight into the output buffer, so a server builds its replies without a `Frame` tree.
///
/// ```
/// use bytes::BytesMut;
/// use kv_resp::{Encoder, Frame, Protocol};
///
/// let reply = Frame::Map(vec![(Frame::simple("proto"), Frame::Integer(3))]);
/// let mut out = BytesMut::new();
/// Encoder::new(Protocol::Resp3).frame(&mut out, &reply);
/// assert_eq!(&out[..], b"%1\r\n+proto\r\n:3\r\n");
/// out.clear();
/// Encoder::new(Protocol::Resp2).frame(&mut out, &reply);
/// assert_eq!(&out[..], b"*2\r\n+proto\r\n:3\r\n");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encoder {
    protocol: Protocol,
}

impl Encoder {
    /// An encoder for `protocol`.
    pub const fn new(protocol: Protocol) -> Self {
        Self { protocol }
    }

    /// The protocol this encoder writes.
    pub const fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn resp3(&self) -> bool {
        self.protocol == Protocol::Resp3
    }

    /// Appends `frame`.
    pub fn frame(&self, out: &mut BytesMut, frame: &Frame) {
        // An explicit stack: a deep frame must not overflow the call stack.
        let mut stack: Vec<&Frame> = vec![frame];
        while let Some(f) = stack.pop() {
            match f {
                Frame::Simple(s) => self.simple(out, s),
                Frame::Error(e) => self.error(out, e),
                Frame::Integer(i) => self.integer(out, *i),
                Frame::Bulk(b) => self.bulk(out, b),
                Frame::Null => self.null(out),
                Frame::NullArray => self.null_array(out),
                Frame::Double(d) => self.double(out, *d),
                Frame::Boolean(b) => self.boolean(out, *b),
                Frame::BulkError(e) => self.bulk_error(out, e),
                Frame::Verbatim { format, text } => self.verbatim(out, *format, text),
                Frame::BigNumber(n) => self.big_number(out, n),
                Frame::Array(items) => {
                    self.array_header(out, items.len());
                    stack.extend(items.iter().rev());
                }
                Frame::Set(items) => {
                    self.set_header(out, items.len());
                    stack.extend(items.iter().rev());
                }
                Frame::Push(items) => {
                    self.push_header(out, items.len());
                    stack.extend(items.iter().rev());
                }
                Frame::Map(pairs) => {
                    self.map_header(out, pairs.len());
                    for (k, v) in pairs.iter().rev() {
                        stack.push(v);
                        stack.push(k);
                    }
                }
                Frame::Attribute { attributes, frame } => {
                    stack.push(frame);
                    if self.resp3() {
                        header(out, b'|', attributes.len());
                        for (k, v) in attributes.iter().rev() {
                            stack.push(v);
                            stack.push(k);
                        }
                    }
                }
            }
        }
    }

    /// Appends a simple string, e.g. `+OK\r\n`.
    pub fn simple(&self, out: &mut BytesMut, text: &[u8]) {
        line(out, b'+', text);
    }

    /// Appends an error, e.g. `-ERR unknown command\r\n` (`text` includes the error code).
    pub fn error(&self, out: &mut BytesMut, text: &[u8]) {
        line(out, b'-', text);
    }

    /// Appends an integer.
    pub fn integer(&self, out: &mut BytesMut, value: i64) {
        let mut buf = [0; MAX_I64_LEN];
        out.put_u8(b':');
        out.put_slice(format_i64(value, &mut buf));
        out.put_slice(b"\r\n");
    }

    /// Appends a bulk string.
    pub fn bulk(&self, out: &mut BytesMut, data: &[u8]) {
        bulk(out, data);
    }

    /// Appends the null reply: `_` in RESP3, the null bulk string `$-1` in RESP2 (what `GET`
    /// of a missing key answers).
    pub fn null(&self, out: &mut BytesMut) {
        out.put_slice(if self.resp3() { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// Appends the null array reply: `_` in RESP3, `*-1` in RESP2.
    pub fn null_array(&self, out: &mut BytesMut) {
        out.put_slice(if self.resp3() { b"_\r\n" } else { b"*-1\r\n" });
    }

    /// Appends a double, in Redis's text form (`inf`, `-inf`, `nan`, integers without a
    /// fraction).
    pub fn double(&self, out: &mut BytesMut, value: f64) {
        let mut buf = [0; MAX_F64_LEN];
        let text = format_f64(value, &mut buf);
        if self.resp3() {
            line(out, b',', text);
        } else {
            bulk(out, text);
        }
    }

    /// Appends a boolean (`#t`/`#f`; `:1`/`:0` in RESP2).
    pub fn boolean(&self, out: &mut BytesMut, value: bool) {
        if self.resp3() {
            out.put_slice(if value { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.integer(out, i64::from(value));
        }
    }

    /// Appends a bulk error (a simple error in RESP2).
    pub fn bulk_error(&self, out: &mut BytesMut, text: &[u8]) {
        if self.resp3() {
            header(out, b'!', text.len());
            out.put_slice(text);
            out.put_slice(b"\r\n");
        } else {
            self.error(out, text);
        }
    }

    /// Appends a verbatim string with a three-byte `format` such as `txt` (a bulk string of
    /// `text` in RESP2).
    pub fn verbatim(&self, out: &mut BytesMut, format: [u8; 3], text: &[u8]) {
        if self.resp3() {
            header(out, b'=', text.len() + 4);
            out.put_slice(&format);
            out.put_u8(b':');
            out.put_slice(text);
            out.put_slice(b"\r\n");
        } else {
            bulk(out, text);
        }
    }

    /// Appends a big number given as its decimal digits (a bulk string in RESP2).
    pub fn big_number(&self, out: &mut BytesMut, digits: &[u8]) {
        if self.resp3() {
            line(out, b'(', digits);
        } else {
            bulk(out, digits);
        }
    }

    /// Appends an array header; `len` frames must follow.
    pub fn array_header(&self, out: &mut BytesMut, len: usize) {
        header(out, b'*', len);
    }

    /// Appends a map header; `len` key/value pairs (`2 * len` frames) must follow. RESP2 gets
    /// an array of `2 * len`.
    pub fn map_header(&self, out: &mut BytesMut, len: usize) {
        if self.resp3() {
            header(out, b'%', len);
        } else {
            header(out, b'*', len.saturating_mul(2));
        }
    }

    /// Appends a set header; `len` frames must follow (an array in RESP2).
    pub fn set_header(&self, out: &mut BytesMut, len: usize) {
        header(out, if self.resp3() { b'~' } else { b'*' }, len);
    }

    /// Appends a push header; `len` frames must follow (an array in RESP2).
    pub fn push_header(&self, out: &mut BytesMut, len: usize) {
        header(out, if self.resp3() { b'>' } else { b'*' }, len);
    }
}

/// `<ty><text>\r\n`, with `\r` and `\n` in `text` written as spaces.
fn line(out: &mut BytesMut, ty: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(ty);
    if memchr::memchr2(b'\r', b'\n', text).is_none() {
        out.put_slice(text);
    } else {
        out.extend(text.iter().map(|&c| match c {
            b'\r' | b'\n' => b' ',
            c => c,
        }));
    }
    out.put_slice(b"\r\n");
}

/// `<ty><len>\r\n`.
pub(crate) fn header(out: &mut BytesMut, ty: u8, len: usize) {
    let mut buf = [0; MAX_I64_LEN];
    // A length above i64::MAX cannot exist in memory.
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    out.put_u8(ty);
    out.put_slice(format_i64(len, &mut buf));
    out.put_slice(b"\r\n");
}

/// `$<len>\r\n<data>\r\n`.
pub(crate) fn bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + MAX_I64_LEN + 5);
    header(out, b'$', data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(p: Protocol, f: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        Encoder::new(p).frame(&mut out, f);
        out.to_vec()
    }

    #[test]
    fn resp2_downgrades_like_redis() {
        use Protocol::Resp2;
        assert_eq!(enc(Resp2, &Frame::Null), b"$-1\r\n");
        assert_eq!(enc(Resp2, &Frame::NullArray), b"*-1\r\n");
        assert_eq!(enc(Resp2, &Frame::Double(1.5)), b"$3\r\n1.5\r\n");
        assert_eq!(enc(Resp2, &Frame::Double(2.0)), b"$1\r\n2\r\n");
        assert_eq!(enc(Resp2, &Frame::Boolean(true)), b":1\r\n");
        assert_eq!(enc(Resp2, &Frame::Boolean(false)), b":0\r\n");
        assert_eq!(
            enc(Resp2, &Frame::BulkError("ERR a\nb".into())),
            b"-ERR a b\r\n"
        );
        assert_eq!(
            enc(
                Resp2,
                &Frame::Verbatim {
                    format: *b"txt",
                    text: "hi".into()
                }
            ),
            b"$2\r\nhi\r\n"
        );
        assert_eq!(enc(Resp2, &Frame::BigNumber("12".into())), b"$2\r\n12\r\n");
        assert_eq!(
            enc(
                Resp2,
                &Frame::Map(vec![(Frame::bulk("a"), Frame::Integer(1))])
            ),
            b"*2\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            enc(Resp2, &Frame::Set(vec![Frame::Integer(1)])),
            b"*1\r\n:1\r\n"
        );
        assert_eq!(enc(Resp2, &Frame::Push(vec![])), b"*0\r\n");
        assert_eq!(
            enc(
                Resp2,
                &Frame::Attribute {
                    attributes: vec![(Frame::simple("a"), Frame::Integer(1))],
                    frame: Box::new(Frame::simple("OK"))
                }
            ),
            b"+OK\r\n"
        );
    }

    #[test]
    fn resp3_writes_its_own_types() {
        use Protocol::Resp3;
        assert_eq!(enc(Resp3, &Frame::Null), b"_\r\n");
        assert_eq!(enc(Resp3, &Frame::NullArray), b"_\r\n");
        assert_eq!(enc(Resp3, &Frame::Double(f64::INFINITY)), b",inf\r\n");
        assert_eq!(enc(Resp3, &Frame::Boolean(false)), b"#f\r\n");
        assert_eq!(
            enc(Resp3, &Frame::BulkError("E\r\n".into())),
            b"!3\r\nE\r\n\r\n"
        );
        assert_eq!(
            enc(
                Resp3,
                &Frame::Verbatim {
                    format: *b"mkd",
                    text: "# x".into()
                }
            ),
            b"=7\r\nmkd:# x\r\n"
        );
        assert_eq!(
            enc(
                Resp3,
                &Frame::Attribute {
                    attributes: vec![(Frame::simple("a"), Frame::Integer(1))],
                    frame: Box::new(Frame::simple("OK"))
                }
            ),
            b"|1\r\n+a\r\n:1\r\n+OK\r\n"
        );
    }

    #[test]
    fn newlines_in_simple_strings_become_spaces() {
        assert_eq!(
            enc(Protocol::Resp2, &Frame::error("ERR a\r\nb")),
            b"-ERR a  b\r\n"
        );
        assert_eq!(enc(Protocol::Resp3, &Frame::simple("x\ny")), b"+x y\r\n");
    }
}
