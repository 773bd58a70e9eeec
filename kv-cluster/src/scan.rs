//! A range read over the whole key space, resumable by a token cursor: [`Cluster::scan`].

use std::collections::HashMap;

use bytes::Bytes;
use kv_node::Record;
use kv_ring::TokenRange;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::routing::Routing;

/// Records per batch asked of a replica's export.
const EXPORT_BATCH: usize = 1000;

/// One step of a [`Cluster::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanPage {
    /// Where the next step starts: the last token covered, or `0` once the whole token space
    /// is covered.
    pub cursor: u64,
    /// The live keys of the segments covered, each with its newest value and version: in
    /// token order of the segments, by key within a segment.
    pub records: Vec<Record>,
}

impl ScanPage {
    /// Whether this step covered the end of the token space (`cursor` is `0` again).
    pub fn is_last(&self) -> bool {
        self.cursor == 0
    }
}

impl Cluster {
    /// Reads the key space in token order, a few ring segments at a time: from `cursor` (`0`
    /// to start) it covers whole segments between consecutive ring tokens until it has found
    /// at least `count` live keys or visited `10 * count` segments (Redis's `SCAN` bounds its
    /// work the same way), and returns them with the cursor to go on from (`0` when the whole
    /// token space is covered).
    ///
    /// Each segment is read from **every** replica of it that answers (a down one is
    /// skipped), keeping each key's newest record; a key whose newest record is a tombstone
    /// is left out. Hence Redis's guarantee: a key present for the whole scan is returned at
    /// least once, as long as, for each segment, one replica holding the key's latest write
    /// answers: with quorum writes, while fewer than `W` replicas of the segment are down.
    /// The cursor names a token, not a node, so a membership change between steps does not
    /// move it (reads follow the committed ring, whose replicas hold every acknowledged
    /// write). A key written or deleted during the scan may or may not be returned; a key
    /// is returned at most once unless the ring's tokens change between steps.
    ///
    /// The cost of a step is the records its segments hold, on each replica (the nodes'
    /// range export), whatever the store's size.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no replica of a segment answers (with the last replica
    /// error as its cause); a ring error.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// for i in 0..100u32 {
    ///     cluster.put(&i.to_be_bytes(), b"v")?;
    /// }
    /// let (mut cursor, mut seen) = (0, 0);
    /// loop {
    ///     let page = cluster.scan(cursor, 10)?;
    ///     seen += page.records.len();
    ///     if page.is_last() {
    ///         break;
    ///     }
    ///     cursor = page.cursor;
    /// }
    /// assert_eq!(seen, 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scan(&self, cursor: u64, count: usize) -> Result<ScanPage> {
        let routing = self.routing();
        let mut boundaries: Vec<u64> = routing.ring.ranges().map(|r| r.range.end).collect();
        boundaries.sort_unstable();
        let count = count.max(1);
        let max_segments = count.saturating_mul(10);
        let mut records = Vec::new();
        let mut lo = cursor;
        let mut segments = 0;
        loop {
            // The next segment: (lo, next boundary], or up to the end of the token space.
            let hi = boundaries
                .iter()
                .copied()
                .find(|&b| b > lo)
                .unwrap_or(u64::MAX);
            // From the start, the first segment includes token 0: (MAX, hi] wraps to [0, hi].
            let range = if cursor == 0 && segments == 0 {
                TokenRange::new(u64::MAX, hi)
            } else {
                TokenRange::new(lo, hi)
            };
            self.read_segment(&routing, range, hi, &mut records)?;
            segments += 1;
            if hi == u64::MAX {
                return Ok(ScanPage { cursor: 0, records });
            }
            lo = hi;
            if records.len() >= count || segments >= max_segments {
                return Ok(ScanPage {
                    cursor: lo,
                    records,
                });
            }
        }
    }

    /// Appends the live records of `range` (inside the segment ending at token `end`), read
    /// from every replica of the segment that answers, each key's newest record deciding.
    fn read_segment(
        &self,
        routing: &Routing,
        range: TokenRange,
        end: u64,
        out: &mut Vec<Record>,
    ) -> Result<()> {
        let mut newest: HashMap<Bytes, Record> = HashMap::new();
        let mut answered = 0;
        let mut errors = Vec::new();
        for id in routing.ring.preference_list(end, self.rf)?.iter() {
            let Some(node) = routing.node(id) else {
                continue;
            };
            if node.is_down() {
                errors.push(Error::NodeDown { node: id.clone() });
                continue;
            }
            let batches = node
                .export(routing.epoch(), &[range], EXPORT_BATCH)
                .and_then(|stream| stream.collect::<Result<Vec<_>>>());
            match batches {
                Ok(batches) => {
                    answered += 1;
                    for r in batches.into_iter().flatten() {
                        match newest.get_mut(&r.key) {
                            Some(held) if r.version > held.version => *held = r,
                            Some(_) => {}
                            None => {
                                newest.insert(r.key.clone(), r);
                            }
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if answered == 0 {
            return Err(Error::unavailable(1, 0, errors));
        }
        let start = out.len();
        // Expiry judged by the coordinator's clock, as a read does (`docs/design.md`).
        let now = self.now_millis();
        out.extend(
            newest
                .into_values()
                .filter(|r| r.value.is_some() && !kv_node::is_expired(r.expires, now)),
        );
        out[start..].sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::{ClusterOptions, MemoryBackend};

    fn full_scan(cluster: &Cluster, count: usize) -> Vec<Record> {
        let (mut cursor, mut all) = (0, Vec::new());
        loop {
            let page = cluster.scan(cursor, count).unwrap();
            all.extend(page.records);
            if page.cursor == 0 {
                return all;
            }
            assert!(page.cursor > cursor, "the cursor moves forward");
            cursor = page.cursor;
        }
    }

    /// Every live key once, with its newest value; deleted keys not at all; whatever the
    /// step size.
    #[test]
    fn a_full_scan_returns_each_live_key_once_with_its_newest_value() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ClusterOptions::new()
            .backend(Arc::new(MemoryBackend::default()))
            .initial_nodes(["n1", "n2", "n3", "n4"]);
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        let mut model = BTreeMap::new();
        for i in 0..600u32 {
            let key = i.to_be_bytes().to_vec();
            cluster.put(&key, b"old").unwrap();
            if i % 5 == 0 {
                cluster.delete(&key).unwrap();
            } else {
                cluster.put(&key, format!("new{i}").as_bytes()).unwrap();
                model.insert(key, format!("new{i}").into_bytes());
            }
        }
        for count in [1, 10, 1000] {
            let got: BTreeMap<Vec<u8>, Vec<u8>> = full_scan(&cluster, count)
                .into_iter()
                .map(|r| (r.key.to_vec(), r.value.unwrap().to_vec()))
                .collect();
            assert_eq!(got, model, "count {count}");
            assert_eq!(full_scan(&cluster, count).len(), model.len(), "once each");
        }
    }

    /// A replica that missed deletes (node1 still holds the old values) is read with the
    /// others: the newest record of each key wins; with node1 down a segment is still read
    /// from the others, and with every replica down the scan says so.
    #[test]
    fn a_scan_keeps_the_newest_record_across_replicas_and_skips_a_down_one() {
        use crate::{Backend, Write};
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::default());
        let opts = ClusterOptions::new().backend(backend.clone());
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        for i in 0..200u32 {
            cluster.put(&i.to_be_bytes(), b"old").unwrap();
        }
        // Newer than every write above: tombstones node1 never got.
        let newer = cluster.delete(b"clock").unwrap();
        for id in ["node2", "node3"] {
            let id = kv_ring::NodeId::new(id).unwrap();
            let raw = backend.open(&id, &dir.path().join(id.as_str())).unwrap();
            for i in 0..100u32 {
                let key = i.to_be_bytes();
                let w = Write {
                    key: &key,
                    value: None,
                    version: newer,
                    expires: None,
                };
                raw.apply(1, w).unwrap();
            }
        }
        let live = |records: Vec<Record>| {
            records.len() == 100
                && records
                    .iter()
                    .all(|r| r.key[..] >= 100u32.to_be_bytes()[..])
        };
        assert!(live(full_scan(&cluster, 10)));
        cluster.fail_node("node1").unwrap();
        assert!(live(full_scan(&cluster, 10)));
        for id in ["node2", "node3"] {
            cluster.fail_node(id).unwrap();
        }
        assert!(matches!(
            cluster.scan(0, 10),
            Err(Error::Unavailable { .. })
        ));
    }
}
