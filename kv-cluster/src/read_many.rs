//! Batched reads: [`Cluster::get_many`] asks each replica once for all of its keys.
//!
//! A read of one key asks its first up replica for the record and the next `R - 1` for the
//! version only (see `ops.rs`). For many keys, the same questions are grouped by replica: one
//! [`Replica::read_many`] per first replica and one [`Replica::read_versions`] per other, so
//! a storage node can overlap its cache misses across the keys (`kv_node::Node::get_many`).
//!
//! The answers are then checked per key as a single read checks them. Whatever is not the
//! common case goes back to the single-key read for that key, which handles it: a replica
//! that reported a *newer* version than the record fetched (the read must return that
//! record), a group whose request failed (the single read moves on to the next replica), a
//! key with fewer than `R` replicas up (the single read reports it unavailable), and every
//! key while a membership change is pending. A replica that reported an *older* version is
//! repaired with the newest record, best effort, as a single read does.

use std::sync::Arc;
use std::time::Instant;

use kv_node::{Cell, Version};
use kv_ring::token;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::pending::{Collector, Started};
use crate::replica::Replica;
use crate::routing::Routing;

/// The questions for one replica: the positions of the keys it is asked about.
struct Group<'r> {
    node: &'r Arc<dyn Replica>,
    keys: Vec<usize>,
}

/// Adds key `i` to `node`'s group.
fn ask<'r>(groups: &mut Vec<Group<'r>>, node: &'r Arc<dyn Replica>, i: usize) {
    match groups.iter_mut().find(|g| Arc::ptr_eq(g.node, node)) {
        Some(g) => g.keys.push(i),
        None => groups.push(Group {
            node,
            keys: vec![i],
        }),
    }
}

/// One key's answers so far.
#[derive(Default)]
struct Answer<'r> {
    /// The first replica's record.
    newest: Option<Cell>,
    /// The other replicas asked, with the version each holds (`Version::ZERO`: none).
    others: smallvec::SmallVec<[(&'r Arc<dyn Replica>, Version); 2]>,
    /// Not answered here: the single-key read decides.
    slow: bool,
}

impl Cluster {
    /// The newest record of each key among `R` replicas (tombstones included), with
    /// read repair: what [`Cluster::read`] answers for each key, in order.
    ///
    /// It is a future: it waits on remote replicas without blocking the thread.
    ///
    /// On an external topology, a replica's stale refusal ends it, and the whole batch is
    /// retried once on the newer topology (`epoch_watch.rs`).
    ///
    /// # Errors
    /// As [`read`](Cluster::read) for any key; [`Error::StaleCoordinator`].
    pub(crate) async fn read_many_async<K: AsRef<[u8]>>(
        &self,
        routing: Arc<Routing>,
        keys: &[K],
    ) -> Result<Vec<Option<Cell>>> {
        let first = self.read_many_once(&routing, keys).await;
        match first {
            Err(e) if self.ends_round(&e) => {
                // Not held while it waits: see `refresh`.
                drop(routing);
                let (next, started) = self.refresh(e).await?;
                let again = self.read_many_once(&next, keys).await;
                self.retried(again, started)
            }
            done => done,
        }
    }

    /// One attempt of [`read_many_async`](Cluster::read_many_async), routed by `routing`
    /// (its single-key reads are single attempts too: the batch is retried as a whole).
    async fn read_many_once<K: AsRef<[u8]>>(
        &self,
        routing: &Routing,
        keys: &[K],
    ) -> Result<Vec<Option<Cell>>> {
        let consistency = self.opts.read;
        if routing.pending.is_some() || keys.len() < 2 {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                out.push(self.read_once(routing, k.as_ref(), consistency).await?);
            }
            return Ok(out);
        }
        let needed = consistency.required(self.rf);
        let epoch = routing.epoch();
        let mut answers: Vec<Answer<'_>> = keys.iter().map(|_| Answer::default()).collect();
        let mut full: Vec<Group<'_>> = Vec::new();
        let mut versions: Vec<Group<'_>> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let replicas = routing.replicas(token(k.as_ref()), self.rf)?;
            let mut up: smallvec::SmallVec<[&Arc<dyn Replica>; 4]> = replicas
                .iter()
                .filter_map(|&(_, node)| node)
                .filter(|n| !n.is_down())
                .collect();
            crate::read::local_first(&mut up);
            let asked = &up[..needed.min(up.len())];
            // Fewer than `R` up, or a replica without a handle: the single read reports it.
            if asked.len() < needed || replicas.iter().any(|(_, n)| n.is_none()) {
                answers[i].slow = true;
                continue;
            }
            if let Some((first, rest)) = asked.split_first() {
                ask(&mut full, first, i);
                for node in rest {
                    ask(&mut versions, node, i);
                }
            }
        }
        // Every group's request is submitted before any answer is waited for.
        let fulls: Collector<Vec<Option<Cell>>> = Collector::new();
        let digests: Collector<Vec<Option<Version>>> = Collector::new();
        let key_lists =
            |g: &Group<'_>| -> Vec<&[u8]> { g.keys.iter().map(|&i| keys[i].as_ref()).collect() };
        let full_keys: Vec<Vec<&[u8]>> = full.iter().map(key_lists).collect();
        let version_keys: Vec<Vec<&[u8]>> = versions.iter().map(key_lists).collect();
        let mut got_full = Vec::with_capacity(full.len());
        for (n, g) in full.iter().enumerate() {
            if let Started::Done(a) = g
                .node
                .start_read_many(epoch, &full_keys[n], fulls.ticket(n))
            {
                got_full.push((n, a));
            }
        }
        let mut got_versions = Vec::with_capacity(versions.len());
        for (n, g) in versions.iter().enumerate() {
            let ticket = digests.ticket(n);
            if let Started::Done(a) = g.node.start_read_versions(epoch, &version_keys[n], ticket) {
                got_versions.push((n, a));
            }
        }
        if fulls.outstanding() + digests.outstanding() > 0 {
            // A group that does not answer in time leaves its keys to the single-key read,
            // which moves on to the next replica.
            // A stale refusal ends the round at once (external topology, see below).
            let deadline = Instant::now() + self.opts.replica_timeout;
            let mut stale = false;
            while !stale && let Some(a) = fulls.wait(deadline).await {
                stale = matches!(&a.1, Err(e) if self.ends_round(e));
                got_full.push(a);
            }
            while !stale && let Some(a) = digests.wait(deadline).await {
                stale = matches!(&a.1, Err(e) if self.ends_round(e));
                got_versions.push(a);
            }
            for (n, g) in full.iter().enumerate() {
                if !got_full.iter().any(|(m, _)| *m == n) {
                    g.keys.iter().for_each(|&i| answers[i].slow = true);
                }
            }
            for (n, g) in versions.iter().enumerate() {
                if !got_versions.iter().any(|(m, _)| *m == n) {
                    g.keys.iter().for_each(|&i| answers[i].slow = true);
                }
            }
        }
        // A stale refusal (external topology) ends the batch, to be redone on the newer
        // routing: its keys read one by one would only be refused again.
        if let Some(e) = self
            .take_stale(&mut got_full)
            .or_else(|| self.take_stale(&mut got_versions))
        {
            return Err(e);
        }
        for (n, a) in got_full {
            let g = &full[n];
            match a {
                Ok(found) if found.len() == g.keys.len() => {
                    for (&i, f) in g.keys.iter().zip(found) {
                        answers[i].newest = f;
                    }
                }
                _ => g.keys.iter().for_each(|&i| answers[i].slow = true),
            }
        }
        for (n, a) in got_versions {
            let g = &versions[n];
            match a {
                Ok(found) if found.len() == g.keys.len() => {
                    for (&i, v) in g.keys.iter().zip(found) {
                        answers[i].others.push((g.node, v.unwrap_or(Version::ZERO)));
                    }
                }
                _ => g.keys.iter().for_each(|&i| answers[i].slow = true),
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for (k, a) in keys.iter().zip(answers) {
            let have = a.newest.as_ref().map_or(Version::ZERO, |c| c.version);
            if a.slow || a.others.iter().any(|&(_, v)| v > have) {
                out.push(self.read_once(routing, k.as_ref(), consistency).await?);
                continue;
            }
            if let Some(cell) = &a.newest {
                self.observe(cell.version);
                // The record as read, expiry included (see `Cluster::read`'s repair).
                let write = cell.as_write(k.as_ref());
                for (n, (node, seen)) in a.others.iter().enumerate() {
                    if *seen < cell.version {
                        // Best effort, not waited for if deferred (as a single read's
                        // repair): a replica that fails here is left to anti-entropy.
                        let abandon: Collector<bool> = Collector::new();
                        let _ = node.start_apply(epoch, write, abandon.ticket(n));
                    }
                }
            }
            out.push(a.newest);
        }
        Ok(out)
    }
}

impl Cluster {
    /// The first stale refusal among `answers` that ends a round ([`Cluster::ends_round`]),
    /// taken out of them.
    fn take_stale<T>(&self, answers: &mut [(usize, Result<T>)]) -> Option<Error> {
        let at = answers
            .iter()
            .position(|(_, a)| matches!(a, Err(e) if self.ends_round(e)))?;
        std::mem::replace(&mut answers[at].1, Err(Error::Dropped)).err()
    }
}
