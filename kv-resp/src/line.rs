//! Finding the end of a header line without scanning the same bytes twice.

/// Where a `\r\n`-terminated line starting at the beginning of a buffer ends.
pub(crate) enum Line {
    /// The line's content is `buf[..cr]`; the next item starts at `cr + 2`.
    Complete { cr: usize },
    /// No `\r` in the buffer yet, or a `\r` that is the buffer's last byte.
    Incomplete,
}

/// Searches `buf` for the `\r` ending its first line, starting at `*scanned` (bytes already
/// known to hold no `\r`) and advancing `*scanned` past what it searched, so that a client
/// dribbling a long line byte by byte costs linear, not quadratic, work.
///
/// A `\r` must be followed by `\n`: anything else is an invalid terminator at `cr + 1`.
pub(crate) fn find_line(buf: &[u8], scanned: &mut usize) -> Result<Line, usize> {
    let from = (*scanned).min(buf.len());
    match memchr::memchr(b'\r', &buf[from..]) {
        None => {
            *scanned = buf.len();
            Ok(Line::Incomplete)
        }
        Some(i) => {
            let cr = from + i;
            // Keep the `\r` unscanned: it is the answer once its `\n` arrives.
            *scanned = cr;
            match buf.get(cr + 1) {
                None => Ok(Line::Incomplete),
                Some(b'\n') => Ok(Line::Complete { cr }),
                Some(_) => Err(cr + 1),
            }
        }
    }
}
