//! Client operations: versioned writes to every replica acknowledged after `W`, reads of `R`
//! replicas that return the newest version, and their batch forms.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use kv_node::{Version, Write};
use kv_ring::{NodeId, Ring, token};
use smallvec::SmallVec;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::follow_up::{FollowUp, Outstanding, OwnedWrite};
use crate::options::Consistency;
use crate::pending::{Collector, Started};
use crate::replica::Replica;
use crate::routing::{Routing, Slot};
use crate::swap::{Ask, Replaced};
use crate::write::{WriteOp, is_transport};

pub(crate) use crate::write::Mode;

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
        self.write(routing, key, Some(value), version, self.opts.write, mode)?;
        Ok(version)
    }

    /// [`put`](Cluster::put) as a future, for a server on an async runtime: it waits on
    /// replicas in other processes without blocking the thread. The local replica, if the
    /// key has one, is written on the calling thread: use it where a local write does not
    /// wait for an fsync (e.g. under a periodic sync policy).
    ///
    /// The wait relies on every replica answering in time, as a remote replica's transport
    /// times its requests out ([`Collector::wait`](crate::Collector::wait)).
    ///
    /// # Errors
    /// As [`put`](Cluster::put).
    ///
    /// # Example
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let cluster = kv_cluster::Cluster::open(dir.path(), kv_cluster::ClusterOptions::new())?;
    /// let put = cluster.put_async(b"k", b"v"); // a future: any executor runs it
    /// drop(put);
    /// cluster.put(b"k", b"v")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn put_async(&self, key: &[u8], value: &[u8]) -> Result<Version> {
        let routing = self.routing();
        let version = self.next_version()?;
        let mode = self.default_mode();
        self.write_async(routing, key, Some(value), version, self.opts.write, mode)
            .await?;
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
        self.write(routing, key, None, version, self.opts.write, mode)?;
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
        self.write(routing, key, Some(value), version, w, mode)?;
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
        self.write(routing, key, Some(value), version, w, Mode::Sloppy)?;
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
        self.write(routing, key, None, version, w, Mode::Sloppy)?;
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
        self.write(routing, key, None, version, w, mode)?;
        Ok(version)
    }

    /// [`get`](Cluster::get) at consistency `r`.
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_with(&self, key: &[u8], r: Consistency) -> Result<Option<Bytes>> {
        let routing = self.routing();
        Ok(self
            .read(routing, key, r)?
            .and_then(|c| live(c, || self.now_millis())))
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
        let newest = self.read(routing, key, self.opts.read)?;
        Ok(newest.and_then(|c| {
            let version = c.version;
            live(c, || self.now_millis()).map(|v| (v, version))
        }))
    }

    /// [`get`](Cluster::get) as a future: see [`put_async`](Cluster::put_async).
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub async fn get_async(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let routing = self.routing();
        let newest = self.read_async(routing, key, self.opts.read).await?;
        Ok(newest.and_then(|c| live(c, || self.now_millis())))
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
        crate::block::block_on(self.put_many_async(pairs))
    }

    /// [`put_many`](Cluster::put_many) as a future, for a server on an async runtime: it
    /// waits on replicas in other processes without blocking the thread (the local replica
    /// is written on the calling thread: use it where a local write does not wait for an
    /// fsync).
    ///
    /// # Errors
    /// As [`put_many`](Cluster::put_many).
    pub async fn put_many_async<K, V>(&self, pairs: &[(K, V)]) -> Result<Vec<Version>>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.put_many_expiring_async(pairs, &[]).await
    }

    /// [`put_many`](Cluster::put_many) of values that expire: `expires[i]` is when
    /// `pairs[i]`'s value does (ms since the Unix epoch; `None`, or past the end of
    /// `expires`: never). What a pipelined run of `SET ... EX` becomes: one batch per node.
    ///
    /// # Errors
    /// As [`put_many`](Cluster::put_many); [`Error::ExpiryOutOfRange`] (before anything is
    /// written) past [`MAX_EXPIRES`](crate::MAX_EXPIRES).
    ///
    /// # Example
    /// ```
    /// use kv_cluster::{Cluster, ClusterOptions};
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
    /// let later = Some(cluster.now_millis() + 60_000);
    /// cluster.put_many_expiring(&[(b"a", b"1"), (b"b", b"2")], &[later, None])?;
    /// assert_eq!(cluster.get_entry(b"a")?.unwrap().expires, later);
    /// assert_eq!(cluster.get_entry(b"b")?.unwrap().expires, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_many_expiring<K, V>(
        &self,
        pairs: &[(K, V)],
        expires: &[Option<u64>],
    ) -> Result<Vec<Version>>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        crate::block::block_on(self.put_many_expiring_async(pairs, expires))
    }

    /// [`put_many_expiring`](Cluster::put_many_expiring) as a future: see
    /// [`put_many_async`](Cluster::put_many_async).
    ///
    /// # Errors
    /// As [`put_many_expiring`](Cluster::put_many_expiring).
    pub async fn put_many_expiring_async<K, V>(
        &self,
        pairs: &[(K, V)],
        expires: &[Option<u64>],
    ) -> Result<Vec<Version>>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        for e in expires {
            crate::expiry::check_expires(*e)?;
        }
        let routing = self.routing();
        let versions: Vec<Version> = pairs
            .iter()
            .map(|_| self.next_version())
            .collect::<Result<_>>()?;
        // On an external topology a stale refusal ends the batch; it is retried once, whole
        // and with the same versions, on the newer topology (`epoch_watch.rs`).
        let first = self
            .put_many_once(&routing, pairs, expires, &versions)
            .await;
        match first {
            Err(e) if self.ends_round(&e) => {
                // Not held while it waits: see `refresh`.
                drop(routing);
                let (next, started) = self.refresh(e).await?;
                let again = self.put_many_once(&next, pairs, expires, &versions).await;
                self.retried(again, started)?;
            }
            done => done?,
        }
        Ok(versions)
    }

    /// One attempt of [`put_many_expiring_async`](Cluster::put_many_expiring_async), routed
    /// by `routing`, each pair at its version in `versions`.
    async fn put_many_once<K, V>(
        &self,
        routing: &Routing,
        pairs: &[(K, V)],
        expires: &[Option<u64>],
        versions: &[Version],
    ) -> Result<()>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let expiry = |i: usize| expires.get(i).copied().flatten();
        if self.opts.sloppy && routing.nodes.values().any(|n| n.is_down()) {
            // Stand-ins are chosen per key: write one key at a time.
            for (i, ((k, v), version)) in pairs.iter().zip(versions).enumerate() {
                let op = WriteOp {
                    key: k.as_ref(),
                    value: Some(v.as_ref()),
                    expires: expiry(i),
                    version: *version,
                    consistency: self.opts.write,
                    mode: Mode::Sloppy,
                    ask: Ask::Nothing,
                };
                self.write_once(routing, op, &mut Replaced::default())
                    .await?;
            }
            return Ok(());
        }
        // Each node gets one batch holding every pair it replicates.
        let mut batches: Vec<(NodeId, Vec<usize>)> = Vec::new();
        let mut targets: Vec<SmallVec<[usize; 8]>> = Vec::with_capacity(pairs.len());
        let needed = self.opts.write.required(self.rf);
        // Without a change in progress, a pair's targets are exactly its replicas, found once
        // in the routing's placement table (no walk of the ring per check).
        let settled = routing.pending.is_none();
        let mut ids: Vec<SmallVec<[NodeId; 8]>> = Vec::with_capacity(pairs.len());
        for (k, _) in pairs {
            let t = token(k.as_ref());
            if settled {
                let replicas = routing.replicas(t, self.rf)?;
                check_up_in(&replicas, needed, &[])?;
                ids.push(replicas.iter().map(|(id, _)| (*id).clone()).collect());
            } else {
                self.check_up(routing, t, needed, &[])?;
                ids.push(self.targets(routing, t)?);
            }
        }
        for (i, pair_ids) in ids.into_iter().enumerate() {
            let mut mine = SmallVec::new();
            for id in pair_ids {
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
        // Every node's batch is submitted before any answer is waited for.
        let epoch = routing.epoch();
        let writes: Vec<Vec<Write<'_>>> = batches
            .iter()
            .map(|(_, items)| {
                items
                    .iter()
                    .map(|&i| Write {
                        key: pairs[i].0.as_ref(),
                        value: Some(pairs[i].1.as_ref()),
                        version: versions[i],
                        expires: expiry(i),
                    })
                    .collect()
            })
            .collect();
        let nodes: Vec<&Arc<dyn Replica>> = batches
            .iter()
            .map(|(id, _)| self.node_of(routing, id))
            .collect::<Result<_>>()?;
        // Each batch's answer: `None` while outstanding.
        let mut ok: Vec<Option<bool>> = vec![None; batches.len()];
        let mut errors = Vec::new();
        // A stale refusal (external topology): the batch ends, to be redone.
        let mut stale: Option<Error> = None;
        let settle = |ok: &mut [Option<bool>],
                      b: usize,
                      answer: Result<usize>,
                      errors: &mut Vec<Error>,
                      stale: &mut Option<Error>| {
            ok[b] = Some(answer.is_ok());
            if let Err(e) = answer {
                if self.ends_round(&e) {
                    stale.get_or_insert(e);
                    return;
                }
                if nodes[b].is_down() || is_transport(&e) {
                    for w in &writes[b] {
                        self.store_hint(routing, &batches[b].0, token(w.key), *w);
                    }
                }
                errors.push(e);
            }
        };
        let collector: Collector<usize> = Collector::new();
        for (b, node) in nodes.iter().enumerate() {
            if let Started::Done(answer) =
                node.start_apply_batch(epoch, &writes[b], collector.ticket(b))
            {
                settle(&mut ok, b, answer, &mut errors, &mut stale);
            }
        }
        let acked_of = |ok: &[Option<bool>], i: usize| -> SmallVec<[&NodeId; 8]> {
            targets[i]
                .iter()
                .filter(|&&b| ok[b] == Some(true))
                .map(|&b| &batches[b].0)
                .collect()
        };
        if collector.outstanding() > 0 {
            let timeout = self.opts.replica_timeout;
            let deadline = Instant::now() + timeout;
            let all_met = |ok: &[Option<bool>]| {
                pairs.iter().enumerate().all(|(i, (k, _))| {
                    if settled {
                        return targets[i].iter().filter(|&&b| ok[b] == Some(true)).count()
                            >= needed;
                    }
                    let acked = acked_of(ok, i);
                    let t = token(k.as_ref());
                    self.check_acks(routing, t, needed, &acked, &[], &mut Vec::new())
                        .is_ok()
                })
            };
            // Until every key has its `W` (the rest is then followed up), a stale refusal, or
            // the deadline.
            while stale.is_none() && !all_met(&ok) {
                let Some((b, answer)) = collector.wait(deadline).await else {
                    break;
                };
                settle(&mut ok, b, answer, &mut errors, &mut stale);
            }
            if stale.is_none() && !all_met(&ok) {
                for (b, (id, _)) in batches.iter().enumerate() {
                    if ok[b].is_none() {
                        let e = Error::Timeout {
                            node: id.clone(),
                            after: timeout,
                        };
                        settle(&mut ok, b, Err(e), &mut errors, &mut stale);
                    }
                }
            } else if stale.is_none() && collector.outstanding() > 0 {
                // Every key has its `W`: the batches still outstanding get a hint each of
                // their writes if they then fail or stay silent (`follow_up.rs`).
                let mut owned = Vec::new();
                let outstanding = (0..batches.len())
                    .filter(|&b| ok[b].is_none())
                    .map(|b| {
                        let first = owned.len();
                        owned.extend(writes[b].iter().map(OwnedWrite::of));
                        Outstanding {
                            index: b,
                            target: batches[b].0.clone(),
                            writes: (first..owned.len()).collect(),
                        }
                    })
                    .collect();
                FollowUp::spawn(self, collector, outstanding, owned, deadline);
            }
        }
        if let Some(e) = stale {
            return Err(e);
        }
        for (i, (k, _)) in pairs.iter().enumerate() {
            if settled && targets[i].iter().filter(|&&b| ok[b] == Some(true)).count() >= needed {
                continue;
            }
            let acked = acked_of(&ok, i);
            let t = token(k.as_ref());
            self.check_acks(routing, t, needed, &acked, &[], &mut errors)?;
        }
        Ok(())
    }

    /// The values of several keys, in order (`None` for absent or deleted ones).
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        crate::block::block_on(self.get_many_async(keys))
    }

    /// [`get_many`](Cluster::get_many) as a future: see [`put_async`](Cluster::put_async).
    ///
    /// # Errors
    /// As [`get`](Cluster::get).
    pub async fn get_many_async<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let routing = self.routing();
        Ok(self
            .read_many_async(routing, keys)
            .await?
            .into_iter()
            .map(|found| found.and_then(|c| live(c, || self.now_millis())))
            .collect())
    }

    /// A version for a new write: from the hybrid logical clock, and below the persisted
    /// lease, which is renewed half a [`LEASE_WINDOW`](crate::LEASE_WINDOW) before the clock reaches it, off this
    /// path (`lease.rs`), and persisted here only when the clock reached it first.
    ///
    /// # Errors
    /// [`Error::LeaseWait`](crate::Error::LeaseWait) while a restarted coordinator waits out
    /// its previous run's lease (see `clock.rs`); [`Error::Io`](crate::Error::Io) if the
    /// lease cannot be persisted.
    #[inline]
    pub(crate) fn next_version(&self) -> Result<Version> {
        let version = self.hlc.now();
        if version.as_u64() >= self.lease.renew_at() {
            if version.as_u64() >= self.lease.current() {
                self.extend_lease(version)?;
            } else {
                self.lease.renew(version);
            }
        }
        Ok(version)
    }

    /// Persists a lease [`LEASE_WINDOW`](crate::LEASE_WINDOW) past `version` on this thread, unless one above it
    /// is persisted already. Cold: the first write of a run (which also checks the previous
    /// run's lease here rather than on every write), and a renewal that did not land in time.
    #[cold]
    pub(crate) fn extend_lease(&self, version: Version) -> Result<()> {
        let floor = self.not_before.load(Ordering::Acquire);
        if version.as_u64() < floor {
            return Err(crate::Error::LeaseWait {
                remaining: std::time::Duration::from_millis(
                    Version::new(floor)
                        .millis()
                        .saturating_sub(version.millis())
                        .max(1),
                ),
            });
        }
        self.lease.persist_inline(version)
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
        routing: Arc<Routing>,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        consistency: Consistency,
        mode: Mode,
    ) -> Result<()> {
        crate::block::block_on(self.write_async(routing, key, value, version, consistency, mode))
    }

    async fn write_async(
        &self,
        routing: Arc<Routing>,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        consistency: Consistency,
        mode: Mode,
    ) -> Result<()> {
        let op = WriteOp {
            key,
            value,
            expires: None,
            version,
            consistency,
            mode,
            ask: Ask::Nothing,
        };
        self.write_reporting_async(routing, op).await?;
        Ok(())
    }

    /// Fails with [`Error::Unavailable`], before anything is written or read, when fewer
    /// than `needed` replicas of `token` (in the ring, and in the pending ring if any) are
    /// up: the operation could not reach its consistency level.
    ///
    /// The down replicas in `covered` count as up: a sloppy write has a stand-in for each.
    pub(crate) fn check_up(
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
}

/// [`Cluster::check_up`] for a routing without a pending ring: counts `replicas` (the ring's
/// replicas of the key), a down one in `covered` counting as up.
pub(crate) fn check_up_in(replicas: &[Slot<'_>], needed: usize, covered: &[&NodeId]) -> Result<()> {
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

/// The value of a cell read from the replicas, judged by the coordinator's clock: `None` for
/// a tombstone or an expired value. `now` is only called for a value with an expiry, so a
/// read of a key without one reads no clock.
#[inline]
pub(crate) fn live(cell: kv_node::Cell, now: impl FnOnce() -> u64) -> Option<bytes::Bytes> {
    match cell.expires {
        Some(e) if cell.value.is_some() && now() >= e => None,
        _ => cell.value,
    }
}
