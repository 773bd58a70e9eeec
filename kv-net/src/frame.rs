//! Frames: the unit of the peer protocol after the preamble (docs/format.md, "Peer protocol").
//!
//! ```text
//! offset 0  u32 LE  len: bytes that follow (kind + request id + body), 9..=max_frame_len
//! offset 4  u8      kind (FrameKind)
//! offset 5  u64 LE  request id (or sequence number, or ping stamp)
//! offset 13 ...     body: len - 9 bytes (postcard, or raw stream bytes)
//! ```
//!
//! The length is compared with the limit before anything is reserved for the frame, so a
//! header claiming 4 GiB costs nothing but the error.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;

/// Bytes of a frame's header: the length, the kind and the request id.
pub const FRAME_HEADER_LEN: usize = 13;
/// Bytes the length counts beyond the body: the kind and the request id.
const FIXED_LEN: usize = 9;

/// The default limit of a frame's length (16 MiB plus room for a key and the header: a value
/// of the store's maximum size fits in one request).
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024 + 128 * 1024;

/// What a frame carries. The numbers are part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameKind {
    /// Handshake: the sender's identity (postcard [`Hello`](crate::Hello)).
    Hello = 1,
    /// Handshake: the sender accepts the other side's `Hello`. Empty body.
    Accept = 2,
    /// Handshake: the sender refuses the other side's `Hello`; body: postcard string, why.
    Refuse = 3,
    /// A request; body: the postcard-encoded request message.
    Request = 4,
    /// The answer to the request of the same id; body: the postcard-encoded response.
    Response = 5,
    /// The request of the same id could not be executed; body: postcard string, why.
    Failure = 6,
    /// Heartbeat; the id is the sender's clock stamp, echoed in the `Pong`. Empty body.
    Ping = 7,
    /// Heartbeat answer, with the `Ping`'s id. Empty body.
    Pong = 8,
    /// Opens a bulk stream on a stream connection; body: the stream's header (raw bytes).
    StreamOpen = 9,
    /// A chunk of a bulk stream; the id is its sequence number from 0; body: raw bytes.
    StreamChunk = 10,
    /// The sender has sent every chunk; the id is the number of chunks. Empty body.
    StreamEnd = 11,
    /// The receiver's verdict on a stream; body: postcard `Option<String>` (`None`: every chunk
    /// was accepted and the sink finished).
    StreamDone = 12,
}

impl FrameKind {
    /// The kind of a byte, if it is one.
    pub fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::Accept,
            3 => Self::Refuse,
            4 => Self::Request,
            5 => Self::Response,
            6 => Self::Failure,
            7 => Self::Ping,
            8 => Self::Pong,
            9 => Self::StreamOpen,
            10 => Self::StreamChunk,
            11 => Self::StreamEnd,
            12 => Self::StreamDone,
            _ => return None,
        })
    }

    /// A short lowercase name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Accept => "accept",
            Self::Refuse => "refuse",
            Self::Request => "request",
            Self::Response => "response",
            Self::Failure => "failure",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::StreamOpen => "stream-open",
            Self::StreamChunk => "stream-chunk",
            Self::StreamEnd => "stream-end",
            Self::StreamDone => "stream-done",
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub kind: FrameKind,
    /// The request id (or sequence number, or stamp: see [`FrameKind`]).
    pub id: u64,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A frame.
    pub fn new(kind: FrameKind, id: u64, body: impl Into<Bytes>) -> Self {
        Self {
            kind,
            id,
            body: body.into(),
        }
    }

    /// Appends the frame's bytes to `dst`.
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] if the body does not fit under `max_frame_len` (nothing is
    /// written then).
    pub fn encode(&self, dst: &mut BytesMut, max_frame_len: usize) -> Result<(), Error> {
        encode_parts(self.kind, self.id, &self.body, dst, max_frame_len)
    }

    /// The frame's bytes.
    ///
    /// # Errors
    ///
    /// As [`Frame::encode`].
    pub fn to_bytes(&self, max_frame_len: usize) -> Result<Bytes, Error> {
        let mut dst = BytesMut::with_capacity(FRAME_HEADER_LEN + self.body.len());
        self.encode(&mut dst, max_frame_len)?;
        Ok(dst.freeze())
    }
}

/// Appends a frame made of these parts to `dst`.
pub(crate) fn encode_parts(
    kind: FrameKind,
    id: u64,
    body: &[u8],
    dst: &mut BytesMut,
    max_frame_len: usize,
) -> Result<(), Error> {
    let len = FIXED_LEN + body.len();
    if len > max_frame_len {
        return Err(Error::FrameTooLarge {
            len: len as u64,
            max: max_frame_len,
        });
    }
    let len32 = u32::try_from(len).map_err(|_| Error::FrameTooLarge {
        len: len as u64,
        max: max_frame_len,
    })?;
    dst.reserve(4 + len);
    dst.put_u32_le(len32);
    dst.put_u8(kind as u8);
    dst.put_u64_le(id);
    dst.put_slice(body);
    Ok(())
}

/// A frame's bytes, built from parts (the common path of the client and the server).
pub(crate) fn frame_bytes(
    kind: FrameKind,
    id: u64,
    body: &[u8],
    max_frame_len: usize,
) -> Result<Bytes, Error> {
    let mut dst = BytesMut::with_capacity(FRAME_HEADER_LEN + body.len());
    encode_parts(kind, id, body, &mut dst, max_frame_len)?;
    Ok(dst.freeze())
}

/// Decodes frames from a read buffer, resumably: `Ok(None)` until a whole frame is there.
///
/// It implements tokio-util's [`Decoder`](tokio_util::codec::Decoder) and
/// [`Encoder`](tokio_util::codec::Encoder), so it can drive a `Framed`; the crate's own
/// connections call it on their `BytesMut` read buffer directly. The framing is that of
/// tokio-util's `LengthDelimitedCodec` set to a 4-byte little-endian length with a maximum;
/// it is written out here so that the kind and id are parsed with it and its errors are typed
/// and name the claimed length.
///
/// # Example
///
/// ```
/// use bytes::BytesMut;
/// use kv_net::{Error, Frame, FrameCodec, FrameKind};
///
/// let codec = FrameCodec::new(1024);
/// let mut wire = BytesMut::new();
/// Frame::new(FrameKind::Request, 7, &b"body"[..]).encode(&mut wire, 1024)?;
/// let mut buf = BytesMut::from(&wire[..5]); // half a frame: not yet
/// assert_eq!(codec.decode_frame(&mut buf)?, None);
/// buf.extend_from_slice(&wire[5..]);
/// let frame = codec.decode_frame(&mut buf)?.expect("complete");
/// assert_eq!((frame.kind, frame.id, &frame.body[..]), (FrameKind::Request, 7, &b"body"[..]));
///
/// // A header claiming 4 GiB is refused before anything is reserved for it.
/// let mut evil = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 4][..]);
/// assert!(matches!(codec.decode_frame(&mut evil), Err(Error::FrameTooLarge { .. })));
/// # Ok::<(), kv_net::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl FrameCodec {
    /// A codec refusing frames longer than `max_frame_len` bytes (after the length field).
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: max_frame_len.max(FIXED_LEN),
        }
    }

    /// The limit in force.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The next frame in `src`, consuming its bytes, or `None` if it has not fully arrived
    /// (then `src` is reserved room for the rest, never more than the limit).
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`], [`Error::FrameTooShort`], [`Error::UnknownFrameKind`]. After an
    /// error the stream is out of sync: close the connection.
    pub fn decode_frame(&self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let Some(header) = src.get(..4) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(header);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max: self.max_frame_len,
            });
        }
        if len < FIXED_LEN {
            return Err(Error::FrameTooShort { len: len as u64 });
        }
        // The kind is checked as soon as it arrives, so garbage is refused early.
        if let Some(&kind) = src.get(4)
            && FrameKind::from_u8(kind).is_none()
        {
            return Err(Error::UnknownFrameKind { kind });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let mut frame = src.split_to(len);
        let kind_byte = frame.get_u8();
        let kind =
            FrameKind::from_u8(kind_byte).ok_or(Error::UnknownFrameKind { kind: kind_byte })?;
        let id = frame.get_u64_le();
        Ok(Some(Frame {
            kind,
            id,
            body: frame.freeze(),
        }))
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.decode_frame(src)
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        frame.encode(dst, self.max_frame_len)
    }
}

impl From<std::io::Error> for Error {
    /// tokio-util's `Framed` needs its codec's error to absorb I/O errors.
    fn from(source: std::io::Error) -> Self {
        Error::FramedIo(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds() -> impl Strategy<Value = FrameKind> {
        (1u8..=12).prop_map(|b| FrameKind::from_u8(b).unwrap())
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            frames in prop::collection::vec((kinds(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)), 1..8),
            split in 1usize..64,
        ) {
            let codec = FrameCodec::new(1024);
            let mut wire = BytesMut::new();
            let frames: Vec<Frame> = frames.into_iter().map(|(k, id, body)| Frame::new(k, id, body)).collect();
            for f in &frames {
                f.encode(&mut wire, 1024).unwrap();
            }
            // Fed in pieces, as reads arrive.
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(split) {
                buf.extend_from_slice(piece);
                while let Some(f) = codec.decode_frame(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(out, frames);
        }
    }

    #[test]
    fn a_huge_claimed_length_is_refused_without_reserving_it() {
        let codec = FrameCodec::new(1024 * 1024);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(&[4, 0, 0]);
        let err = codec.decode_frame(&mut buf).unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { len, max } if len == u64::from(u32::MAX) && max == 1024 * 1024)
        );
        assert!(
            buf.capacity() < 1024,
            "capacity {} grew for a claim",
            buf.capacity()
        );
    }

    #[test]
    fn an_incomplete_frame_reserves_at_most_the_limit() {
        let codec = FrameCodec::new(4096);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&4000u32.to_le_bytes());
        buf.extend_from_slice(&[4]);
        assert!(codec.decode_frame(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 2 * 4096, "capacity {}", buf.capacity());
    }

    #[test]
    fn short_lengths_and_unknown_kinds_are_refused() {
        let codec = FrameCodec::new(4096);
        let mut buf = BytesMut::from(&3u32.to_le_bytes()[..]);
        assert!(matches!(
            codec.decode_frame(&mut buf),
            Err(Error::FrameTooShort { len: 3 })
        ));
        let mut buf = BytesMut::from(&[9, 0, 0, 0, 200][..]);
        assert!(matches!(
            codec.decode_frame(&mut buf),
            Err(Error::UnknownFrameKind { kind: 200 })
        ));
    }

    #[test]
    fn a_body_over_the_limit_is_not_encoded() {
        let mut dst = BytesMut::new();
        let err = Frame::new(FrameKind::Request, 1, vec![0u8; 100])
            .encode(&mut dst, 50)
            .unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { len: 109, max: 50 }));
        assert!(dst.is_empty());
    }
}
