//! Random schedules of membership changes cut short at a random progress point (the
//! cluster then dropped without a clean shutdown, or left pending), node failures and
//! crashes (the joiner of a pending change included), reopens during which some node cannot
//! be opened, sources whose export fails midway, cleanups that fail, and client writes
//! throughout (between steps and from inside the progress callback, while ranges stream),
//! with the sloppy quorum on or off. Every acknowledged write is kept in a model.
//!
//! When the schedule ends every fault is cleared, every node recovered and the pending change
//! completed; then:
//! - before any repair, in the runs whose writes reach every live replica (no write faults)
//!   and in which no down node was removed (its hints go with it), every replica of every key
//!   in the final ring, read directly, already holds the key's last acknowledged write: the
//!   changes, hints and recoveries alone delivered it;
//! - after a repair, in every run, the same holds, and each key is on exactly its replicas.
//!
//! Half of the runs also make one node's writes fail now and then (a live replica that misses
//! an acknowledged write); a write that fails outright may still have reached some replicas,
//! so its key is written again once the faults are cleared.
//!
//! A seed fixes the schedule (the streaming threads' timing aside). CI runs a few seeds in a
//! few seconds. Soak by hand:
//!
//! ```text
//! KV_SOAK_ITERS=2000 cargo test -p kv-cluster --release --test random_crashes_during_changes
//! KV_SOAK_SEED=1234 cargo test -p kv-cluster --test random_crashes_during_changes   # one seed
//! KV_SOAK_SEED=5000 KV_SOAK_ITERS=500 cargo test ...           # seeds 5000..5500
//! ```
//!
//! A failing run prints its seed and the steps it took (`KV_SOAK_VERBOSE=1` prints every
//! run's). The interleaving of streaming threads with the writes made from the progress
//! callback varies from run to run, so a timing-dependent failure may need its seed run a few
//! dozen times to show again.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::faulty::FaultyBackend;
use kv_cluster::{ChangeKind, Cluster, ClusterOptions, Consistency, Error, Progress};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seeds a CI run covers.
const CI_ITERS: u64 = 16;
const KEYS: u64 = 300;
const STEPS: usize = 20;
const MAX_NODES: usize = 6;

/// What one run shares between its steps.
struct Run {
    rng: StdRng,
    backend: Arc<FaultyBackend>,
    opts: ClusterOptions,
    model: common::Model,
    rf: usize,
    /// Writes may fail on a live replica.
    lossy: bool,
    /// Keys whose write failed: it may have reached some replicas, at a version the model
    /// does not know. Written again at the end.
    tainted: RefCell<BTreeSet<Vec<u8>>>,
    /// A node was removed while down: the hints it held are gone, and their targets wait for
    /// repair.
    dead_removed: bool,
    next_id: usize,
    log: Rc<RefCell<Vec<String>>>,
}

/// Prints the run's seed and steps if it panics.
struct Report(u64, Rc<RefCell<Vec<String>>>);

impl Drop for Report {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("KV_SOAK_VERBOSE").is_some() {
            let outcome = if std::thread::panicking() {
                "failed"
            } else {
                "passed"
            };
            eprintln!("seed {} {outcome} after: {:#?}", self.0, self.1.borrow());
        }
    }
}

impl Run {
    fn note(&self, step: String) {
        self.log.borrow_mut().push(step);
    }

    /// `n` client operations: puts (strict or sloppy), deletes and reads.
    fn clients(&self, cluster: &Cluster, rng: &mut StdRng, n: usize) {
        let faults = &self.backend.faults;
        if self.lossy && rng.random_bool(0.3) {
            let nodes = cluster.nodes();
            let id = nodes[rng.random_range(0..nodes.len())].id.to_string();
            *faults.down.lock() = vec![id];
        }
        for _ in 0..n {
            let k = common::key(rng.random_range(0..KEYS));
            let v = rng.random::<u32>().to_be_bytes().to_vec();
            let outcome = match rng.random_range(0..10) {
                0..5 => cluster.put(&k, &v).map(|ver| Some((Some(v), ver))),
                5..7 => cluster
                    .put_sloppy(&k, &v, Consistency::Quorum)
                    .map(|ver| Some((Some(v), ver))),
                7 => cluster.delete(&k).map(|ver| Some((None, ver))),
                _ => cluster.get(&k).map(|_| None),
            };
            match outcome {
                Ok(Some((value, version))) => self.model.acked(&k, value.as_deref(), version),
                Ok(None) => {}
                Err(Error::Unavailable { .. }) => {
                    self.tainted.borrow_mut().insert(k);
                }
                Err(e) => panic!("client operation: {e}"),
            }
        }
        faults.down.lock().clear();
    }

    fn open(&self, dir: &Path) -> Cluster {
        match Cluster::open(dir, self.opts.clone()) {
            Ok(c) => c,
            Err(e) => {
                // A member of the committed ring could not be opened: that refuses the open.
                self.note(format!("open failed: {e}"));
                self.backend.faults.open_down.lock().clear();
                Cluster::open(dir, self.opts.clone()).unwrap()
            }
        }
    }

    /// Drops the cluster without a clean shutdown and opens it again, some node perhaps
    /// failing to open.
    fn reopen(&mut self, dir: &Path, cluster: Cluster) -> Cluster {
        let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.id.to_string()).collect();
        let joiner = match cluster.pending_change() {
            Some((ChangeKind::Add, id)) => Some(id.to_string()),
            _ => None,
        };
        drop(cluster);
        if self.rng.random_bool(0.4) {
            // The joiner of a pending add, mostly; a member of the committed ring refuses the
            // open (then it opens without the fault).
            let id = match joiner {
                Some(j) if self.rng.random_bool(0.8) => j,
                _ => nodes[self.rng.random_range(0..nodes.len())].clone(),
            };
            self.note(format!("reopen, {id} cannot be opened"));
            self.backend.faults.open_down.lock().push(id);
        } else {
            self.note("reopen".into());
        }
        let cluster = self.open(dir);
        self.backend.faults.open_down.lock().clear();
        if let Some(e) = cluster.change_error() {
            self.note(format!("  pending: {e}"));
        }
        cluster
    }

    /// Starts a join or a leave with random faults and a random stopping point, writing
    /// from inside the progress callback. Returns whether the cluster should now be dropped
    /// (a crash at that point).
    fn change(&mut self, cluster: &Cluster) -> bool {
        let members: Vec<String> = cluster.ring().nodes().map(|n| n.to_string()).collect();
        let down: Vec<String> = cluster
            .nodes()
            .iter()
            .filter(|n| !n.health.is_up())
            .map(|n| n.id.to_string())
            .collect();
        let can_remove = members.len() > self.rf;
        let add = members.len() < MAX_NODES && (!can_remove || self.rng.random_bool(0.5));
        let node = if add {
            self.next_id += 1;
            format!("node{}", self.next_id)
        } else {
            // A down node is removed only when it is the only one down (its survivors must
            // hold every write it had).
            let candidates: Vec<&String> = members
                .iter()
                .filter(|m| down.is_empty() || (down.len() == 1 && down.contains(m)))
                .collect();
            if candidates.is_empty() {
                return false;
            }
            candidates[self.rng.random_range(0..candidates.len())].clone()
        };
        let faults = &self.backend.faults;
        if self.rng.random_bool(0.3) {
            let src = &members[self.rng.random_range(0..members.len())];
            let after = self.rng.random_range(0..4);
            self.note(format!("  {src}'s export fails after {after} batches"));
            faults.export_budget.lock().insert(src.clone(), after);
        }
        let fail_cleanup = self.rng.random_bool(0.1);
        faults.drop.store(fail_cleanup, Ordering::Relaxed);
        let stop_at = self
            .rng
            .random_bool(0.6)
            .then(|| self.rng.random_range(1..10usize));
        let mut rng = StdRng::seed_from_u64(self.rng.random());
        let mut batches = 0;
        let progress = |_: &Progress| {
            batches += 1;
            if rng.random_bool(0.3) {
                self.clients(cluster, &mut rng, 5);
            }
            match stop_at {
                Some(n) if batches >= n => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        };
        let outcome = if add {
            cluster.add_node_with_progress(&node, progress)
        } else {
            cluster.remove_node_with_progress(&node, progress)
        };
        faults.export_budget.lock().clear();
        faults.drop.store(false, Ordering::Relaxed);
        let kind = if add { "add" } else { "remove" };
        let was_down = down.contains(&node);
        match outcome {
            Ok(_) => {
                self.note(format!("{kind} {node}"));
                self.dead_removed |= was_down;
                false
            }
            Err(e) => {
                self.note(format!("{kind} {node} (stop at {stop_at:?}): {e}"));
                let crash = self.rng.random_bool(0.5);
                if !crash && self.rng.random_bool(0.5) {
                    // The joiner (or another node) goes down while the change is pending.
                    let nodes = cluster.nodes();
                    let id = if add && self.rng.random_bool(0.7) {
                        node.clone()
                    } else {
                        nodes[self.rng.random_range(0..nodes.len())].id.to_string()
                    };
                    if cluster.fail_node(&id).is_ok() {
                        self.note(format!("  fail {id}"));
                    }
                }
                crash
            }
        }
    }

    /// One step besides the client writes.
    fn step(&mut self, dir: &Path, cluster: Cluster) -> Cluster {
        let nodes = cluster.nodes();
        let down: Vec<String> = nodes
            .iter()
            .filter(|n| !n.health.is_up())
            .map(|n| n.id.to_string())
            .collect();
        match self.rng.random_range(0..12) {
            0..2 if down.len() < self.rf - 1 => {
                let id = nodes[self.rng.random_range(0..nodes.len())].id.to_string();
                let crash = self.rng.random_bool(0.5);
                let r = if crash {
                    cluster.crash_node(&id)
                } else {
                    cluster.fail_node(&id)
                };
                if r.is_ok() {
                    self.note(format!("{} {id}", if crash { "crash" } else { "fail" }));
                }
            }
            2..4 if !down.is_empty() => {
                let id = &down[self.rng.random_range(0..down.len())];
                let r = cluster.recover_node(id);
                self.note(format!("recover {id}: {:?}", r.map(|_| ()).err()));
            }
            4..8 => {
                if cluster.pending_change().is_some() {
                    let r = cluster.resume_change(|_| ControlFlow::Continue(()));
                    self.note(format!("resume: {:?}", r.map(|_| ()).err()));
                } else if self.change(&cluster) {
                    return self.reopen(dir, cluster);
                }
            }
            8..10 => return self.reopen(dir, cluster),
            10 => {
                let r = cluster.repair();
                self.note(format!("repair: {:?}", r.map(|_| ()).err()));
            }
            _ => {}
        }
        cluster
    }

    /// Clears every fault, recovers every node and completes the pending change.
    fn heal(&self, cluster: &Cluster) {
        let faults = &self.backend.faults;
        faults.down.lock().clear();
        faults.open_down.lock().clear();
        faults.export_budget.lock().clear();
        faults.drop.store(false, Ordering::Relaxed);
        for _ in 0..5 {
            for n in cluster.nodes() {
                if !n.health.is_up() {
                    let r = cluster.recover_node(n.id.as_str());
                    self.note(format!("heal: recover {}: {:?}", n.id, r.map(|_| ()).err()));
                }
            }
            match cluster.resume_change(|_| ControlFlow::Continue(())) {
                Ok(_) => break,
                Err(e) => self.note(format!("heal: resume: {e}")),
            }
        }
        assert_eq!(cluster.pending_change(), None, "the change cannot complete");
        assert_eq!(cluster.change_error(), None);
        assert!(cluster.nodes().iter().all(|n| n.health.is_up()));
        // Keys whose write failed: one more write settles what they hold.
        for k in std::mem::take(&mut *self.tainted.borrow_mut()) {
            let version = cluster.put(&k, b"settled").unwrap();
            self.model.acked(&k, Some(b"settled"), version);
        }
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FaultyBackend::default());
    let rf = if rng.random_bool(0.7) { 3 } else { 2 };
    let initial = rng.random_range(rf.max(3)..=5);
    let sloppy = rng.random_bool(0.5);
    let opts = common::memory_opts()
        .backend(backend.clone())
        .replication_factor(rf)
        .vnodes(8)
        .initial_nodes((1..=initial).map(|i| format!("node{i}")))
        .sloppy_quorum(sloppy)
        .transfer_batch(rng.random_range(10..40))
        .transfer_streams(rng.random_range(1..=2));
    let mut r = Run {
        lossy: seed % 2 == 1,
        rng,
        backend,
        opts,
        model: common::Model::default(),
        rf,
        tainted: RefCell::default(),
        dead_removed: false,
        next_id: initial,
        log: Rc::new(RefCell::new(vec![format!(
            "rf {rf}, {initial} nodes, sloppy {sloppy}, lossy {}",
            seed % 2 == 1
        )])),
    };
    let _report = Report(seed, Rc::clone(&r.log));
    let mut cluster = r.open(dir.path());
    let mut clients_rng = StdRng::seed_from_u64(r.rng.random());
    r.clients(&cluster, &mut clients_rng, 200);
    for _ in 0..STEPS {
        cluster = r.step(dir.path(), cluster);
        let n = r.rng.random_range(10..40);
        r.clients(&cluster, &mut clients_rng, n);
    }
    r.heal(&cluster);
    if !r.lossy && !r.dead_removed {
        common::assert_every_replica_fresh(&cluster, &r.model);
    }
    cluster.repair().unwrap();
    common::assert_every_replica_fresh(&cluster, &r.model);
    common::check(&cluster, &r.model);
}

/// The seeds to run: `KV_SOAK_SEED` (default 0) and `KV_SOAK_ITERS` after it (default
/// [`CI_ITERS`], or 1 when only a seed is given).
fn seeds() -> std::ops::Range<u64> {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let first = var("KV_SOAK_SEED");
    let iters = var("KV_SOAK_ITERS").unwrap_or(if first.is_some() { 1 } else { CI_ITERS });
    let first = first.unwrap_or(0);
    first..first + iters
}

#[test]
fn every_acknowledged_write_reaches_every_final_replica() {
    for seed in seeds() {
        run(seed);
    }
}
