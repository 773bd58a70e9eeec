//! The RESP2/RESP3 value model.

use bytes::Bytes;

/// The protocol version a connection speaks: RESP2 until the client sends `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// RESP2: simple strings, errors, integers, bulk strings, arrays and their nulls.
    #[default]
    Resp2,
    /// RESP3: RESP2 plus null, double, boolean, bulk error, verbatim string, big number, map,
    /// set, push and attribute.
    Resp3,
}

/// One RESP frame, of either protocol version.
///
/// Strings are [`Bytes`]: a decoded frame's strings are slices of the read buffer, not copies.
/// The RESP2-only and RESP3-only types coexist so that a server can build one reply and
/// encode it for either version ([`Encoder`](crate::Encoder) downgrades RESP3 types for
/// RESP2 clients as Redis does).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Frame {
    /// `+OK\r\n`. Must not contain `\r` or `\n` (the encoder replaces them with spaces).
    Simple(Bytes),
    /// `-ERR message\r\n`: the whole text after `-`, error code included. Must not contain
    /// `\r` or `\n` (the encoder replaces them with spaces).
    Error(Bytes),
    /// `:42\r\n`.
    Integer(i64),
    /// `$5\r\nhello\r\n`: binary-safe.
    Bulk(Bytes),
    /// `*2\r\n...`: any frames.
    Array(Vec<Frame>),
    /// The null: `_\r\n` in RESP3, `$-1\r\n` (the null bulk string) in RESP2.
    Null,
    /// RESP2's null array, `*-1\r\n`; RESP3 has a single null, so it is `_\r\n` there (and
    /// decodes back as [`Frame::Null`]).
    NullArray,
    /// `,3.14\r\n` (RESP3); a bulk string of the same text in RESP2.
    Double(f64),
    /// `#t\r\n` (RESP3); the integer 1 or 0 in RESP2.
    Boolean(bool),
    /// `!21\r\nSYNTAX invalid syntax\r\n` (RESP3); a simple error in RESP2.
    BulkError(Bytes),
    /// `=15\r\ntxt:Some string\r\n` (RESP3): a format of three bytes (`txt`, `mkd`) and the
    /// text; a bulk string of the text alone in RESP2.
    Verbatim {
        /// The three-byte format, e.g. `*b"txt"`.
        format: [u8; 3],
        /// The text after `format:`.
        text: Bytes,
    },
    /// `(3492890328409238509324850943850943825024385\r\n` (RESP3): digits with an optional
    /// `-`; a bulk string of the digits in RESP2.
    BigNumber(Bytes),
    /// `%2\r\n` then key, value, key, value (RESP3); a flat array of 2n elements in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// `~2\r\n...` (RESP3); an array in RESP2.
    Set(Vec<Frame>),
    /// `>3\r\n...` (RESP3): out-of-band data such as pub/sub messages; an array in RESP2.
    Push(Vec<Frame>),
    /// `|1\r\n` then key/value pairs, then the frame they describe (RESP3); RESP2 has no
    /// attributes, so only the frame is sent.
    Attribute {
        /// The attribute pairs.
        attributes: Vec<(Frame, Frame)>,
        /// The frame the attributes describe.
        frame: Box<Frame>,
    },
}

impl Frame {
    /// A simple string frame, e.g. `Frame::simple("OK")`.
    pub fn simple(text: impl Into<Bytes>) -> Self {
        Frame::Simple(text.into())
    }

    /// An error frame, e.g. `Frame::error("ERR unknown command")`.
    pub fn error(text: impl Into<Bytes>) -> Self {
        Frame::Error(text.into())
    }

    /// A bulk string frame.
    pub fn bulk(data: impl Into<Bytes>) -> Self {
        Frame::Bulk(data.into())
    }

    /// An array of bulk strings: a client command.
    ///
    /// ```
    /// use kv_resp::Frame;
    ///
    /// let set = Frame::command(["SET", "k", "v"]);
    /// assert_eq!(set, Frame::Array(vec![Frame::bulk("SET"), Frame::bulk("k"), Frame::bulk("v")]));
    /// ```
    pub fn command<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        Frame::Array(args.into_iter().map(|a| Frame::Bulk(a.into())).collect())
    }

    /// Whether this frame is a RESP2 type (encodes the same in both versions, attributes
    /// aside).
    pub fn is_resp2(&self) -> bool {
        matches!(
            self,
            Frame::Simple(_)
                | Frame::Error(_)
                | Frame::Integer(_)
                | Frame::Bulk(_)
                | Frame::Array(_)
                | Frame::Null
                | Frame::NullArray
        )
    }
}
