//! Expiring keys through the cluster: writes that carry an expiry, reads that return it, and
//! writes that change only a key's expiry (what Redis's `SET ... EX|PX|EXAT|PXAT|KEEPTTL`,
//! `GETEX`, `EXPIRE` and friends, `TTL` and `PERSIST` need).
//!
//! The rules are in `docs/design.md`, *Expiring keys* (the cluster part): an expiry is an
//! absolute time in milliseconds since the Unix epoch carried by the write (same version,
//! same last-writer-wins); replicas answer reads unjudged and **the coordinator judges expiry
//! against its own clock** ([`Cluster::now_millis`], the clock under its HLC).
//!
//! Changing only the expiry of a live key is a read followed by a rewrite of the value read,
//! with a new version: [`Cluster::rewrite`] below, which gives the guarantee written on
//! [`Cluster::expire`].

use bytes::Bytes;
use kv_node::{Cell, Version};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::swap::{Ask, SWAP_ATTEMPTS};
use crate::write::WriteOp;

/// The latest expiry a write may carry, in milliseconds since the Unix epoch: the largest
/// time a version's 48-bit physical part can hold (about the year 10889). Anything later is
/// [`Error::ExpiryOutOfRange`].
pub const MAX_EXPIRES: u64 = (1 << 48) - 1;

/// When a value expires, as a client states it. Relative forms are turned into an absolute
/// time against the coordinator's clock ([`Cluster::expires_at`]).
///
/// # Example
/// ```
/// use kv_cluster::Expiry;
/// assert_eq!(Expiry::after_secs(60)?, Expiry::AfterMillis(60_000)); // EX 60
/// assert_eq!(Expiry::at_secs(1_700_000_000)?, Expiry::AtMillis(1_700_000_000_000)); // EXAT
/// assert!(Expiry::after_secs(i64::MAX).is_err()); // overflows: refused
/// # Ok::<(), kv_cluster::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Never expires (a plain `SET`; `GETEX PERSIST`; `PERSIST`).
    Never,
    /// Keeps the key's current expiry (`SET ... KEEPTTL`); for a key that is absent, never.
    Keep,
    /// This many milliseconds after the coordinator's now (`EX`/`PX`, `EXPIRE`/`PEXPIRE`).
    /// Zero or negative: already expired.
    AfterMillis(i64),
    /// At this time, in milliseconds since the Unix epoch (`EXAT`/`PXAT`,
    /// `EXPIREAT`/`PEXPIREAT`). In the past: already expired.
    AtMillis(i64),
}

impl Expiry {
    /// `secs` seconds after now (`EX`, `EXPIRE`).
    ///
    /// # Errors
    /// [`Error::ExpiryOutOfRange`] when `secs` in milliseconds overflows.
    pub fn after_secs(secs: i64) -> Result<Expiry> {
        secs.checked_mul(1000)
            .map(Expiry::AfterMillis)
            .ok_or(Error::ExpiryOutOfRange {
                requested: Expiry::AfterMillis(secs.saturating_mul(1000)),
                max: MAX_EXPIRES,
            })
    }

    /// At `secs` seconds since the Unix epoch (`EXAT`, `EXPIREAT`).
    ///
    /// # Errors
    /// [`Error::ExpiryOutOfRange`] when `secs` in milliseconds overflows.
    pub fn at_secs(secs: i64) -> Result<Expiry> {
        secs.checked_mul(1000)
            .map(Expiry::AtMillis)
            .ok_or(Error::ExpiryOutOfRange {
                requested: Expiry::AtMillis(secs.saturating_mul(1000)),
                max: MAX_EXPIRES,
            })
    }
}

/// A live key as [`Cluster::get_entry`] reads it: its value, version and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// The version of the write that stored it.
    pub version: Version,
    /// When it expires, in milliseconds since the Unix epoch (`None`: never).
    pub expires: Option<u64>,
}

impl Entry {
    /// The time left at `now` in milliseconds (`None`: no expiry): what `PTTL` answers
    /// (`TTL` rounds it to seconds). Zero once expired (a read at `now` would not return it).
    ///
    /// ```
    /// use kv_cluster::{Entry, Version};
    /// let e = Entry { value: "v".into(), version: Version::new(1), expires: Some(5_000) };
    /// assert_eq!(e.ttl_millis(1_500), Some(3_500));
    /// ```
    pub fn ttl_millis(&self, now: u64) -> Option<u64> {
        self.expires.map(|e| e.saturating_sub(now))
    }
}

/// A condition on the key's current expiry, for [`Cluster::expire`]: Redis's `NX`, `XX`, `GT`,
/// `LT` (no TTL counts as an infinite one for `GT`/`LT`, as in Redis 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireIf {
    /// Always (no option).
    #[default]
    Always,
    /// Only if the key has no expiry (`NX`).
    NoExpiry,
    /// Only if the key has an expiry (`XX`).
    HasExpiry,
    /// Only if the new expiry is later than the current one (`GT`; never true without one).
    Later,
    /// Only if the new expiry is earlier than the current one (`LT`; always true without one).
    Earlier,
    /// Only if the key has an expiry and the new one is earlier (`XX LT`; `XX GT` is
    /// [`Later`](ExpireIf::Later), which needs an expiry already).
    HasExpiryEarlier,
}

impl ExpireIf {
    fn allows(self, current: Option<u64>, new: Option<u64>) -> bool {
        // No expiry is an infinite one.
        let inf = |e: Option<u64>| e.unwrap_or(u64::MAX);
        match self {
            ExpireIf::Always => true,
            ExpireIf::NoExpiry => current.is_none(),
            ExpireIf::HasExpiry => current.is_some(),
            ExpireIf::Later => current.is_some() && inf(new) > inf(current),
            ExpireIf::Earlier => inf(new) < inf(current),
            ExpireIf::HasExpiryEarlier => current.is_some() && inf(new) < inf(current),
        }
    }
}

/// What a rewrite writes, decided from the key's current live entry.
pub(crate) struct Rewrite {
    /// The value, or `None` for a tombstone.
    value: Option<Bytes>,
    /// Its expiry.
    expires: Option<u64>,
}

impl Cluster {
    /// The coordinator's now, in milliseconds since the Unix epoch: the wall clock under its
    /// hybrid logical clock ([`ClusterOptions::clock`](crate::ClusterOptions::clock); tests
    /// inject a simulated one). Every expiry this coordinator judges is judged against it,
    /// and relative expiries (`EX`, `PX`, `EXPIRE`) are counted from it.
    pub fn now_millis(&self) -> u64 {
        self.opts.clock.now_millis()
    }

    /// The absolute expiry (milliseconds since the Unix epoch) `expiry` stands for now:
    /// `None` for [`Expiry::Never`] and [`Expiry::Keep`] (which has no time of its own). A
    /// time in the past (or negative) is kept as is, clamped to 0: already expired.
    ///
    /// # Errors
    /// [`Error::ExpiryOutOfRange`] past [`MAX_EXPIRES`] or when the sum overflows.
    ///
    /// # Example
    /// ```
    /// use kv_cluster::{Cluster, ClusterOptions, Expiry};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
    /// let now = cluster.now_millis();
    /// let at = cluster.expires_at(Expiry::AfterMillis(1_500))?.unwrap();
    /// assert!(at >= now + 1_500);
    /// assert!(cluster.expires_at(Expiry::AtMillis(i64::MAX)).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expires_at(&self, expiry: Expiry) -> Result<Option<u64>> {
        let out_of_range = || Error::ExpiryOutOfRange {
            requested: expiry,
            max: MAX_EXPIRES,
        };
        let at = match expiry {
            Expiry::Never | Expiry::Keep => return Ok(None),
            Expiry::AtMillis(at) => at,
            Expiry::AfterMillis(ms) => i64::try_from(self.now_millis())
                .ok()
                .and_then(|now| now.checked_add(ms))
                .ok_or_else(out_of_range)?,
        };
        let at = u64::try_from(at.max(0)).map_err(|_| out_of_range())?;
        if at > MAX_EXPIRES {
            return Err(out_of_range());
        }
        Ok(Some(at))
    }

    /// [`put`](Cluster::put) of a value that expires at `expires` (milliseconds since the
    /// Unix epoch; `None`: never, exactly [`put`](Cluster::put)). The expiry travels with the
    /// write to every replica, hint and repair. An expiry at or before now stores a value
    /// that reads as absent at once.
    ///
    /// # Errors
    /// As [`put`](Cluster::put); [`Error::ExpiryOutOfRange`] past [`MAX_EXPIRES`].
    ///
    /// # Example
    /// ```
    /// use kv_cluster::{Cluster, ClusterOptions, Expiry};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
    /// let in_a_minute = cluster.expires_at(Expiry::AfterMillis(60_000))?; // SET k v PX 60000
    /// cluster.put_expiring(b"session:abc123", b"active", in_a_minute)?;
    /// let entry = cluster.get_entry(b"session:abc123")?.unwrap();
    /// assert_eq!(entry.expires, in_a_minute);
    /// cluster.put_expiring(b"gone", b"v", Some(1))?; // long past
    /// assert_eq!(cluster.get(b"gone")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_expiring(&self, key: &[u8], value: &[u8], expires: Option<u64>) -> Result<Version> {
        crate::block::block_on(self.put_expiring_async(key, value, expires))
    }

    /// [`put_expiring`](Cluster::put_expiring) as a future: see
    /// [`put_async`](Cluster::put_async).
    ///
    /// # Errors
    /// As [`put_expiring`](Cluster::put_expiring).
    pub async fn put_expiring_async(
        &self,
        key: &[u8],
        value: &[u8],
        expires: Option<u64>,
    ) -> Result<Version> {
        check_expires(expires)?;
        let routing = self.routing();
        let version = self.next_version()?;
        let mode = self.default_mode();
        let op = WriteOp {
            key,
            value: Some(value),
            expires,
            version,
            consistency: self.opts.write,
            mode,
            ask: Ask::Nothing,
        };
        self.write_reporting_async(routing, op).await?;
        Ok(version)
    }

    /// The live value of `key` with its version and expiry, or `None` if it is absent,
    /// deleted or expired (judged by [`now_millis`](Cluster::now_millis)): what `TTL`,
    /// `PTTL`, `EXPIRETIME` and `PEXPIRETIME` answer from.
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        crate::block::block_on(self.get_entry_async(key))
    }

    /// [`get_entry`](Cluster::get_entry) as a future: see [`put_async`](Cluster::put_async).
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub async fn get_entry_async(&self, key: &[u8]) -> Result<Option<Entry>> {
        let routing = self.routing();
        let cell = self.read_async(routing, key, self.opts.read).await?;
        Ok(cell.and_then(|c| entry_of(c, self.now_millis())))
    }

    /// Stores `value` under `key` keeping the key's current expiry (`SET key value KEEPTTL`;
    /// none if the key is absent or has none); returns the value replaced when `get` (`SET
    /// ... KEEPTTL GET`). A read of the current record, then a write: guarantee as
    /// [`expire`](Cluster::expire)'s.
    ///
    /// # Errors
    /// As [`expire`](Cluster::expire).
    ///
    /// # Example
    /// ```
    /// use kv_cluster::{Cluster, ClusterOptions};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
    /// let later = Some(cluster.now_millis() + 60_000);
    /// cluster.put_expiring(b"k", b"one", later)?;
    /// assert_eq!(cluster.set_keep_ttl(b"k", b"two", true)?.as_deref(), Some(&b"one"[..]));
    /// let e = cluster.get_entry(b"k")?.unwrap();
    /// assert_eq!((e.value.as_ref(), e.expires), (&b"two"[..], later));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_keep_ttl(&self, key: &[u8], value: &[u8], get: bool) -> Result<Option<Bytes>> {
        let value = Bytes::copy_from_slice(value);
        let (current, _) = self.rewrite(key, |current, _| {
            Some(Rewrite {
                value: Some(value.clone()),
                expires: current.and_then(|c| c.expires),
            })
        })?;
        Ok(current.filter(|_| get).map(|c| c.value))
    }

    /// Stores `value` under `key` expiring as `expiry` says and returns the value it replaced
    /// (`SET key value EX|PX|EXAT|PXAT|KEEPTTL GET`), decided as
    /// [`swap`](Cluster::swap) (or, for [`Expiry::Keep`], as
    /// [`set_keep_ttl`](Cluster::set_keep_ttl)).
    ///
    /// # Errors
    /// As [`swap`](Cluster::swap); [`Error::ExpiryOutOfRange`].
    pub fn swap_expiring(&self, key: &[u8], value: &[u8], expiry: Expiry) -> Result<Option<Bytes>> {
        if expiry == Expiry::Keep {
            return self.set_keep_ttl(key, value, true);
        }
        let expires = self.expires_at(expiry)?;
        self.swap_with_expiry(key, value, expires)
    }

    /// Sets the expiry of a live `key` if `cond` allows it; returns whether it did: Redis's
    /// `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT` (reply 1 or 0), and `PERSIST` with
    /// [`Expiry::Never`] and [`ExpireIf::HasExpiry`]. An expiry at or before now deletes the
    /// key (a tombstone; Redis deletes it too). [`Expiry::Keep`] changes nothing.
    ///
    /// # What it guarantees
    /// The key's record is read at the read consistency, then rewritten (its value, the new
    /// expiry, a new version) as a reporting write ([`swap`](Cluster::swap)), under the same
    /// per-key lock as the other reporting writes of this coordinator. Each replica reports,
    /// atomically with applying it, the record the rewrite replaced. If the newest such record
    /// is newer than the one read, **a concurrent write landed between the read and the
    /// rewrite** and the rewrite has just overwritten it: the decision is made again from that
    /// record (the concurrent write, its value and expiry) and written again with a newer
    /// version, so the concurrent write is re-instated (with the new expiry if it still
    /// applies, as if it had come first), not lost; a concurrent delete is re-instated as a
    /// delete. Up to [`SWAP_ATTEMPTS`] rounds, then [`Error::Contended`] (the last round's
    /// write was such a re-instatement, so nothing is lost then either).
    ///
    /// What can still happen, as for [`swap`](Cluster::swap): a concurrent *plain* write with
    /// an older version than the rewrite, that reaches none of the acknowledging replicas
    /// before it, loses to it unseen (last-writer-wins orders it first; its value is lost,
    /// the rewrite's value is the one read). Between a rewrite and its re-instatement, a read
    /// may return the value read before. Rewrites from several coordinators are not
    /// serialized. With `W + W <= rf` a stale quorum can answer for an older record.
    ///
    /// # Errors
    /// As [`swap`](Cluster::swap); [`Error::ExpiryOutOfRange`]; [`Error::Contended`].
    ///
    /// # Example
    /// ```
    /// use kv_cluster::{Cluster, ClusterOptions, ExpireIf, Expiry};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
    /// assert!(!cluster.expire(b"k", Expiry::AfterMillis(60_000), ExpireIf::Always)?); // no key
    /// cluster.put(b"k", b"v")?;
    /// assert!(cluster.expire(b"k", Expiry::AfterMillis(60_000), ExpireIf::NoExpiry)?);
    /// assert!(!cluster.expire(b"k", Expiry::AfterMillis(120_000), ExpireIf::NoExpiry)?);
    /// assert!(cluster.get_entry(b"k")?.unwrap().expires.is_some());
    /// assert!(cluster.expire(b"k", Expiry::Never, ExpireIf::HasExpiry)?); // PERSIST
    /// assert_eq!(cluster.get_entry(b"k")?.unwrap().expires, None);
    /// assert!(cluster.expire(b"k", Expiry::AfterMillis(-1), ExpireIf::Always)?); // deletes
    /// assert_eq!(cluster.get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expire(&self, key: &[u8], expiry: Expiry, cond: ExpireIf) -> Result<bool> {
        if expiry == Expiry::Keep {
            return Ok(false);
        }
        let expires = self.expires_at(expiry)?;
        let (_, wrote) = self.rewrite(key, |current, now| {
            let current = current?;
            if !cond.allows(current.expires, expires) {
                return None;
            }
            let past = kv_node::is_expired(expires, now);
            Some(Rewrite {
                value: (!past).then(|| current.value.clone()),
                expires,
            })
        })?;
        Ok(wrote)
    }

    /// Removes the expiry of a live `key`; returns whether it had one (`PERSIST`): as
    /// [`expire`](Cluster::expire) with [`Expiry::Never`] and [`ExpireIf::HasExpiry`].
    ///
    /// # Errors
    /// As [`expire`](Cluster::expire).
    pub fn persist_key(&self, key: &[u8]) -> Result<bool> {
        self.expire(key, Expiry::Never, ExpireIf::HasExpiry)
    }

    /// The value of `key`, setting its expiry as `expiry` says (`GETEX`): `None` leaves it
    /// (a plain read, no write), [`Expiry::Never`] removes it (`PERSIST`), a time sets it (an
    /// expiry at or before now deletes the key, and the value is still returned, as Redis
    /// does). Guarantee as [`expire`](Cluster::expire)'s.
    ///
    /// # Errors
    /// As [`expire`](Cluster::expire).
    ///
    /// # Example
    /// ```
    /// use kv_cluster::{Cluster, ClusterOptions, Expiry};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
    /// cluster.put(b"k", b"v")?;
    /// let got = cluster.get_and_expire(b"k", Some(Expiry::AfterMillis(10_000)))?;
    /// assert_eq!(got.as_deref(), Some(&b"v"[..]));
    /// assert!(cluster.get_entry(b"k")?.unwrap().expires.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_and_expire(&self, key: &[u8], expiry: Option<Expiry>) -> Result<Option<Bytes>> {
        let Some(expiry) = expiry.filter(|e| *e != Expiry::Keep) else {
            return Ok(self.get_entry(key)?.map(|e| e.value));
        };
        let expires = self.expires_at(expiry)?;
        let (current, _) = self.rewrite(key, |current, now| {
            let current = current?;
            let past = kv_node::is_expired(expires, now);
            Some(Rewrite {
                value: (!past).then(|| current.value.clone()),
                expires,
            })
        })?;
        Ok(current.map(|c| c.value))
    }

    /// [`swap`](Cluster::swap) of a value expiring at `expires`.
    fn swap_with_expiry(
        &self,
        key: &[u8],
        value: &[u8],
        expires: Option<u64>,
    ) -> Result<Option<Bytes>> {
        check_expires(expires)?;
        Ok(self
            .write_replacing_expiring(key, Some(value), expires, Ask::PreviousValue)?
            .and_then(|p| p.value))
    }

    /// Reads `key`'s current record, then writes what `decide` makes of its live entry (at
    /// the coordinator's now; `None`: write nothing), again from the record the write
    /// replaced while that is newer than the one decided on (a concurrent write: see
    /// [`expire`](Cluster::expire)). Returns the live entry the last decision was made from
    /// and whether anything was written.
    fn rewrite(
        &self,
        key: &[u8],
        decide: impl Fn(Option<&Entry>, u64) -> Option<Rewrite>,
    ) -> Result<(Option<Entry>, bool)> {
        // Serialized with this coordinator's other reporting writes of the key.
        let _serialized = self.key_locks.lock(kv_ring::token(key));
        let mut current: Option<Cell> = self.read(self.routing(), key, self.opts.read)?;
        // Whether the record the replicas hold now is ours, over a concurrent write that
        // must be re-instated if nothing else is written.
        let mut overwrote = false;
        for _ in 0..SWAP_ATTEMPTS {
            let now = self.now_millis();
            let live = current.clone().and_then(|c| entry_of(c, now));
            let write = match decide(live.as_ref(), now) {
                Some(w) => w,
                None if !overwrote => return Ok((live, false)),
                // Re-instate the concurrent write as it was (a newer version).
                None => match &current {
                    Some(c) => Rewrite {
                        value: c.value.clone(),
                        expires: c.expires,
                    },
                    None => Rewrite {
                        value: None,
                        expires: None,
                    },
                },
            };
            check_expires(write.expires)?;
            let op = WriteOp {
                key,
                value: write.value.as_deref(),
                expires: write.expires,
                version: self.next_version()?,
                consistency: self.opts.write,
                mode: self.default_mode(),
                ask: Ask::PreviousValue,
            };
            let replaced = self.write_reporting(self.routing(), op)?;
            if !replaced.applied {
                if replaced.kept {
                    // A newer write got everywhere first: nothing changed; decide again from
                    // what the key holds now.
                    current = self.read(self.routing(), key, self.opts.read)?;
                    overwrote = false;
                    continue;
                }
                // Acknowledged through hints only: nothing is known of what was replaced.
                return Ok((live, true));
            }
            let decided_on = current.as_ref().map_or(Version::ZERO, |c| c.version);
            match replaced.newest {
                Some(p) if p.version > decided_on => {
                    // A concurrent write landed between the read and this write: decide
                    // again from it.
                    current = Some(match p.live {
                        true => Cell {
                            value: p.value,
                            version: p.version,
                            expires: p.expires,
                        },
                        false => Cell::tombstone(p.version),
                    });
                    overwrote = true;
                }
                _ => return Ok((live, true)),
            }
        }
        Err(Error::Contended {
            attempts: SWAP_ATTEMPTS,
        })
    }
}

/// The live entry of a cell at `now`: `None` for a tombstone or an expired value.
fn entry_of(cell: Cell, now: u64) -> Option<Entry> {
    match cell.judged(now) {
        Cell {
            value: Some(value),
            version,
            expires,
        } => Some(Entry {
            value,
            version,
            expires,
        }),
        _ => None,
    }
}

/// Refuses an absolute expiry past [`MAX_EXPIRES`].
pub(crate) fn check_expires(expires: Option<u64>) -> Result<()> {
    match expires {
        Some(e) if e > MAX_EXPIRES => Err(Error::ExpiryOutOfRange {
            requested: Expiry::AtMillis(i64::try_from(e).unwrap_or(i64::MAX)),
            max: MAX_EXPIRES,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_treat_no_expiry_as_an_infinite_one() {
        use ExpireIf::*;
        let (none, at5, at9) = (None, Some(5), Some(9));
        // (condition, current, new): allowed?
        for (c, cur, new, ok) in [
            (Always, none, at5, true),
            (NoExpiry, none, at5, true),
            (NoExpiry, at9, at5, false),
            (HasExpiry, none, at5, false),
            (HasExpiry, at9, at5, true),
            (Later, none, at9, false),
            (Later, at5, at9, true),
            (Later, at9, at9, false),
            (Earlier, none, at5, true),
            (Earlier, at9, at5, true),
            (Earlier, at5, at9, false),
            (HasExpiryEarlier, none, at5, false),
            (HasExpiryEarlier, at9, at5, true),
            (HasExpiryEarlier, at5, at9, false),
        ] {
            assert_eq!(c.allows(cur, new), ok, "{c:?} {cur:?} -> {new:?}");
        }
    }
}
