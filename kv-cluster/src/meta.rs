//! `cluster.json`: the membership, ring parameters and any change in progress.
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "replication_factor": 3,
//!   "vnodes": 100,
//!   "epoch": 3,
//!   "version_lease": 116402147532800000,
//!   "members": [{ "id": "node1", "weight": 1.0, "tokens": [123, 456] }],
//!   "change": {
//!     "kind": "add", "node": "node4",
//!     "from_epoch": 3, "from_members": [ ... the old ring's members, as above ... ],
//!     "to_epoch": 4, "to_members": [ ... the new ring's members ... ],
//!     "phase": "streaming",
//!     "streamed": [["node1", "node4"]]
//!   }
//! }
//! ```
//!
//! `version_lease` is a write version above every version the cluster has issued: the clock
//! starts above it on reopen, so a wall clock that went back across a restart cannot give new
//! writes versions that lose to old ones. `epoch` and `members` are the committed ring: the old one while a change streams, the new
//! one once it has committed. Members are stored with their ring tokens: a balanced ring depends on the order of past
//! changes, so it is rebuilt from tokens, never recomputed. `change` is absent when the cluster
//! is stable. The file is replaced atomically (write a temporary file, `fsync` it, rename it
//! over the old one, `fsync` the directory), so a crash leaves either the old or the new
//! version, never a torn one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use kv_ring::{Placement, Ring, RingOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::progress::ChangeKind;

/// The metadata format this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The metadata file's name in the data directory.
pub(crate) const FILE_NAME: &str = "cluster.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) format_version: u32,
    pub(crate) replication_factor: usize,
    pub(crate) vnodes: u32,
    pub(crate) epoch: u64,
    pub(crate) members: Vec<MemberMeta>,
    /// A raw version above every version this cluster has issued (see
    /// `Cluster::next_version`): a reopened cluster starts its clock above it.
    #[serde(default)]
    pub(crate) version_lease: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) change: Option<ChangeMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MemberMeta {
    pub(crate) id: String,
    pub(crate) weight: f64,
    pub(crate) tokens: Vec<u64>,
}

/// A membership change in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChangeMeta {
    pub(crate) kind: ChangeKind,
    pub(crate) node: String,
    /// The old ring's epoch.
    pub(crate) from_epoch: u64,
    /// The old ring's members.
    pub(crate) from_members: Vec<MemberMeta>,
    /// The new ring's epoch.
    pub(crate) to_epoch: u64,
    /// The new ring's members.
    pub(crate) to_members: Vec<MemberMeta>,
    pub(crate) phase: Phase,
    /// `(from, to)` pairs whose transfers are complete and durable on `to`.
    #[serde(default)]
    pub(crate) streamed: Vec<(String, String)>,
}

/// Where a change stands. `Streaming`: the new ring is not in force yet (reads use the old
/// one, writes go to both). `Cleanup`: the new ring is committed; nodes that lost ranges still
/// have to drop them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    Streaming,
    Cleanup,
}

impl Meta {
    /// The ring parameters of this cluster.
    pub(crate) fn ring_options(&self) -> Result<RingOptions> {
        Ok(RingOptions::default()
            .vnodes(self.vnodes)?
            .placement(Placement::Balanced {
                replication_factor: self.replication_factor,
            }))
    }

    /// The committed ring.
    pub(crate) fn ring(&self) -> Result<Ring> {
        build_ring(self.ring_options()?, &self.members, self.epoch)
    }

    /// Reads `dir/cluster.json`; `None` if there is none.
    pub(crate) fn load(dir: &Path) -> Result<Option<Meta>> {
        let path = dir.join(FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        // Check the version before the shape, so a newer format gets the clearer error.
        #[derive(Deserialize)]
        struct Probe {
            format_version: u32,
        }
        let probe: Probe = serde_json::from_str(&text).map_err(|e| Error::Metadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if probe.format_version != FORMAT_VERSION {
            return Err(Error::FormatVersion {
                found: probe.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::Metadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(meta))
    }

    /// Replaces `dir/cluster.json` atomically and durably.
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        let tmp: PathBuf = dir.join(format!("{FILE_NAME}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Metadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut file = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(&text)
            .map_err(|e| Error::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
        sync_dir(dir)
    }
}

/// `fsync`s a directory, so that a rename or creation in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// The members of `ring`, with their tokens.
pub(crate) fn members_of(ring: &Ring) -> Vec<MemberMeta> {
    ring.nodes()
        .map(|n| MemberMeta {
            id: n.to_string(),
            weight: ring.weight_of(n.as_str()).unwrap_or(1.0),
            tokens: ring.tokens_of(n.as_str()).unwrap_or_default().to_vec(),
        })
        .collect()
}

/// Rebuilds a ring from its members' tokens, at `epoch`.
pub(crate) fn build_ring(options: RingOptions, members: &[MemberMeta], epoch: u64) -> Result<Ring> {
    let ring = members.iter().try_fold(Ring::new(options), |ring, m| {
        ring.add_node_with_tokens(&m.id, m.weight, &m.tokens)
    })?;
    Ok(ring.at_epoch(epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rebuilds_the_same_ring() {
        let dir = tempfile::tempdir().unwrap();
        let opts = RingOptions::default()
            .vnodes(8)
            .unwrap()
            .placement(Placement::Balanced {
                replication_factor: 2,
            });
        let ring = Ring::with_nodes(opts, ["a", "b", "c"]).unwrap();
        let meta = Meta {
            format_version: FORMAT_VERSION,
            replication_factor: 2,
            vnodes: 8,
            epoch: ring.epoch(),
            members: members_of(&ring),
            version_lease: 0,
            change: None,
        };
        meta.store(dir.path()).unwrap();
        let back = Meta::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, meta);
        let rebuilt = back.ring().unwrap();
        assert_eq!(rebuilt.epoch(), ring.epoch());
        for t in (0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            assert_eq!(
                rebuilt.preference_list(t, 2).unwrap().to_vec(),
                ring.preference_list(t, 2).unwrap().to_vec()
            );
        }
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), r#"{"format_version": 99}"#).unwrap();
        assert!(matches!(
            Meta::load(dir.path()),
            Err(Error::FormatVersion { found: 99, .. })
        ));
        fs::write(dir.path().join(FILE_NAME), "{").unwrap();
        assert!(matches!(
            Meta::load(dir.path()),
            Err(Error::Metadata { .. })
        ));
    }
}
