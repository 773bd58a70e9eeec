//! Client operations: versioned writes to every replica acknowledged after `W`, reads of `R`
//! replicas that return the newest version, and their batch forms.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use kv_node::{Version, Write};
use kv_ring::{NodeId, Ring, token};
use smallvec::SmallVec;

use crate::cluster::{Cluster, LEASE_MILLIS};
use crate::error::{Error, Result};
use crate::options::Consistency;
use crate::replica::Replica;
use crate::routing::{Routing, Slot};
use crate::swap::{Ask, Replaced};

/// Whether hinted writes count towards a write's consistency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only replicas count (the default).
    Strict,
    /// A hint on a distinct live stand-in counts for the down replica it is kept for.
    Sloppy,
}

impl Cluster {
    /// Stores `value` under `key` on the key's replicas; returns the write's version.
    ///
    /// # Errors
    /// [`Error::Node`] for an empty or oversized key or value
    /// ([`Error::is_invalid_request`]); [`Error::Unavailable`] (with the first replica error as
    /// its cause) when fewer than `W` replicas acknowledged.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        let mode = self.default_mode();
        self.write(&routing, key, Some(value), version, self.opts.write, mode)?;
        Ok(version)
    }

    /// Deletes `key` (writes a tombstone on its replicas); returns the delete's version.
    ///
    /// # Errors
    /// As [`put`](Cluster::put).
    pub fn delete(&self, key: &[u8]) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        let mode = self.default_mode();
        self.write(&routing, key, None, version, self.opts.write, mode)?;
        Ok(version)
    }

    /// [`put`](Cluster::put) at consistency `w` instead of the cluster's write consistency
    /// (say [`Consistency::One`] to keep writing while most of a key's replicas are down).
    ///
    /// # Errors
    /// As [`put`](Cluster::put).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, Consistency, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.fail_node("node1")?;
    /// cluster.fail_node("node2")?;
    /// assert!(cluster.put(b"k", b"v").is_err()); // quorum: 2 of 3, only 1 up
    /// cluster.put_with(b"k", b"v", Consistency::One)?;
    /// assert_eq!(cluster.get_with(b"k", Consistency::One)?.as_deref(), Some(&b"v"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_with(&self, key: &[u8], value: &[u8], w: Consistency) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        let mode = self.default_mode();
        self.write(&routing, key, Some(value), version, w, mode)?;
        Ok(version)
    }

    /// [`put`](Cluster::put) at consistency `w` with a **sloppy quorum** (Dynamo's, akin to
    /// Cassandra's `ANY` but counting nodes): a replica that is down is stood in for by the
    /// next live node walking the ring past the key's replicas, which stores the write as a
    /// hint for it (durably, in its hint store), and that hint counts towards `w`. Each down
    /// replica gets a different stand-in, so an acknowledged write is on `w` distinct live
    /// nodes; when the ring has too few live nodes beyond the replicas, the write fails with
    /// [`Error::Unavailable`] as a strict one would. Hints are handed off when the replica
    /// recovers (or when the cluster is reopened).
    ///
    /// What it gives up: the stand-ins do not serve reads, so until the hints are handed off
    /// a read at `R` with `R + w > rf` may miss the write (it is not on `w` *replicas*). Use
    /// it to keep accepting writes through failures, not for read-your-writes.
    ///
    /// # Errors
    /// As [`put`](Cluster::put).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use kv_cluster::{Cluster, ClusterOptions, Consistency, Error, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new()
    ///     .backend(Arc::new(MemoryBackend::default()))
    ///     .initial_nodes(["n1", "n2", "n3", "n4"]);
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// let key = b"k";
    /// // Take down two of the key's three replicas: the fourth node is live.
    /// let replicas = cluster.placement_of(key)?.expected;
    /// cluster.fail_node(replicas[0].as_str())?;
    /// cluster.fail_node(replicas[1].as_str())?;
    /// assert!(matches!(cluster.put(key, b"v"), Err(Error::Unavailable { .. })));
    /// cluster.put_sloppy(key, b"v", Consistency::Quorum)?; // one replica + one hint
    /// cluster.recover_node(replicas[0].as_str())?;
    /// cluster.recover_node(replicas[1].as_str())?;
    /// assert_eq!(cluster.placement_of(key)?.held.len(), 3); // handed off
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_sloppy(&self, key: &[u8], value: &[u8], w: Consistency) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        self.write(&routing, key, Some(value), version, w, Mode::Sloppy)?;
        Ok(version)
    }

    /// [`delete`](Cluster::delete) at consistency `w` with a sloppy quorum (see
    /// [`put_sloppy`](Cluster::put_sloppy)).
    ///
    /// # Errors
    /// As [`put`](Cluster::put).
    pub fn delete_sloppy(&self, key: &[u8], w: Consistency) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        self.write(&routing, key, None, version, w, Mode::Sloppy)?;
        Ok(version)
    }

    /// [`delete`](Cluster::delete) at consistency `w`.
    ///
    /// # Errors
    /// As [`put`](Cluster::put).
    pub fn delete_with(&self, key: &[u8], w: Consistency) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        let mode = self.default_mode();
        self.write(&routing, key, None, version, w, mode)?;
        Ok(version)
    }

    /// [`get`](Cluster::get) at consistency `r`.
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_with(&self, key: &[u8], r: Consistency) -> Result<Option<Bytes>> {
        let routing = self.routing();
        Ok(self.read(&routing, key, r)?.and_then(|(v, _)| v))
    }

    /// The value of `key`, or `None` if it is absent or deleted.
    ///
    /// # Errors
    /// [`Error::Node`] for an invalid key; [`Error::Unavailable`] when fewer than `R` replicas
    /// answered.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(key)?.map(|(v, _)| v))
    }

    /// The value of `key` with its version, or `None` if it is absent or deleted.
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_versioned(&self, key: &[u8]) -> Result<Option<(Bytes, Version)>> {
        let routing = self.routing();
        let newest = self.read(&routing, key, self.opts.read)?;
        Ok(newest.and_then(|(value, version)| value.map(|v| (v, version))))
    }

    /// Stores several pairs, one batch per node; returns each write's version, in order.
    ///
    /// # Errors
    /// As [`put`](Cluster::put); some pairs may have been stored when it fails.
    pub fn put_many<K, V>(&self, pairs: &[(K, V)]) -> Result<Vec<Version>>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let routing = self.routing();
        let versions: Vec<Version> = pairs
            .iter()
            .map(|_| self.next_version())
            .collect::<Result<_>>()?;
        if self.opts.sloppy && routing.nodes.values().any(|n| n.is_down()) {
            // Stand-ins are chosen per key: write one key at a time.
            for ((k, v), version) in pairs.iter().zip(&versions) {
                let (k, v) = (k.as_ref(), Some(v.as_ref()));
                self.write(&routing, k, v, *version, self.opts.write, Mode::Sloppy)?;
            }
            return Ok(versions);
        }
        // Each node gets one batch holding every pair it replicates.
        let mut batches: Vec<(NodeId, Vec<usize>)> = Vec::new();
        let mut targets: Vec<SmallVec<[usize; 8]>> = Vec::with_capacity(pairs.len());
        let needed = self.opts.write.required(self.rf);
        for (k, _) in pairs {
            self.check_up(&routing, token(k.as_ref()), needed, &[])?;
        }
        for (i, (k, _)) in pairs.iter().enumerate() {
            let mut mine = SmallVec::new();
            for id in self.targets(&routing, token(k.as_ref()))? {
                let b = match batches.iter().position(|(n, _)| *n == id) {
                    Some(b) => b,
                    None => {
                        batches.push((id, Vec::new()));
                        batches.len() - 1
                    }
                };
                batches[b].1.push(i);
                mine.push(b);
            }
            targets.push(mine);
        }
        let mut ok = vec![false; batches.len()];
        let mut errors = Vec::new();
        for (b, (id, items)) in batches.iter().enumerate() {
            let writes: Vec<Write<'_>> = items
                .iter()
                .map(|&i| Write {
                    key: pairs[i].0.as_ref(),
                    value: Some(pairs[i].1.as_ref()),
                    version: versions[i],
                })
                .collect();
            let node = self.node_of(&routing, id)?;
            match node.apply_batch(routing.epoch(), &writes) {
                Ok(_) => ok[b] = true,
                Err(e) => {
                    if node.is_down() {
                        for w in &writes {
                            self.store_hint(&routing, id, token(w.key), *w);
                        }
                    }
                    errors.push(e);
                }
            }
        }
        for (i, (k, _)) in pairs.iter().enumerate() {
            let acked: SmallVec<[&NodeId; 8]> = targets[i]
                .iter()
                .filter(|&&b| ok[b])
                .map(|&b| &batches[b].0)
                .collect();
            let t = token(k.as_ref());
            self.check_acks(&routing, t, needed, &acked, &[], &mut errors)?;
        }
        Ok(versions)
    }

    /// The values of several keys, in order (`None` for absent or deleted ones).
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let routing = self.routing();
        Ok(self
            .read_many(&routing, keys)?
            .into_iter()
            .map(|found| found.and_then(|(v, _)| v))
            .collect())
    }

    /// A version for a new write: from the hybrid logical clock, and below the persisted
    /// lease, which is pushed [`LEASE_MILLIS`] ahead (one `cluster.json` write) whenever the
    /// clock reaches it.
    #[inline]
    pub(crate) fn next_version(&self) -> Result<Version> {
        let version = self.hlc.now();
        if version.as_u64() >= self.lease.load(Ordering::Acquire) {
            self.extend_lease(version)?;
        }
        Ok(version)
    }

    #[cold]
    pub(crate) fn extend_lease(&self, version: Version) -> Result<()> {
        let mut meta = self.meta.lock();
        if version.as_u64() < self.lease.load(Ordering::Acquire) {
            return Ok(());
        }
        let lease = Version::from_parts(version.millis() + LEASE_MILLIS, 0).as_u64();
        let mut next = meta.clone();
        next.version_lease = lease;
        next.store(&self.dir)?;
        *meta = next;
        self.lease.store(lease, Ordering::Release);
        Ok(())
    }

    /// The nodes a write of `token` goes to: the ring's replicas, plus the pending ring's
    /// during a change.
    pub(crate) fn targets(&self, routing: &Routing, token: u64) -> Result<SmallVec<[NodeId; 8]>> {
        let mut out: SmallVec<[NodeId; 8]> = routing
            .ring
            .preference_list(token, self.rf)?
            .iter()
            .cloned()
            .collect();
        if let Some(pending) = &routing.pending {
            for id in pending.preference_list(token, self.rf)?.iter() {
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
        }
        Ok(out)
    }

    fn node_of<'r>(&self, routing: &'r Routing, id: &NodeId) -> Result<&'r Arc<dyn Replica>> {
        routing.node(id).ok_or_else(|| Error::UnknownNode {
            node: id.to_string(),
        })
    }

    /// The quorum mode of writes that do not name one.
    pub(crate) fn default_mode(&self) -> Mode {
        if self.opts.sloppy {
            Mode::Sloppy
        } else {
            Mode::Strict
        }
    }

    fn write(
        &self,
        routing: &Routing,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        consistency: Consistency,
        mode: Mode,
    ) -> Result<()> {
        let ask = Ask::Nothing;
        self.write_reporting(routing, key, value, version, consistency, mode, ask)?;
        Ok(())
    }

    /// [`write`](Cluster::write), asking the replicas for what the write replaced as
    /// `ask` says ([`Replica::apply_swap`]), gathering the answers of those that
    /// acknowledged (hints stored for a down replica report nothing).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_reporting(
        &self,
        routing: &Routing,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        consistency: Consistency,
        mode: Mode,
        ask: Ask,
    ) -> Result<Replaced> {
        let mut replaced = Replaced::default();
        let needed = consistency.required(self.rf);
        let token = token(key);
        let write = Write {
            key,
            value,
            version,
        };
        let epoch = routing.epoch();
        let old = routing.replicas(token, self.rf)?;
        let pending = match &routing.pending {
            Some(p) => Some(p.preference_list(token, self.rf)?),
            None => None,
        };
        // Sloppy: each down replica (of either ring) gets its own live stand-in beyond them.
        let stand_ins: SmallVec<[(NodeId, NodeId); 4]> = match mode {
            Mode::Strict => SmallVec::new(),
            Mode::Sloppy => {
                let mut down: SmallVec<[&NodeId; 4]> = SmallVec::new();
                let mut all: SmallVec<[&NodeId; 8]> = SmallVec::new();
                for id in old
                    .iter()
                    .map(|(id, _)| *id)
                    .chain(pending.iter().flat_map(|p| p.iter()))
                {
                    if all.contains(&id) {
                        continue;
                    }
                    all.push(id);
                    if routing.node(id).is_none_or(|n| n.is_down()) {
                        down.push(id);
                    }
                }
                self.stand_ins(routing, token, &all, &down)
            }
        };
        let covered: SmallVec<[&NodeId; 4]> = stand_ins.iter().map(|(t, _)| t).collect();
        if routing.pending.is_some() {
            self.check_up(routing, token, needed, &covered)?;
        } else {
            check_up_in(&old, needed, &covered)?;
        }
        let mut acked: SmallVec<[&NodeId; 8]> = SmallVec::new();
        let mut hinted: SmallVec<[&NodeId; 4]> = SmallVec::new();
        let mut errors = Vec::new();
        let mut apply = |id: &NodeId, node: Option<&Arc<dyn Replica>>| {
            let node = node.ok_or_else(|| Error::UnknownNode {
                node: id.to_string(),
            })?;
            let applied = match ask {
                Ask::Nothing => node.apply(epoch, write).map(drop),
                Ask::Previous | Ask::PreviousValue => node
                    .apply_swap(epoch, write, ask == Ask::PreviousValue)
                    .map(|swapped| replaced.note(swapped)),
            };
            match applied {
                Ok(()) => Ok(Some(true)),
                Err(e) => {
                    let mut counted = false;
                    if node.is_down() {
                        // Hinted handoff: a live node keeps the write until `id` is back.
                        counted = match stand_ins.iter().find(|(t, _)| t == id) {
                            Some((_, holder)) => self.store_hint_on(holder, id, write),
                            None => {
                                self.store_hint(routing, id, token, write);
                                false
                            }
                        };
                    }
                    errors.push(e);
                    Ok::<Option<bool>, Error>(if counted { None } else { Some(false) })
                }
            }
        };
        let mut record = |id, outcome: Option<bool>| match outcome {
            Some(true) => acked.push(id),
            Some(false) => {}
            None => hinted.push(id),
        };
        for &(id, node) in old.iter() {
            record(id, apply(id, node)?);
        }
        if let Some(pending) = &pending {
            for id in pending.iter() {
                if !old.iter().any(|(o, _)| *o == id) {
                    record(id, apply(id, routing.node(id))?);
                }
            }
        }
        if routing.pending.is_none() {
            // Only the ring's replicas were written, each once.
            let got = acked.len() + hinted.len();
            if got >= needed {
                return Ok(replaced);
            }
            return Err(Error::unavailable(needed, got, errors));
        }
        self.check_acks(routing, token, needed, &acked, &hinted, &mut errors)?;
        Ok(replaced)
    }

    /// Fails with [`Error::Unavailable`], before anything is written or read, when fewer
    /// than `needed` replicas of `token` (in the ring, and in the pending ring if any) are
    /// up: the operation could not reach its consistency level.
    ///
    /// The down replicas in `covered` count as up: a sloppy write has a stand-in for each.
    fn check_up(
        &self,
        routing: &Routing,
        token: u64,
        needed: usize,
        covered: &[&NodeId],
    ) -> Result<()> {
        let mut down: SmallVec<[NodeId; 4]> = SmallVec::new();
        let mut count = |ring: &Ring| -> Result<usize> {
            let mut up = 0;
            for id in ring.preference_list(token, self.rf)?.iter() {
                match routing.node(id) {
                    Some(n) if n.is_down() && !covered.contains(&id) => {
                        if !down.contains(id) {
                            down.push(id.clone());
                        }
                    }
                    _ => up += 1,
                }
            }
            Ok(up)
        };
        let mut up = count(&routing.ring)?;
        if let Some(pending) = &routing.pending {
            up = up.min(count(pending)?);
        }
        if up >= needed {
            return Ok(());
        }
        let down = down.into_iter().map(|node| Error::NodeDown { node });
        Err(Error::unavailable(needed, up, down.collect()))
    }

    /// Fails unless `W` replicas of the ring, and of the pending ring if any, are in `acked`
    /// or in `hinted` (down replicas whose stand-in stored the write: a sloppy quorum).
    fn check_acks(
        &self,
        routing: &Routing,
        token: u64,
        needed: usize,
        acked: &[&NodeId],
        hinted: &[&NodeId],
        errors: &mut Vec<Error>,
    ) -> Result<()> {
        let count = |ring: &Ring| -> Result<usize> {
            Ok(ring
                .preference_list(token, self.rf)?
                .iter()
                .filter(|id| acked.contains(id) || hinted.contains(id))
                .count())
        };
        let mut got = count(&routing.ring)?;
        if let Some(pending) = &routing.pending {
            got = got.min(count(pending)?);
        }
        if got >= needed {
            return Ok(());
        }
        Err(Error::unavailable(needed, got, std::mem::take(errors)))
    }

    /// The newest record of `key` among `R` replicas of the ring (tombstones included).
    ///
    /// The first replica that answers is read in full; the others only for their version (a
    /// digest read: a storage node answers from its index, without reading the value out of
    /// its log). A replica whose version is newer than the newest record so far is then read
    /// in full. Read repair, synchronous: when the replicas that answered disagree, the newest
    /// record is written to the stale ones (same version: idempotent) before the read
    /// returns, so the next read of any `R` of them agrees. A down replica is skipped for the
    /// next one.
    pub(crate) fn read(
        &self,
        routing: &Routing,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<(Option<Bytes>, Version)>> {
        let needed = consistency.required(self.rf);
        let epoch = routing.epoch();
        let token = token(key);
        let replicas = routing.replicas(token, self.rf)?;
        if routing.pending.is_some() {
            self.check_up(routing, token, needed, &[])?;
        } else {
            check_up_in(&replicas, needed, &[])?;
        }
        let mut answers: SmallVec<[(&Arc<dyn Replica>, Version); 4]> = SmallVec::new();
        let mut newest: Option<(Option<Bytes>, Version)> = None;
        let mut errors = Vec::new();
        for &(id, node) in replicas.iter() {
            if answers.len() == needed {
                break;
            }
            let node = node.ok_or_else(|| Error::UnknownNode {
                node: id.to_string(),
            })?;
            if node.is_down() {
                continue;
            }
            let found = if answers.is_empty() {
                node.read(epoch, key)
            } else {
                match node.read_version(epoch, key) {
                    // Newer than what we have: this replica's record is the one to return.
                    Ok(Some(v)) if newest.as_ref().is_none_or(|(_, have)| v > *have) => {
                        node.read(epoch, key)
                    }
                    Ok(v) => Ok(v.map(|v| (None, v))),
                    Err(e) => Err(e),
                }
            };
            match found {
                Ok(found) => {
                    let version = found.as_ref().map_or(Version::ZERO, |(_, v)| *v);
                    answers.push((node, version));
                    if let Some((value, version)) = found
                        && newest.as_ref().is_none_or(|(_, v)| version > *v)
                    {
                        newest = Some((value, version));
                    }
                }
                Err(e) => {
                    errors.push(e);
                }
            }
        }
        if answers.len() < needed {
            return Err(Error::unavailable(needed, answers.len(), errors));
        }
        if let Some((value, version)) = &newest {
            let write = Write {
                key,
                value: value.as_deref(),
                version: *version,
            };
            for (node, seen) in &answers {
                if seen < version {
                    // Best effort: a replica that fails here is left to anti-entropy.
                    let _ = node.apply(epoch, write);
                }
            }
        }
        Ok(newest)
    }
}

/// [`Cluster::check_up`] for a routing without a pending ring: counts `replicas` (the ring's
/// replicas of the key), a down one in `covered` counting as up.
fn check_up_in(replicas: &[Slot<'_>], needed: usize, covered: &[&NodeId]) -> Result<()> {
    let is_down = |id: &NodeId, node: Option<&Arc<dyn Replica>>| {
        node.is_some_and(|n| n.is_down()) && !covered.contains(&id)
    };
    let up = replicas
        .iter()
        .filter(|&&(id, node)| !is_down(id, node))
        .count();
    if up >= needed {
        return Ok(());
    }
    let down = replicas
        .iter()
        .filter(|&&(id, node)| is_down(id, node))
        .map(|&(id, _)| Error::NodeDown { node: id.clone() });
    Err(Error::unavailable(needed, up, down.collect()))
}
