//! The parser's error type.

/// Why a byte stream is not valid RESP (or not a valid client command).
///
/// `Display` gives the text Redis 7 sends after `-ERR Protocol error: ` for the same input
/// (`src/networking.c`, `processInlineBuffer` and `processMultibulkBuffer`), so a server can
/// answer `-ERR Protocol error: {error}` and close the connection, byte-identical to Redis.
/// Variants Redis does not have (it never parses RESP3 from clients, and it skips a bulk's
/// two trailing bytes without looking at them) have messages in the same style.
///
/// After an error the stream is out of sync: the decoder that returned it must not be fed the
/// same buffer again (a server closes the connection, as Redis does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bulk length that is not a number, is negative (other than a RESP2 null, `$-1`, in a
    /// reply) or is above [`Limits::max_bulk_len`](crate::Limits::max_bulk_len).
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// An array (or map, set, push, attribute) length that is not a number, or is above
    /// [`Limits::max_array_len`](crate::Limits::max_array_len).
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// An element of a client command that is not a bulk string: clients send arrays of bulk
    /// strings only.
    #[error("expected '$', got '{}'", printable(*got))]
    ExpectedBulk {
        /// The byte found where `$` was expected.
        got: u8,
    },
    /// An inline command whose quotes do not close, or whose closing quote is followed by
    /// something other than a space.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// More than [`Limits::max_inline_len`](crate::Limits::max_inline_len) bytes without a
    /// newline at the start of an inline command.
    #[error("too big inline request")]
    InlineTooBig,
    /// More than [`Limits::max_inline_len`](crate::Limits::max_inline_len) bytes without a `\r`
    /// after a `*` that starts a command.
    #[error("too big mbulk count string")]
    MultibulkCountTooBig,
    /// More than [`Limits::max_inline_len`](crate::Limits::max_inline_len) bytes without a `\r`
    /// after a command's `$`.
    #[error("too big bulk count string")]
    BulkCountTooBig,
    /// A command of more than 10 arguments from a client that has not authenticated (Redis's
    /// limit while `requirepass` is set and the client has not sent `AUTH`).
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// An argument longer than 16384 bytes from a client that has not authenticated.
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// A `\r` not followed by `\n` where a line ends, or a bulk not followed by `\r\n`.
    #[error("invalid line terminator at byte {offset}")]
    InvalidTerminator {
        /// Offset of the offending byte in the buffer the decoder was given (a
        /// [`CommandDecoder`](crate::CommandDecoder) has consumed the command's complete
        /// arguments from it already).
        offset: usize,
    },
    /// A line of a reply frame longer than
    /// [`Limits::max_inline_len`](crate::Limits::max_inline_len) bytes without `\r\n`.
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit that was passed.
        limit: usize,
    },
    /// A command or frame that would span more than
    /// [`Limits::max_frame_len`](crate::Limits::max_frame_len) bytes. Redis closes such a client
    /// without a reply (`client-query-buffer-limit`); this text is this crate's.
    #[error("command or frame longer than {limit} bytes")]
    FrameTooBig {
        /// The limit that was passed.
        limit: usize,
    },
    /// A frame that starts with a byte that is no RESP2 or RESP3 type.
    #[error("unknown frame type '{}'", printable(*byte))]
    UnknownType {
        /// The first byte of the frame.
        byte: u8,
    },
    /// Aggregates nested deeper than [`Limits::max_depth`](crate::Limits::max_depth).
    #[error("nesting deeper than {limit} aggregates")]
    TooDeep {
        /// The limit that was passed.
        limit: usize,
    },
    /// An integer frame (`:`) that is not a signed 64-bit decimal.
    #[error("invalid integer")]
    InvalidInteger,
    /// A double frame (`,`) that is not a decimal, `inf`, `-inf` or `nan`.
    #[error("invalid double")]
    InvalidDouble,
    /// A boolean frame (`#`) other than `#t` or `#f`.
    #[error("invalid boolean")]
    InvalidBoolean,
    /// A null frame (`_`) with content.
    #[error("invalid null")]
    InvalidNull,
    /// A big number frame (`(`) that is not an optionally signed string of digits.
    #[error("invalid big number")]
    InvalidBigNumber,
    /// A verbatim string frame (`=`) shorter than its `xxx:` format prefix.
    #[error("invalid verbatim string")]
    InvalidVerbatim,
    /// A RESP3 streamed string or aggregate (`$?`, `*?`, ...): Redis never sends them and this
    /// parser does not accept them.
    #[error("streamed strings and aggregates are not supported")]
    Streamed,
}

/// The byte as Redis's `%c` prints it, with `\r` and `\n` mapped to spaces as Redis maps them
/// in every error reply (a newline in an error would break the protocol).
fn printable(byte: u8) -> char {
    match byte {
        b'\r' | b'\n' => ' ',
        b => char::from(b),
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_redis() {
        assert_eq!(Error::InvalidBulkLength.to_string(), "invalid bulk length");
        assert_eq!(
            Error::InvalidMultibulkLength.to_string(),
            "invalid multibulk length"
        );
        assert_eq!(
            Error::ExpectedBulk { got: b'x' }.to_string(),
            "expected '$', got 'x'"
        );
        assert_eq!(
            Error::ExpectedBulk { got: b'\r' }.to_string(),
            "expected '$', got ' '"
        );
        assert_eq!(
            Error::UnbalancedQuotes.to_string(),
            "unbalanced quotes in request"
        );
        assert_eq!(Error::InlineTooBig.to_string(), "too big inline request");
        assert_eq!(
            Error::MultibulkCountTooBig.to_string(),
            "too big mbulk count string"
        );
        assert_eq!(
            Error::BulkCountTooBig.to_string(),
            "too big bulk count string"
        );
    }
}
