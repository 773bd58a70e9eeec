//! The server's fast path: client commands as argument slices of the read buffer.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::inline::split_inline;
use crate::item::parse_len;
use crate::limits::Limits;
use crate::line::{Line, find_line};
use crate::number::parse_i64_strict;

/// Arguments Redis accepts in one command before the client authenticates.
const UNAUTHENTICATED_MAX_ARGS: i64 = 10;
/// Bytes Redis accepts in one argument before the client authenticates.
const UNAUTHENTICATED_MAX_BULK: usize = 16384;
/// Argument slots reserved up front for a command, whatever its header claims (Redis reserves
/// at most 1024); the vector grows as arguments actually arrive.
const PREALLOCATED_ARGS: usize = 16;

/// A client command: its arguments, the first being the command's name.
///
/// Never empty: empty commands (`*0\r\n`, `*-1\r\n`, a blank inline line) are skipped by the
/// decoder, as Redis skips them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    args: Vec<Bytes>,
}

impl Command {
    /// The command's name as sent (`b"get"`, `b"GET"`): compare case-insensitively.
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[][..], |a| &a[..])
    }

    /// All arguments, the name first.
    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    /// The arguments, the name first, by value.
    pub fn into_args(self) -> Vec<Bytes> {
        self.args
    }

    /// The number of arguments, the name included (Redis's `argc`); at least 1.
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.args.len()
    }
}

/// Decodes client commands from a connection's read buffer, as Redis's
/// `processInputBuffer` does.
///
/// A buffer starting with `*` holds a RESP array of bulk strings (what every client library
/// sends); anything else is an inline command, one line split on spaces with quotes (what a
/// person types into telnet). Arguments are split off the buffer without copying
/// ([`BytesMut::split_to`] then [`BytesMut::freeze`]): each is a [`Bytes`] sharing the read
/// buffer's memory (quoted inline arguments, which need unescaping, are the exception).
///
/// The decoder consumes a command's bytes as its arguments complete and keeps the arguments
/// decoded so far, as Redis keeps `argv` and `multibulklen` on the client: each byte is
/// examined once however a command is split across reads, and a bulk whose bytes have not all
/// arrived costs only a re-parse of its short header. Nothing is allocated for a claimed length:
/// the argument vector starts at a few slots and grows as arguments arrive.
///
/// Errors carry Redis 7's protocol error texts and are detected where Redis detects them; a
/// server replies `-ERR Protocol error: {error}` and closes the connection.
///
/// ```
/// use bytes::BytesMut;
/// use kv_resp::CommandDecoder;
///
/// let mut decoder = CommandDecoder::new();
/// let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r\nEC"[..]);
/// let get = decoder.decode(&mut buf)?.expect("complete");
/// assert_eq!(get.args(), [&b"GET"[..], &b"k"[..]]);
/// let ping = decoder.decode(&mut buf)?.expect("complete");
/// assert_eq!(ping.name(), b"PING");
/// assert_eq!(decoder.decode(&mut buf)?, None); // the third is incomplete
/// # Ok::<(), kv_resp::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CommandDecoder {
    limits: Limits,
    authenticated: bool,
    /// Arguments of the command being decoded.
    args: Vec<Bytes>,
    /// Bulk strings still expected by the command being decoded; 0 between commands.
    remaining: usize,
    /// Bytes at the buffer's front already searched for the current line's end.
    scanned: usize,
    /// Bytes of the command being decoded consumed so far (checked against
    /// [`Limits::max_frame_len`]).
    consumed: usize,
}

impl Default for CommandDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandDecoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::new())
    }

    /// A decoder with the given limits (the depth limit does not apply: commands are flat).
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            authenticated: true,
            args: Vec::new(),
            remaining: 0,
            scanned: 0,
            consumed: 0,
        }
    }

    /// Applies Redis's limits for clients that must authenticate and have not yet: at most 10
    /// arguments ([`Error::UnauthenticatedMultibulkLength`]) of at most 16384 bytes
    /// ([`Error::UnauthenticatedBulkLength`]). Decoders start authenticated.
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.authenticated = authenticated;
    }

    /// Whether a command is partly decoded (some of its bytes were consumed from the buffer).
    pub fn is_partial(&self) -> bool {
        self.remaining > 0
    }

    /// Decodes the next command from the front of `buf`, consuming its bytes.
    ///
    /// Returns `Ok(None)` when no complete command is left: append what the connection reads
    /// next to the same buffer and call again. Bytes of a partial command may have been
    /// consumed; the decoder holds its arguments.
    ///
    /// # Errors
    ///
    /// [`Error`] on malformed input or a passed limit; the connection must be closed (the
    /// decoder's state is reset, but the stream is out of sync).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>> {
        let result = self.decode_inner(buf);
        if result.is_err() {
            self.args.clear();
            self.remaining = 0;
            self.scanned = 0;
            self.consumed = 0;
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Command>> {
        loop {
            if self.remaining == 0 {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {
                        if !self.start_multibulk(buf)? {
                            return Ok(None);
                        }
                        // An empty command is skipped, as in Redis.
                        if self.remaining == 0 {
                            continue;
                        }
                    }
                    Some(_) => match self.inline(buf)? {
                        Inline::Command(cmd) => return Ok(Some(cmd)),
                        Inline::Blank => continue,
                        Inline::Incomplete => return Ok(None),
                    },
                }
            }
            while self.remaining > 0 {
                if !self.bulk(buf)? {
                    return Ok(None);
                }
            }
            return Ok(Some(Command {
                args: std::mem::take(&mut self.args),
            }));
        }
    }

    /// Reads a `*<count>\r\n` header; false if it is not complete yet.
    fn start_multibulk(&mut self, buf: &mut BytesMut) -> Result<bool> {
        let cr = match find_line(buf, &mut self.scanned) {
            Err(offset) => return Err(Error::InvalidTerminator { offset }),
            Ok(Line::Incomplete) if buf.len() > self.limits.get_max_inline_len() => {
                return Err(Error::MultibulkCountTooBig);
            }
            Ok(Line::Incomplete) => return Ok(false),
            Ok(Line::Complete { cr }) => cr,
        };
        let count = parse_i64_strict(&buf[1..cr]).ok_or(Error::InvalidMultibulkLength)?;
        if usize::try_from(count).is_ok_and(|n| n > self.limits.get_max_array_len()) {
            return Err(Error::InvalidMultibulkLength);
        }
        if !self.authenticated && count > UNAUTHENTICATED_MAX_ARGS {
            return Err(Error::UnauthenticatedMultibulkLength);
        }
        buf.advance(cr + 2);
        self.scanned = 0;
        self.consumed = cr + 2;
        // Redis treats a count <= 0 as an empty command.
        self.remaining = usize::try_from(count).unwrap_or(0);
        if self.remaining > 0 {
            self.args = Vec::with_capacity(self.remaining.min(PREALLOCATED_ARGS));
        }
        Ok(true)
    }

    /// Reads one `$<len>\r\n<data>\r\n` argument; false if it is not complete yet.
    fn bulk(&mut self, buf: &mut BytesMut) -> Result<bool> {
        let cr = match find_line(buf, &mut self.scanned) {
            Err(offset) => return Err(Error::InvalidTerminator { offset }),
            Ok(Line::Incomplete) if buf.len() > self.limits.get_max_inline_len() => {
                return Err(Error::BulkCountTooBig);
            }
            Ok(Line::Incomplete) => return Ok(false),
            Ok(Line::Complete { cr }) => cr,
        };
        match buf.first() {
            Some(b'$') => {}
            Some(&got) => return Err(Error::ExpectedBulk { got }),
            None => return Ok(false),
        }
        let len = parse_len(&buf[1..cr], self.limits.get_max_bulk_len())
            .ok_or(Error::InvalidBulkLength)?;
        if !self.authenticated && len > UNAUTHENTICATED_MAX_BULK {
            return Err(Error::UnauthenticatedBulkLength);
        }
        let data = cr + 2;
        let end = data.saturating_add(len).saturating_add(2);
        if self.consumed.saturating_add(end) > self.limits.get_max_frame_len() {
            return Err(Error::FrameTooBig {
                limit: self.limits.get_max_frame_len(),
            });
        }
        if buf.len() < end {
            // The header is parsed again on the next call: a few bytes, once per read.
            return Ok(false);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(Error::InvalidTerminator { offset: end - 2 });
        }
        buf.advance(data);
        self.args.push(buf.split_to(len).freeze());
        buf.advance(2);
        self.scanned = 0;
        self.consumed += end;
        self.remaining -= 1;
        Ok(true)
    }

    /// Reads one inline command.
    fn inline(&mut self, buf: &mut BytesMut) -> Result<Inline> {
        let from = self.scanned.min(buf.len());
        let Some(i) = memchr::memchr(b'\n', &buf[from..]) else {
            self.scanned = buf.len();
            if buf.len() > self.limits.get_max_inline_len() {
                return Err(Error::InlineTooBig);
            }
            return Ok(Inline::Incomplete);
        };
        let newline = from + i;
        if newline >= self.limits.get_max_frame_len() {
            return Err(Error::FrameTooBig {
                limit: self.limits.get_max_frame_len(),
            });
        }
        let line = buf.split_to(newline + 1).freeze();
        self.scanned = 0;
        let content = if newline > 0 && line[newline - 1] == b'\r' {
            line.slice(..newline - 1)
        } else {
            line.slice(..newline)
        };
        let mut args = Vec::new();
        split_inline(&content, &mut args)?;
        if args.is_empty() {
            return Ok(Inline::Blank);
        }
        if !self.authenticated && args.len() > UNAUTHENTICATED_MAX_ARGS as usize {
            // Redis does not check inline commands' sizes; neither does this decoder's
            // authenticated path, but an unauthenticated one gets the multibulk limit.
            return Err(Error::UnauthenticatedMultibulkLength);
        }
        Ok(Inline::Command(Command { args }))
    }
}

/// What reading an inline line gave.
enum Inline {
    Command(Command),
    /// A line with no arguments, consumed and skipped.
    Blank,
    /// No newline yet.
    Incomplete,
}

/// Appends `args` to `out` as a client sends a command: an array of bulk strings.
///
/// ```
/// let mut out = bytes::BytesMut::new();
/// kv_resp::encode_command(&mut out, [&b"GET"[..], b"k"]);
/// assert_eq!(&out[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
/// ```
pub fn encode_command<I, A>(out: &mut BytesMut, args: I)
where
    I: IntoIterator<Item = A>,
    I::IntoIter: ExactSizeIterator,
    A: AsRef<[u8]>,
{
    let args = args.into_iter();
    crate::encoder::header(out, b'*', args.len());
    for a in args {
        crate::encoder::bulk(out, a.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>> {
        let mut d = CommandDecoder::new();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(c) = d.decode(&mut buf)? {
            out.push(c.into_args());
        }
        Ok(out)
    }

    fn cmd(args: &[&str]) -> Vec<Bytes> {
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn decodes_pipelined_multibulk_and_inline() {
        let got = decode_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\nget k\n").unwrap();
        assert_eq!(
            got,
            vec![cmd(&["SET", "k", ""]), cmd(&["PING"]), cmd(&["get", "k"])]
        );
    }

    #[test]
    fn empty_commands_are_skipped() {
        let got = decode_all(b"*0\r\n*-1\r\n\r\n   \n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(got, vec![cmd(&["PING"])]);
    }

    #[test]
    fn arguments_share_the_read_buffer() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let c = CommandDecoder::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(c.args()[0].as_ptr() as usize, base + 8);
        assert_eq!(c.args()[1].as_ptr() as usize, base + 17);
    }

    #[test]
    fn half_a_command_waits_for_the_rest() {
        let input = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        for split in 0..input.len() {
            let mut d = CommandDecoder::new();
            let mut buf = BytesMut::from(&input[..split]);
            assert_eq!(d.decode(&mut buf).unwrap(), None, "split at {split}");
            buf.extend_from_slice(&input[split..]);
            assert_eq!(
                d.decode(&mut buf).unwrap().unwrap().into_args(),
                cmd(&["GET", "key"])
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn errors_match_redis() {
        let cases: [(&[u8], Error); 9] = [
            (b"*1\r\n+PING\r\n", Error::ExpectedBulk { got: b'+' }),
            (b"*1\r\n\r\n", Error::ExpectedBulk { got: b'\r' }),
            (b"*x\r\n", Error::InvalidMultibulkLength),
            (b"*1048577\r\n", Error::InvalidMultibulkLength),
            (b"*1\r\n$-1\r\n", Error::InvalidBulkLength),
            (b"*1\r\n$x\r\n", Error::InvalidBulkLength),
            (b"*1\r\n$33554433\r\n", Error::InvalidBulkLength),
            (b"SET \"abc\r\n", Error::UnbalancedQuotes),
            (
                b"*1\r\n$1\r\nab\r\n",
                Error::InvalidTerminator { offset: 5 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn unterminated_lines_past_the_inline_limit_are_errors() {
        let limits = Limits::new().max_inline_len(16);
        let run = |input: &[u8]| {
            let mut buf = BytesMut::from(input);
            CommandDecoder::with_limits(limits).decode(&mut buf)
        };
        assert_eq!(run(&[b'a'; 17]), Err(Error::InlineTooBig));
        assert_eq!(run(&[b'a'; 16]), Ok(None));
        assert_eq!(run(b"*11111111111111111"), Err(Error::MultibulkCountTooBig));
        assert_eq!(
            run(b"*1\r\n$1111111111111111111"),
            Err(Error::BulkCountTooBig)
        );
    }

    #[test]
    fn a_command_longer_than_the_frame_limit_is_refused_at_the_header() {
        let limits = Limits::new().max_frame_len(100).max_bulk_len(60);
        let mut d = CommandDecoder::with_limits(limits);
        // 4 + 9 + 50+2 bytes so far, then a bulk that would end past 100 bytes.
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$50\r\n"[..]);
        buf.extend_from_slice(&[b'x'; 50]);
        buf.extend_from_slice(b"\r\n$30\r\n");
        assert_eq!(d.decode(&mut buf), Err(Error::FrameTooBig { limit: 100 }));
        // The same within the limit.
        let mut d = CommandDecoder::with_limits(limits.max_frame_len(200));
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$50\r\n"[..]);
        buf.extend_from_slice(&[b'x'; 50]);
        buf.extend_from_slice(b"\r\n$30\r\n");
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn unauthenticated_clients_get_redis_limits() {
        let mut d = CommandDecoder::new();
        d.set_authenticated(false);
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(Error::UnauthenticatedMultibulkLength)
        );
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Err(Error::UnauthenticatedBulkLength));
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$4\r\npass\r\n"[..]);
        assert!(d.decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn a_claimed_billion_arguments_allocates_a_few_slots() {
        let limits = Limits::new().max_array_len(usize::MAX);
        let mut d = CommandDecoder::with_limits(limits);
        let mut buf = BytesMut::from(&b"*1000000000\r\n$3\r\nSET\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(d.args.capacity() <= PREALLOCATED_ARGS);
        assert_eq!(d.remaining, 1_000_000_000 - 1);
    }

    #[test]
    fn encode_command_round_trips() {
        let mut out = BytesMut::new();
        encode_command(&mut out, [&b"SET"[..], b"k\r\n", b""]);
        assert_eq!(decode_all(&out).unwrap(), vec![cmd(&["SET", "k\r\n", ""])]);
    }
}
