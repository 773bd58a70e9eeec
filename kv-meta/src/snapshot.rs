//! The snapshot format (membership.md §1.4; format.md, "Meta snapshot").
//!
//! ```text
//! offset  size  field
//! 0       8     magic "KVMETA\0\n" (4B 56 4D 45 54 41 00 0A)
//! 8       4     format version, 1 (u32 LE)
//! 12      4     CRC32C of the body (u32 LE)
//! 16      rest  body: postcard of MetaSnapshot { last_log_id, membership, meta }
//! ```

use std::fs;
use std::io::Read;
use std::path::Path;

use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::raft::MetaNode;
use crate::state::ClusterMeta;

/// The first 8 bytes of a snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KVMETA\0\n";
/// The snapshot format version this build reads and writes.
pub const SNAPSHOT_VERSION: u32 = 1;
/// The largest snapshot read or accepted (far above any real cluster's: a 64-node ring with
/// 256 vnodes is 130 KB).
pub const MAX_SNAPSHOT_LEN: u64 = 8 << 20;
const HEADER_LEN: usize = 16;

/// The whole replicated state at one log position: what a snapshot holds.
///
/// # Example
///
/// ```
/// use kv_meta::{ClusterMeta, MetaSnapshot};
///
/// let snap = MetaSnapshot::default();
/// let bytes = snap.encode()?;
/// assert_eq!(&bytes[..8], b"KVMETA\0\n");
/// assert_eq!(MetaSnapshot::decode(&bytes)?, snap);
/// # Ok::<(), kv_meta::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaSnapshot {
    /// The last log entry the state includes.
    pub last_log_id: Option<LogId<u64>>,
    /// The raft membership as of that entry (openraft's, kept beside `ClusterMeta`).
    pub membership: StoredMembership<u64, MetaNode>,
    /// The state machine.
    pub meta: ClusterMeta,
}

impl MetaSnapshot {
    /// The snapshot's bytes: header and body.
    ///
    /// # Errors
    /// [`Error::Encode`] if postcard fails (it does not for these types), [`Error::SnapshotTooLarge`]
    /// above [`MAX_SNAPSHOT_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        let body = postcard::to_stdvec(self).map_err(|e| Error::Encode {
            what: "snapshot",
            reason: e.to_string(),
        })?;
        let len = (HEADER_LEN + body.len()) as u64;
        if len > MAX_SNAPSHOT_LEN {
            return Err(Error::SnapshotTooLarge {
                len,
                max: MAX_SNAPSHOT_LEN,
            });
        }
        let mut out = Vec::with_capacity(len as usize);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads a snapshot's bytes, checking in order: length, magic, version, CRC, body, and
    /// the state's invariants.
    ///
    /// # Errors
    /// [`Error::SnapshotTooLarge`], [`Error::SnapshotTruncated`], [`Error::SnapshotMagic`],
    /// [`Error::SnapshotVersion`], [`Error::SnapshotCrc`] or [`Error::SnapshotCorrupt`].
    pub fn decode(bytes: &[u8]) -> Result<MetaSnapshot> {
        let len = bytes.len() as u64;
        if len > MAX_SNAPSHOT_LEN {
            return Err(Error::SnapshotTooLarge {
                len,
                max: MAX_SNAPSHOT_LEN,
            });
        }
        let (header, body) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(Error::SnapshotTruncated { len })?;
        let (magic, rest) = header.split_at(8);
        if magic != SNAPSHOT_MAGIC {
            return Err(Error::SnapshotMagic);
        }
        let word =
            |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let version = word(0);
        if version != SNAPSHOT_VERSION {
            return Err(Error::SnapshotVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let stored = word(4);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(Error::SnapshotCrc { stored, computed });
        }
        let corrupt = |reason: String| Error::SnapshotCorrupt { reason };
        let (snap, rest): (MetaSnapshot, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
        if !rest.is_empty() {
            return Err(corrupt(format!("{} bytes after the body", rest.len())));
        }
        snap.meta.check_invariants().map_err(corrupt)?;
        Ok(snap)
    }

    /// Replaces the file at `path` with this snapshot, atomically and durably (a temporary
    /// file `path.tmp` is written, `fsync`ed and renamed over it, then the directory is
    /// `fsync`ed).
    ///
    /// # Errors
    /// As [`encode`](Self::encode), or [`Error::Io`].
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let bytes = self.encode()?;
        kv_wal::durable::write_file_atomic(path, &bytes)?;
        Ok(())
    }

    /// Reads the snapshot at `path`; `None` if there is none.
    ///
    /// # Errors
    /// As [`decode`](Self::decode) (a file above [`MAX_SNAPSHOT_LEN`] is refused before it is
    /// read), or [`Error::Io`].
    pub fn read_file(path: &Path) -> Result<Option<MetaSnapshot>> {
        let io = |op: &'static str| {
            move |source| Error::Io {
                op,
                path: path.to_owned(),
                source,
            }
        };
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open file")(e)),
        };
        let mut bytes = Vec::new();
        // One byte over the limit tells a file that is too large without reading all of it.
        file.take(MAX_SNAPSHOT_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(io("read file"))?;
        MetaSnapshot::decode(&bytes).map(Some)
    }
}
