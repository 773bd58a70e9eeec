//! Malformed and hostile input: garbage, unterminated bulks, negative and oversized lengths, a
//! billion claimed elements, nesting past the limit, half a command. Every case is a typed
//! error or "incomplete", never a panic, and nothing is allocated for a length before its
//! bytes arrive (checked with a counting global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use kv_resp::{CommandDecoder, Error, FrameDecoder, Limits};
use proptest::prelude::*;

/// Counts bytes allocated by the current thread while `COUNTING` is set on it.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only thread-locals with
// const initialisers, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we forward.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`, as forwarded above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size.saturating_sub(layout.size()));
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which we forward.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(bytes: usize) {
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCATED.try_with(|a| a.set(a.get() + bytes));
        }
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated by `f` on this thread.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATED.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATED.with(Cell::get))
}

fn command(input: &[u8]) -> Result<Option<Vec<Vec<u8>>>, Error> {
    let mut buf = BytesMut::from(input);
    CommandDecoder::new()
        .decode(&mut buf)
        .map(|c| c.map(|c| c.into_args().into_iter().map(|a| a.to_vec()).collect()))
}

fn frame(input: &[u8]) -> Result<Option<kv_resp::Frame>, Error> {
    let mut buf = BytesMut::from(input);
    FrameDecoder::new().decode(&mut buf)
}

#[test]
fn garbage_after_a_multibulk_star_is_an_invalid_length() {
    assert_eq!(
        command(b"*\x00\xff\x13garbage\r\n"),
        Err(Error::InvalidMultibulkLength)
    );
    assert_eq!(
        frame(b"\x00\x01\x02\r\n"),
        Err(Error::UnknownType { byte: 0 })
    );
}

#[test]
fn binary_garbage_is_an_inline_command_as_in_redis() {
    // Redis reads anything not starting with '*' as an inline command.
    assert_eq!(
        command(b"\x01\x02 \xff\r\n"),
        Ok(Some(vec![b"\x01\x02".to_vec(), b"\xff".to_vec()]))
    );
}

#[test]
fn an_unterminated_bulk_is_incomplete_and_costs_no_allocation() {
    let mut decoder = CommandDecoder::new();
    let mut buf = BytesMut::with_capacity(4096);
    buf.extend_from_slice(b"*2\r\n$3\r\nSET\r\n$16777216\r\nonly a few bytes");
    let (result, bytes) = allocated_by(|| decoder.decode(&mut buf));
    assert_eq!(result, Ok(None));
    // The argument vector's few slots and the buffer's shared header, nothing sized by the
    // claimed 16 MiB.
    assert!(bytes < 1024, "allocated {bytes} bytes");
    assert!(decoder.is_partial());
}

#[test]
fn a_claimed_huge_bulk_is_refused_before_its_bytes() {
    assert_eq!(
        command(b"*1\r\n$536870912\r\n"),
        Err(Error::InvalidBulkLength)
    );
    assert_eq!(frame(b"$536870912\r\n"), Err(Error::InvalidBulkLength));
    // Just within the default limit: incomplete, not an error.
    let max = kv_resp::DEFAULT_MAX_BULK_LEN;
    assert_eq!(command(format!("*1\r\n${max}\r\n").as_bytes()), Ok(None));
    assert_eq!(
        command(format!("*1\r\n${}\r\n", max + 1).as_bytes()),
        Err(Error::InvalidBulkLength)
    );
}

#[test]
fn negative_bulk_lengths_are_invalid() {
    assert_eq!(command(b"*1\r\n$-1\r\n"), Err(Error::InvalidBulkLength));
    assert_eq!(command(b"*1\r\n$-100\r\n"), Err(Error::InvalidBulkLength));
    assert_eq!(frame(b"$-2\r\n"), Err(Error::InvalidBulkLength));
}

#[test]
fn a_billion_element_header_allocates_nothing_for_the_claim() {
    let limits = Limits::new().max_array_len(2_000_000_000);
    let input = b"*1000000000\r\n$3\r\nSET\r\n$1\r\nk\r\n";

    let mut decoder = CommandDecoder::with_limits(limits);
    let mut buf = BytesMut::from(&input[..]);
    let (result, bytes) = allocated_by(|| decoder.decode(&mut buf));
    assert_eq!(result, Ok(None));
    assert!(bytes < 1024, "command decoder allocated {bytes} bytes");

    let mut decoder = FrameDecoder::with_limits(limits);
    let mut buf = BytesMut::from(&input[..]);
    let (result, bytes) = allocated_by(|| decoder.decode(&mut buf));
    assert_eq!(result, Ok(None));
    assert!(bytes < 1024, "frame decoder allocated {bytes} bytes");

    // With the default limits the claim itself is refused.
    assert_eq!(command(input), Err(Error::InvalidMultibulkLength));
    assert_eq!(frame(input), Err(Error::InvalidMultibulkLength));
}

#[test]
fn nesting_past_the_limit_is_an_error() {
    let depth = kv_resp::DEFAULT_MAX_DEPTH;
    let mut ok = b"*1\r\n".repeat(depth);
    ok.extend_from_slice(b":1\r\n");
    assert!(matches!(frame(&ok), Ok(Some(_))));
    let mut deep = b"*1\r\n".repeat(depth + 1);
    deep.extend_from_slice(b":1\r\n");
    assert_eq!(frame(&deep), Err(Error::TooDeep { limit: depth }));
    // Commands are flat: a nested array is not a bulk.
    assert_eq!(
        command(b"*1\r\n*1\r\n"),
        Err(Error::ExpectedBulk { got: b'*' })
    );
}

#[test]
fn half_a_command_stays_incomplete_at_every_cut() {
    let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    for cut in 0..input.len() {
        assert_eq!(command(&input[..cut]), Ok(None), "cut at {cut}");
        assert!(matches!(frame(&input[..cut]), Ok(None)), "cut at {cut}");
    }
    assert!(command(b"SET k v").unwrap().is_none());
}

#[test]
fn a_bulk_without_its_terminator_is_an_error() {
    assert_eq!(
        command(b"*1\r\n$4\r\nPINGxx"),
        Err(Error::InvalidTerminator { offset: 8 })
    );
    assert_eq!(
        frame(b"$4\r\nPINGxx"),
        Err(Error::InvalidTerminator { offset: 8 })
    );
}

#[test]
fn redis_error_texts() {
    let err = |input: &[u8]| command(input).unwrap_err().to_string();
    assert_eq!(err(b"*1\r\n$x\r\n"), "invalid bulk length");
    assert_eq!(err(b"*-x\r\n"), "invalid multibulk length");
    assert_eq!(err(b"*1\r\nx\r\n"), "expected '$', got 'x'");
    assert_eq!(err(b"GET \"k\r\n"), "unbalanced quotes in request");
    assert_eq!(err(&vec![b'a'; 64 * 1024 + 1]), "too big inline request");
    let mut long_count = b"*".to_vec();
    long_count.extend(vec![b'1'; 64 * 1024]);
    assert_eq!(err(&long_count), "too big mbulk count string");
    let mut long_bulk = b"*1\r\n$".to_vec();
    long_bulk.extend(vec![b'1'; 64 * 1024]);
    assert_eq!(err(&long_bulk), "too big bulk count string");
}

#[test]
fn a_header_dribbled_byte_by_byte_is_scanned_once() {
    // 60 KiB of spaces then a newline, one byte per read: each call searches only the new
    // byte, so this takes milliseconds; a re-scan would be 1.8 G byte comparisons.
    let mut decoder = CommandDecoder::new();
    let mut buf = BytesMut::new();
    for _ in 0..60 * 1024 {
        buf.extend_from_slice(b" ");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }
    buf.extend_from_slice(b"PING\n");
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().name(), b"PING");
}

/// Pieces of protocol that random streams are made of.
const PIECES: &[&[u8]] = &[
    b"*", b"$", b"%", b"|", b"~", b">", b"=", b"!", b":", b",", b"#", b"_", b"(", b"+", b"-",
    b"\r\n", b"\r", b"1", b"0", b"-1", b"2", b"\"", b"'", b" ", b"\\x4", b"t", b"txt:",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&input[..]);
        let mut d = CommandDecoder::new();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let mut buf = BytesMut::from(&input[..]);
        let mut d = FrameDecoder::new();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }

    #[test]
    fn random_protocol_like_bytes_never_panic(
        input in proptest::collection::vec(
            proptest::sample::select(PIECES),
            0..64,
        )
    ) {
        let input = input.concat();
        let mut buf = BytesMut::from(&input[..]);
        let mut d = CommandDecoder::new();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let mut buf = BytesMut::from(&input[..]);
        let mut d = FrameDecoder::new();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }
}
