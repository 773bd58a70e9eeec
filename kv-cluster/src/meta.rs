//! `cluster.json`: the membership, ring parameters and any change in progress.
//!
//! ```json
//! {
//!   "format_version": 2,
//!   "replication_factor": 3,
//!   "vnodes": 100,
//!   "epoch": 3,
//!   "version_lease": "116402147532800000",
//!   "members": [{ "id": "node1", "weight": 1.0, "tokens": ["123", "18446744073709551557"] }],
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
//! `version_lease` is a write version above every version the cluster has issued: a reopened
//! cluster mints no version below it (it waits until its wall clock passes the lease, or
//! starts its clock there; see `clock.rs`), so a wall clock that went back across a restart
//! cannot give new writes versions that lose to old ones. `epoch` and `members` are the committed ring: the old one while a change streams, the new
//! one once it has committed. Members are stored with their ring tokens: a balanced ring depends on the order of past
//! changes, so it is rebuilt from tokens, never recomputed. `change` is absent when the cluster
//! is stable.
//!
//! Ring tokens and `version_lease` are `u64`s above 2^53, which a JSON reader that parses
//! numbers as `f64` (JavaScript, `jq` before 1.7) rounds: they are written as decimal strings.
//! Format version 1 wrote them as numbers; it is still read, and the next store writes
//! version 2. The schema, field by field: `docs/format.md` in the repository.
//!
//! The file is replaced atomically (write a temporary file, `fsync` it, rename it
//! over the old one, `fsync` the directory), so a crash leaves either the old or the new
//! version, never a torn one.

use std::fs;
use std::path::Path;

use kv_node::durable;
use kv_ring::{Placement, Ring, RingOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::progress::ChangeKind;

/// The metadata format this build writes.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest metadata format this build reads: version 1 held tokens and the version lease
/// as JSON numbers instead of strings.
const OLDEST_READABLE: u32 = 1;
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
    /// `Cluster::next_version`): a reopened cluster mints no version below it.
    #[serde(default, with = "decimal")]
    pub(crate) version_lease: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) change: Option<ChangeMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MemberMeta {
    pub(crate) id: String,
    pub(crate) weight: f64,
    #[serde(with = "decimal::seq")]
    pub(crate) tokens: Vec<u64>,
}

/// `u64`s as decimal strings, so that readers parsing JSON numbers as `f64` keep every digit;
/// plain numbers (format version 1) are read too.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }

    fn value<E: serde::de::Error>(raw: Raw) -> Result<u64, E> {
        match raw {
            Raw::Number(n) => Ok(n),
            Raw::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse()
                .map_err(|_| E::custom(format!("{s:?} is out of the u64 range"))),
            Raw::Text(s) => Err(E::custom(format!("{s:?} is not a decimal u64"))),
        }
    }

    pub(crate) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        value(Raw::deserialize(d)?)
    }

    /// The same for a list.
    pub(crate) mod seq {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(u64::to_string))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
            Vec::<Raw>::deserialize(d)?
                .into_iter()
                .map(value::<D::Error>)
                .collect()
        }
    }
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
        match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => Self::load_file(&path).map(Some),
        }
    }

    /// Reads a metadata file.
    fn load_file(path: &Path) -> Result<Meta> {
        let path = path.to_owned();
        let text = fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        // Check the version before the shape, so a newer format gets the clearer error.
        #[derive(Deserialize)]
        struct Probe {
            format_version: u32,
        }
        let probe: Probe = serde_json::from_str(&text).map_err(|e| Error::Metadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&probe.format_version) {
            return Err(Error::FormatVersion {
                found: probe.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let mut meta: Meta = serde_json::from_str(&text).map_err(|e| Error::Metadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // Held in memory in the current format; the next store writes it so.
        meta.format_version = FORMAT_VERSION;
        Ok(meta)
    }

    /// Replaces `dir/cluster.json` atomically and durably.
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Metadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        durable::write_file_atomic(&path, &text)?;
        Ok(())
    }
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

    /// The ring and metadata of the golden files: 3 nodes, 1 virtual node each, rf 2, a
    /// version lease above 2^53.
    fn golden_meta(change: bool) -> Meta {
        let opts = RingOptions::default()
            .vnodes(1)
            .unwrap()
            .placement(Placement::Balanced {
                replication_factor: 2,
            });
        let old = Ring::with_nodes(opts, ["node1", "node2", "node3"]).unwrap();
        let new = old.add_node("node4").unwrap();
        Meta {
            format_version: FORMAT_VERSION,
            replication_factor: 2,
            vnodes: 1,
            epoch: old.epoch(),
            members: members_of(&old),
            // 2025-12-06T00:00:00Z, counter 1, as a version: about 1.2e17, not a double.
            version_lease: (1_764_979_200_000 << 16) | 1,
            change: change.then(|| ChangeMeta {
                kind: ChangeKind::Add,
                node: "node4".to_owned(),
                from_epoch: old.epoch(),
                from_members: members_of(&old),
                to_epoch: new.epoch(),
                to_members: members_of(&new),
                phase: Phase::Streaming,
                streamed: vec![("node1".to_owned(), "node4".to_owned())],
            }),
        }
    }

    fn golden_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
    }

    /// Every JSON number replaced by the nearest `f64`, as a reader that parses numbers as
    /// doubles (JavaScript's `JSON.parse`, `jq` before 1.7) holds it.
    fn through_f64(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Number(n) => {
                let f = n.as_f64().unwrap();
                // An integral double goes back as an integer, as JavaScript prints it.
                if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    Value::from(f as u64)
                } else {
                    Value::from(f)
                }
            }
            Value::Array(a) => Value::Array(a.into_iter().map(through_f64).collect()),
            Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, through_f64(v))).collect())
            }
            other => other,
        }
    }

    #[test]
    fn large_integers_survive_a_json_reader_that_uses_f64() {
        let meta = golden_meta(true);
        assert!(meta.version_lease > 1 << 53);
        assert!(
            meta.members
                .iter()
                .flat_map(|m| &m.tokens)
                .any(|&t| t > 1 << 53)
        );
        let dir = tempfile::tempdir().unwrap();
        meta.store(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        // The string form: every token and the lease come back exactly.
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let back: Meta = serde_json::from_value(through_f64(parsed)).unwrap();
        assert_eq!(back, meta);
        // The numeric form of format version 1 does not survive the same reader.
        let v1 = fs::read_to_string(golden_dir().join("cluster-v1.json")).unwrap();
        let v1_meta: Meta = serde_json::from_str(&v1).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&v1).unwrap();
        let rounded: Meta = serde_json::from_value(through_f64(parsed)).unwrap();
        assert_ne!(rounded.version_lease, v1_meta.version_lease);
        assert_ne!(rounded.members, v1_meta.members);
    }

    #[test]
    fn golden_files_read_back_exactly() {
        let dir = golden_dir();
        for (file, change) in [("cluster-v2.json", false), ("cluster-v2-change.json", true)] {
            let loaded = Meta::load_file(&dir.join(file)).unwrap();
            assert_eq!(loaded, golden_meta(change), "{file}");
            // Today's writer gives the same bytes: a format change cannot slip in unnoticed.
            let out = tempfile::tempdir().unwrap();
            loaded.store(out.path()).unwrap();
            assert_eq!(
                fs::read(out.path().join(FILE_NAME)).unwrap(),
                fs::read(dir.join(file)).unwrap(),
                "{file}"
            );
        }
        // Format version 1 (numbers) is read into the current version.
        let loaded = Meta::load_file(&dir.join("cluster-v1.json")).unwrap();
        assert_eq!(loaded, golden_meta(false));
    }

    /// Writes `tests/golden/cluster-*.json`. Run once per format version, then commit:
    /// `cargo test -p kv-cluster --lib meta::tests::write_golden_files -- --ignored`.
    /// `cluster-v1.json` is the v2 file with its integers as JSON numbers, which is what
    /// format version 1 wrote.
    #[test]
    #[ignore = "generator: writes the golden files"]
    fn write_golden_files() {
        let dir = golden_dir();
        fs::create_dir_all(&dir).unwrap();
        for (file, change) in [("cluster-v2.json", false), ("cluster-v2-change.json", true)] {
            let tmp = tempfile::tempdir().unwrap();
            golden_meta(change).store(tmp.path()).unwrap();
            fs::copy(tmp.path().join(FILE_NAME), dir.join(file)).unwrap();
        }
        let v2 = fs::read_to_string(dir.join("cluster-v2.json")).unwrap();
        let v1: String = v2
            .replace("\"format_version\": 2", "\"format_version\": 1")
            .split_inclusive('\n')
            .map(|line| {
                // Unquote the one all-digit string a line can hold (a token or the lease).
                let parts: Vec<&str> = line.split('"').collect();
                let digits = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                match parts.iter().rposition(digits) {
                    Some(i) if i > 0 && i + 1 < parts.len() => {
                        let mut out = parts[..i].join("\"");
                        out.push_str(parts[i]);
                        out.push_str(&parts[i + 1..].join("\""));
                        out
                    }
                    _ => line.to_owned(),
                }
            })
            .collect();
        fs::write(dir.join("cluster-v1.json"), v1).unwrap();
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
