//! The Redis protocol without I/O: a streaming parser of RESP2 and RESP3 frames and of inline
//! commands, and an encoder for both versions.
//!
//! - [`CommandDecoder`] is what a server needs: it turns a connection's read buffer into client
//!   [`Command`]s (arrays of bulk strings, or inline commands typed into telnet, quotes and
//!   escapes included), each argument a [`bytes::Bytes`] slice of the read buffer, not a copy.
//!   Its errors are Redis 7's protocol errors, with the same texts.
//! - [`FrameDecoder`] decodes any [`Frame`] of either version (what a client reads): maps,
//!   sets, doubles, attributes and the rest of RESP3, nested up to a depth limit.
//! - [`Encoder`] writes frames, or replies piece by piece, for a [`Protocol`]; RESP2 clients
//!   get RESP3 types downgraded as Redis downgrades them (map to flat array, null to `$-1` or
//!   `*-1`, double to bulk string, boolean to integer).
//! - [`Limits`] bound bulk length, array length, nesting depth, header line length and a whole
//!   command's or frame's length, with defaults fitted to the store (values up to 16 MiB, keys
//!   up to 64 KiB).
//!
//! The crate has no I/O and no async: it works on [`bytes::BytesMut`] buffers that the caller
//! fills, and never panics on input (malformed input is an [`Error`]).
//!
//! # The design decision that matters: resumable decoding, nothing allocated for a claim
//!
//! A decoder answers "incomplete" (`Ok(None)`) until a whole command or frame is in the
//! buffer, and keeps what it has learnt between calls, so each byte is examined once however
//! the input is split into reads.
//!
//! Two known designs were weighed. mini-redis checks a whole frame from its first byte on
//! every read (`Frame::check`, then `Frame::parse`): simple and stateless, but a pipelined
//! batch or a large array arriving in many reads is re-scanned each time, quadratic in the
//! number of reads. Redis keeps parsing state on the client (`multibulklen`, `bulklen`, the
//! `argv` built so far, `qb_pos`) and resumes where it stopped. Both skip a bulk's body by its
//! length instead of scanning it, so a large bulk is never quadratic in either: what matters is
//! many elements, and a long header line dribbled byte by byte.
//!
//! This crate resumes, like Redis:
//!
//! - [`CommandDecoder`] consumes each argument from the buffer as soon as it is complete
//!   (`split_to` + `freeze`: zero-copy) and holds the arguments so far and the count still
//!   expected. A bulk whose body has not fully arrived is left in the buffer and its header
//!   (a dozen bytes) is parsed again on the next call; that is the only repeated work.
//! - [`FrameDecoder`] cannot hand out parts of a frame before the frame is complete, so it
//!   keeps a validated position and one remaining-children counter per open aggregate, and
//!   builds the frame in one pass once the last byte is there.
//! - Both remember how far they have searched the current line for its `\r`, so a header
//!   line sent a byte at a time is linear too.
//!
//! A claimed length allocates nothing: a bulk of 512 MB or an array of a billion elements is
//! compared with the [`Limits`] and with the bytes present, and vectors are sized from
//! elements that have arrived (a command's argument vector starts at 16 slots, as Redis's
//! starts at `min(count, 1024)`). A caller may `reserve` read-buffer space as it likes, but
//! should cap it rather than trust a header: the parser does not suggest sizes.
//!
//! Anchors: Redis's `src/networking.c` (`processInlineBuffer`, `processMultibulkBuffer`: the
//! state kept per client, the error texts, the inline quoting of `sdssplitargs`,
//! `PROTO_INLINE_MAX_SIZE`) and its reply functions (`addReplyNull`, `addReplyDouble`, ...:
//! the RESP2 downgrades); mini-redis's `frame.rs` and `connection.rs` (the `BytesMut` read
//! buffer, and the re-scan this design avoids); the RESP3 specification.
//!
//! # Example
//!
//! A server's read path: decode every complete command in the buffer, answer each into one
//! output buffer, written to the socket once for the whole pipelined batch.
//!
//! ```
//! use bytes::BytesMut;
//! use kv_resp::{CommandDecoder, Encoder, Protocol};
//!
//! let mut decoder = CommandDecoder::new();
//! let encoder = Encoder::new(Protocol::Resp2);
//! let mut read_buf = BytesMut::new();
//! let mut replies = BytesMut::new();
//!
//! // Two reads: a pipelined SET and GET split in the middle of the GET.
//! for chunk in [&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nG"[..], b"ET\r\n$1\r\nk\r\n"] {
//!     read_buf.extend_from_slice(chunk);
//!     while let Some(cmd) = decoder.decode(&mut read_buf)? {
//!         match cmd.name().to_ascii_uppercase().as_slice() {
//!             b"SET" => encoder.simple(&mut replies, b"OK"),
//!             b"GET" => encoder.bulk(&mut replies, b"v"),
//!             _ => encoder.error(&mut replies, b"ERR unknown command"),
//!         }
//!     }
//! }
//! assert_eq!(&replies[..], b"+OK\r\n$1\r\nv\r\n");
//!
//! // Malformed input: reply as Redis does, then close the connection.
//! let mut bad = BytesMut::from(&b"*1\r\n$-5\r\n"[..]);
//! let err = CommandDecoder::new().decode(&mut bad).unwrap_err();
//! assert_eq!(format!("-ERR Protocol error: {err}"), "-ERR Protocol error: invalid bulk length");
//! # Ok::<(), kv_resp::Error>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod command;
mod decoder;
mod encoder;
mod error;
mod frame;
mod inline;
mod item;
mod limits;
mod line;
mod number;

pub use command::{Command, CommandDecoder, encode_command};
pub use decoder::FrameDecoder;
pub use encoder::Encoder;
pub use error::{Error, Result};
pub use frame::{Frame, Protocol};
pub use limits::{
    DEFAULT_MAX_ARRAY_LEN, DEFAULT_MAX_BULK_LEN, DEFAULT_MAX_DEPTH, DEFAULT_MAX_INLINE_LEN, Limits,
};

/// Compiles and runs the README's example as a doctest, so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
