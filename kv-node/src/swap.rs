//! A write that reports what it replaced: [`Node::apply_swap`].

use bytes::Bytes;

use crate::index::Upsert;
use crate::node::Node;
use crate::{Result, Version};

/// The record a write replaced, as [`Node::apply_swap`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Previous {
    /// Its version.
    pub version: Version,
    /// Whether it held a value (`false`: a tombstone).
    pub live: bool,
    /// Its value, when it held one and the caller asked for it (`None` otherwise).
    pub value: Option<Bytes>,
    /// Its expiry, when its value is reported (`None` otherwise, or when it had none): what
    /// a write that keeps the key's expiry (Redis's `SET ... KEEPTTL`) needs.
    pub expires: Option<u64>,
}

impl Previous {
    /// A record of the given kind (what replica implementations other than a `Node`, such as
    /// test doubles, report).
    pub fn new(version: Version, value: Option<Bytes>, live: bool) -> Previous {
        Previous {
            version,
            live,
            value: if live { value } else { None },
            expires: None,
        }
    }

    /// The same record with its value's expiry (kept only when a value is reported).
    pub fn with_expires(mut self, expires: Option<u64>) -> Previous {
        self.expires = if self.value.is_some() { expires } else { None };
        self
    }
}

/// What [`Node::apply_swap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Swapped {
    /// The write is now the key's newest record; it replaced `previous`, or nothing (`None`)
    /// when the node held no record of the key.
    Applied {
        /// The record it replaced.
        previous: Option<Previous>,
    },
    /// The node already held a record at least as new (`current`): the write changed
    /// nothing, and what came before it in last-writer-wins order is not known here.
    Kept {
        /// The version the node holds.
        current: Version,
    },
}

impl Node {
    /// [`Node::apply`], reporting the record the write replaced, decided at the moment the
    /// write reaches the index (under the key's index partition lock): two writes racing on
    /// one key never report the same previous record, and a write that loses to a newer one
    /// reports [`Swapped::Kept`]. With `read_value`, a replaced value is read out of the
    /// cache or the log as well (before compaction can reclaim it); without, only its version
    /// and whether it was live are reported, from the index, at no extra cost.
    ///
    /// # Errors
    ///
    /// As [`Node::apply`]; and [`Error::Wal`](crate::Error::Wal) /
    /// [`Error::CorruptRecord`](crate::Error::CorruptRecord) when the replaced value cannot be
    /// read back, in which case the write itself *was* applied.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Swapped, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// node.apply(b"k", Some(b"old"), Version::new(1))?;
    /// let Swapped::Applied { previous: Some(p) } = node.apply_swap(b"k", None, Version::new(2), true)?
    /// else { panic!() };
    /// assert_eq!((p.version, p.live, p.value.as_deref()), (Version::new(1), true, Some(&b"old"[..])));
    /// // A late, older write loses and says so.
    /// let late = node.apply_swap(b"k", Some(b"late"), Version::new(1), true)?;
    /// assert_eq!(late, Swapped::Kept { current: Version::new(2) });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_swap(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        read_value: bool,
    ) -> Result<Swapped> {
        self.apply_swap_expiring(key, value, version, None, read_value)
    }

    /// [`Node::apply_swap`] of a value that expires at `expires` (as
    /// [`Node::apply_expiring`]). A replaced value reported with `read_value` comes with its
    /// own expiry ([`Previous::expires`]).
    ///
    /// # Errors
    ///
    /// As [`Node::apply_swap`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use kv_node::{Node, NodeOptions, Swapped, Version};
    /// let node = Node::open(dir.path(), NodeOptions::new())?;
    /// let far = u64::MAX / 4;
    /// node.apply_expiring(b"k", Some(b"v1"), Version::new(1), Some(far))?;
    /// let Swapped::Applied { previous: Some(p) } =
    ///     node.apply_swap_expiring(b"k", Some(b"v2"), Version::new(2), Some(far + 1), true)?
    /// else { panic!() };
    /// assert_eq!((p.value.as_deref(), p.expires), (Some(&b"v1"[..]), Some(far)));
    /// assert_eq!(node.get_cell(b"k")?.unwrap().expires, Some(far + 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_swap_expiring(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        expires: Option<u64>,
        read_value: bool,
    ) -> Result<Swapped> {
        crate::node::check_version(version)?;
        let inner = &*self.inner;
        inner.check(key, value)?;
        let token = kv_ring::token(key);
        let expires = crate::record::normalize(value, expires);
        let mut old_value = None;
        // Whether the replaced value had expired: then it is reported as the tombstone it
        // stands for (`docs/design.md`, *Expiring keys*). Its expiry is in its record.
        let mut old_expired = Ok(false);
        let outcome = inner.write_seeing(token, key, value, version, expires, true, |old| {
            if read_value && !old.tombstone {
                let read = match inner.cache.peek(key) {
                    Some((v, cached, expires)) if cached == old.version => Ok((Some(v), expires)),
                    _ => inner.read_at(old.lsn),
                };
                old_expired = Ok(read
                    .as_ref()
                    .is_ok_and(|(_, e)| crate::is_expired(*e, inner.now_millis())));
                old_value = Some(read);
            } else if old.expiring {
                old_expired = inner
                    .wal
                    .read_with(old.lsn, crate::record::expires_of)
                    .map_err(crate::Error::from)
                    .and_then(|r| r.map_err(|e| e.at(old.lsn)))
                    .map(|e| crate::is_expired(e, inner.now_millis()));
            }
        })?;
        let swapped = match outcome {
            Upsert::Kept(cur) => {
                inner.invalidate_older(key, version);
                return Ok(Swapped::Kept {
                    current: cur.version,
                });
            }
            Upsert::Inserted => Swapped::Applied { previous: None },
            Upsert::Replaced(old) => Swapped::Applied {
                previous: Some(Previous {
                    version: old.version,
                    live: !old.tombstone && !old_expired.as_ref().is_ok_and(|&e| e),
                    value: None,
                    expires: None,
                }),
            },
        };
        inner.refresh_cache(token, key, value, version, expires);
        // The write is applied either way; a replaced record that could not be read is an
        // error all the same (see `# Errors`).
        old_expired?;
        match (swapped, old_value) {
            (Swapped::Applied { previous: Some(p) }, Some(read)) => {
                let (value, expires) = if p.live { read? } else { (None, None) };
                Ok(Swapped::Applied {
                    previous: Some(Previous {
                        expires: expires.filter(|_| value.is_some()),
                        value,
                        ..p
                    }),
                })
            }
            (swapped, _) => Ok(swapped),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::NodeOptions;

    fn v(n: u64) -> Version {
        Version::new(n)
    }

    #[test]
    fn apply_swap_reports_nothing_a_value_or_a_tombstone_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
        let first = node.apply_swap(b"k", Some(b"one"), v(1), true).unwrap();
        assert_eq!(first, Swapped::Applied { previous: None });
        let second = node.apply_swap(b"k", None, v(2), false).unwrap();
        let expected = Previous {
            version: v(1),
            live: true,
            value: None,
            expires: None,
        };
        assert_eq!(
            second,
            Swapped::Applied {
                previous: Some(expected)
            }
        );
        let third = node.apply_swap(b"k", Some(b"three"), v(3), true).unwrap();
        let expected = Previous {
            version: v(2),
            live: false,
            value: None,
            expires: None,
        };
        assert_eq!(
            third,
            Swapped::Applied {
                previous: Some(expected)
            }
        );
        assert_eq!(node.get(b"k").unwrap().unwrap().0, &b"three"[..]);
        // An equal version is the same write: kept.
        let again = node.apply_swap(b"k", Some(b"three"), v(3), true).unwrap();
        assert_eq!(again, Swapped::Kept { current: v(3) });
    }

    /// The replaced value comes from the cache when it holds that version, else from the log,
    /// also after compaction moved it.
    #[test]
    fn apply_swap_reads_the_replaced_value_from_the_cache_or_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(dir.path(), NodeOptions::small()).unwrap();
        node.apply(b"cached", Some(b"c1"), v(1)).unwrap();
        node.get(b"cached").unwrap();
        node.get(b"cached").unwrap(); // admitted on the second miss
        assert!(node.inner.cache.peek(&b"cached"[..]).is_some());
        node.apply(b"logged", Some(b"l1"), v(1)).unwrap();
        for (key, old) in [(&b"cached"[..], &b"c1"[..]), (b"logged", b"l1")] {
            let got = node.apply_swap(key, Some(b"new"), v(2), true).unwrap();
            let Swapped::Applied { previous: Some(p) } = got else {
                panic!("{got:?}")
            };
            assert_eq!(p.value.as_deref(), Some(old));
        }
        // Moved by compaction: the index points at the copy.
        node.apply(b"moved", Some(b"m1"), v(1)).unwrap();
        for i in 0..2000u32 {
            node.put(format!("filler{i}").as_bytes(), &[1; 64]).unwrap();
        }
        let token = kv_ring::token(b"moved");
        let before = node.inner.index.get(token, b"moved").unwrap().lsn;
        node.compact().unwrap();
        assert_ne!(node.inner.index.get(token, b"moved").unwrap().lsn, before);
        let got = node.apply_swap(b"moved", None, v(2), true).unwrap();
        let Swapped::Applied { previous: Some(p) } = got else {
            panic!("{got:?}")
        };
        assert_eq!(p.value.as_deref(), Some(&b"m1"[..]));
        assert_eq!(node.get(b"moved").unwrap(), None);
    }

    /// Threads replacing one key's value each get a different previous value: together the
    /// answers are one chain of every value written, each replaced once.
    #[test]
    fn concurrent_swaps_each_replace_a_different_record() {
        let dir = tempfile::tempdir().unwrap();
        let node = Arc::new(Node::open(dir.path(), NodeOptions::new()).unwrap());
        const THREADS: u64 = 4;
        const EACH: u64 = 500;
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let node = Arc::clone(&node);
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for i in 0..EACH {
                        // Distinct increasing versions per thread, interleaved across threads.
                        let version = v(1 + i * THREADS + t);
                        let value = version.as_u64().to_be_bytes();
                        let got = node.apply_swap(b"k", Some(&value), version, true).unwrap();
                        if let Swapped::Applied { previous } = got {
                            seen.push(previous.map(|p| p.version));
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut previous: Vec<Option<Version>> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let applied = previous.len();
        previous.sort();
        previous.dedup();
        assert_eq!(previous.len(), applied, "a record was replaced twice");
    }
}
