//! Limits on what the parser accepts.

/// Default [`Limits::max_bulk_len`]: 32 MiB, twice the store's largest value (16 MiB), so a
/// value a little over the store's limit is still a well-formed command the server can refuse
/// with an ordinary error while the connection stays usable. Redis's `proto-max-bulk-len` is
/// 512 MB.
pub const DEFAULT_MAX_BULK_LEN: usize = 32 << 20;
/// Default [`Limits::max_array_len`]: 1 Mi elements (an `MSET` of half a million pairs).
/// Redis allows up to `INT_MAX`.
pub const DEFAULT_MAX_ARRAY_LEN: usize = 1 << 20;
/// Default [`Limits::max_depth`]: 32 nested aggregates (Redis's own replies nest at most 7
/// deep, in `COMMAND DOCS`).
pub const DEFAULT_MAX_DEPTH: usize = 32;
/// Default [`Limits::max_inline_len`]: 64 KiB, Redis's `PROTO_INLINE_MAX_SIZE`.
pub const DEFAULT_MAX_INLINE_LEN: usize = 64 << 10;
/// Default [`Limits::max_frame_len`]: 256 MiB, sixteen values of the store's largest size in
/// one command (Redis bounds a client's whole query buffer at 1 GB, `client-query-buffer-limit`).
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 << 20;

/// Limits on bulk length, array length, nesting depth and line length.
///
/// A claimed length is checked against these limits as soon as its header line is complete,
/// before any byte of its content arrives; no decoder allocates for a claimed length in any
/// case (see the crate docs), so the limits bound what a client can make the server *buffer*,
/// not what a header can make it allocate.
///
/// ```
/// use kv_resp::Limits;
///
/// let limits = Limits::new().max_bulk_len(1 << 20).max_depth(8);
/// assert_eq!(limits.get_max_bulk_len(), 1 << 20);
/// assert_eq!(limits.get_max_array_len(), kv_resp::DEFAULT_MAX_ARRAY_LEN);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_bulk_len: usize,
    max_array_len: usize,
    max_depth: usize,
    max_inline_len: usize,
    max_frame_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

impl Limits {
    /// The defaults: [`DEFAULT_MAX_BULK_LEN`], [`DEFAULT_MAX_ARRAY_LEN`],
    /// [`DEFAULT_MAX_DEPTH`], [`DEFAULT_MAX_INLINE_LEN`], [`DEFAULT_MAX_FRAME_LEN`].
    pub const fn new() -> Self {
        Self {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_array_len: DEFAULT_MAX_ARRAY_LEN,
            max_depth: DEFAULT_MAX_DEPTH,
            max_inline_len: DEFAULT_MAX_INLINE_LEN,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// The largest bulk string (or bulk error, verbatim string) accepted, in bytes; a longer
    /// one is [`Error::InvalidBulkLength`](crate::Error::InvalidBulkLength), as in Redis.
    pub const fn max_bulk_len(mut self, bytes: usize) -> Self {
        self.max_bulk_len = bytes;
        self
    }

    /// The most elements an array, set or push may claim (pairs for a map or attribute); more
    /// is [`Error::InvalidMultibulkLength`](crate::Error::InvalidMultibulkLength).
    pub const fn max_array_len(mut self, elements: usize) -> Self {
        self.max_array_len = elements;
        self
    }

    /// The deepest nesting of aggregates in a frame (a flat array is depth 1); deeper is
    /// [`Error::TooDeep`](crate::Error::TooDeep). Client commands are always depth 1.
    pub const fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// The most bytes buffered without finding the end of an inline command or of a header
    /// line (Redis's `PROTO_INLINE_MAX_SIZE`).
    pub const fn max_inline_len(mut self, bytes: usize) -> Self {
        self.max_inline_len = bytes;
        self
    }

    /// The most bytes one command or frame may span, all its elements included; more is
    /// [`Error::FrameTooBig`](crate::Error::FrameTooBig). Without it, a command of a million
    /// arguments of 32 MiB each would be within every other limit. Checked when an element's
    /// header is read, before its bytes arrive.
    pub const fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// See [`Limits::max_frame_len`].
    pub const fn get_max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// See [`Limits::max_bulk_len`].
    pub const fn get_max_bulk_len(&self) -> usize {
        self.max_bulk_len
    }

    /// See [`Limits::max_array_len`].
    pub const fn get_max_array_len(&self) -> usize {
        self.max_array_len
    }

    /// See [`Limits::max_depth`].
    pub const fn get_max_depth(&self) -> usize {
        self.max_depth
    }

    /// See [`Limits::max_inline_len`].
    pub const fn get_max_inline_len(&self) -> usize {
        self.max_inline_len
    }
}
