//! The seeded fault generator (`docs/membership.md` §4.4, CI mode): every 1–3 s one of a
//! partition (a node cut from the other nodes, or from everyone) [weight 3], a slow link
//! [2], a node crash bounced after 0–6 s [3], or a clock skew [1]: one node's clock stepped
//! by up to ± [`SimConfig::skew_step_ms`](crate::SimConfig::skew_step_ms) for 1–8 s, then
//! stepped back to its drawn offset (a clock that jumps, then jumps back); at most one
//! fault of each kind at a time. Besides, at one draw in four (from a generator of its own),
//! every connection one node has to its peers is dropped (kv-net's `Faults::reset`: closed
//! at its next frame in, requests in flight failed, reconnected with backoff). At `until`
//! every fault heals and the generator stops. Every clock step is recorded ([`Faults::into_log`]) for the checker's bound.
//!
//! A partition is turmoil's `hold` (segments queued, delivered on `release`): TCP across a
//! cut shorter than its retransmission timeout. turmoil's `partition` drops segments for good
//! and its TCP does not retransmit, so a connection that lost one stalls forever; kv-net
//! keeps a connection whose liveness failed, so that would be a permanent cut, not a fault
//! that heals.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::node::Links;
use crate::node::Skew;
use crate::{Crashes, NODES, Restarted};

/// Mixed into the seed of the dropped connections' generator.
const DROPS_SEED: u64 = 0xd40b_c0de;

/// The links' normal maximum latency, in milliseconds.
pub(crate) const BASE_LATENCY_MS: u64 = 5;

pub(crate) struct Faults {
    rng: StdRng,
    until: Duration,
    next: Duration,
    /// Held links, when they are released and when they were held.
    held: Option<HeldLinks>,
    /// When the crashed node crashed.
    crashed_at: Duration,
    /// The crashed node and when it is bounced.
    crashed: Option<(Duration, &'static str)>,
    /// A slow link and when it is fast again.
    slow: Option<(Duration, (&'static str, &'static str))>,
    healed: bool,
    crashes: Crashes,
    restarted: Restarted,
    /// The node hosts faults are drawn among.
    hosts: &'static [&'static str],
    /// The client hosts (a node cut from everyone is cut from them too).
    clients: u32,
    /// Every host that is not a node (clients, admin, driver): a crashed node's links to
    /// them are cut while it crashes ([`Faults::crash`]).
    others: Vec<String>,
    log: Vec<String>,
    /// Each node that was cut off or crashed, from when to when.
    impaired: Vec<Impaired>,
    /// Each node's clock offset (indexed as `hosts`), and the offset drawn for it at the
    /// start, which a skew fault's end returns it to.
    clocks: Vec<(Skew, i64)>,
    /// The largest step of a skew fault, in milliseconds (0: no skew faults).
    skew_step_ms: i64,
    /// The skewed node (index into `hosts`) and when its clock steps back.
    skewed: Option<(Duration, usize)>,
    /// Every clock offset set: node, from when, the offset in milliseconds.
    steps: Vec<ClockStep>,
    /// The metadata raft's leader, in a run with one: a crash picks it with weight 2
    /// (membership.md §4.4).
    leader: Option<Leader>,
    /// Each node's transport faults, to drop its connections with.
    links: Links,
    /// The dropped connections' own draws, from a generator of their own, so that adding
    /// them left every other fault of a seed where it was.
    drops: StdRng,
}

/// A clock offset set on a node from a time on: node, time, offset in milliseconds.
pub(crate) type ClockStep = (String, Duration, i64);

/// What the fault generator did: its log, the impaired nodes, and the clock steps.
pub(crate) struct FaultLog {
    /// What was injected, with the simulated times.
    pub(crate) log: Vec<String>,
    /// Each node cut off or crashed, from when to when.
    pub(crate) impaired: Vec<Impaired>,
    /// Every clock offset, from the start's on.
    pub(crate) steps: Vec<ClockStep>,
}

/// Who leads the metadata raft now, if known.
pub(crate) type Leader = Box<dyn Fn() -> Option<&'static str>>;

/// Held links: when they are released, when they were held, and the pairs.
type HeldLinks = (Duration, Duration, Vec<(String, String)>);

/// A node cut off (held) or crashed from one time to another.
pub(crate) type Impaired = (String, Duration, Duration);

impl Faults {
    /// The generator for a run of `config` (its fault window, crashes, clients and skew
    /// step), drawing from `seed`, over the node `hosts` and their `clocks` (indexed
    /// alike), the other hosts `others`.
    pub(crate) fn new(
        seed: u64,
        config: &crate::SimConfig,
        restarted: Restarted,
        hosts: &'static [&'static str],
        others: Vec<String>,
        clocks: Vec<Skew>,
        links: Links,
    ) -> Faults {
        let (until, crashes, clients) = (config.faults_until, config.crashes, config.clients);
        let steps = hosts
            .iter()
            .zip(&clocks)
            .map(|(h, c)| (h.to_string(), Duration::ZERO, c.load(Ordering::Relaxed)))
            .collect();
        Faults {
            clocks: clocks
                .into_iter()
                .map(|c| {
                    let base = c.load(Ordering::Relaxed);
                    (c, base)
                })
                .collect(),
            skew_step_ms: i64::try_from(config.skew_step_ms).unwrap_or(i64::MAX),
            skewed: None,
            steps,
            rng: StdRng::seed_from_u64(seed),
            until,
            next: Duration::from_secs(3),
            held: None,
            crashed_at: Duration::ZERO,
            crashed: None,
            slow: None,
            healed: false,
            crashes,
            restarted,
            hosts,
            clients,
            others,
            log: Vec::new(),
            impaired: Vec::new(),
            leader: None,
            links,
            drops: StdRng::seed_from_u64(seed ^ DROPS_SEED),
        }
    }

    /// One time in four, cuts every connection a random node has to its peers (kv-net's
    /// `Faults::reset`: each is closed at its next frame in, its requests in flight fail, and
    /// it comes back with backoff), as a network dropping connections does. A crashed node's
    /// switches are its last start's and act on nothing.
    fn drop_connections(&mut self, now: Duration) {
        if !self.drops.random_bool(0.25) {
            return;
        }
        let node = self.hosts[self.drops.random_range(0..self.hosts.len())];
        let Some(faults) = self.links.lock().get(node).cloned() else {
            return;
        };
        for peer in self.hosts.iter().filter(|h| **h != node) {
            faults.reset(peer);
        }
        self.log.push(format!("{now:?} drop {node}'s connections"));
    }

    /// Crashes pick the metadata raft's leader, as `leader` tells it, half the time.
    pub(crate) fn with_leader(mut self, leader: Leader) -> Faults {
        self.leader = Some(leader);
        self
    }

    /// Crashes `node` now for `down`, unless a node is crashed already, `node` may not
    /// crash, or the faults have stopped; whether it did. `why` goes to the log.
    pub(crate) fn crash_now(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        node: &'static str,
        down: Duration,
        why: &str,
    ) -> bool {
        let now = sim.elapsed();
        if self.crashed.is_some() || !self.may_crash(node) || now >= self.until {
            return false;
        }
        sim.crash(node);
        self.log
            .push(format!("{now:?} crash {node} for {down:?} ({why})"));
        self.crashed = Some((now + down, node));
        self.crashed_at = now;
        true
    }

    /// What was injected, with the simulated times.
    pub(crate) fn into_log(self) -> FaultLog {
        FaultLog {
            log: self.log,
            impaired: self.impaired,
            steps: self.steps,
        }
    }

    /// Sets node `index`'s clock offset from `now` on, and records it.
    fn set_clock(&mut self, index: usize, now: Duration, offset: i64) {
        self.clocks[index].0.store(offset, Ordering::Relaxed);
        self.steps
            .push((self.hosts[index].to_string(), now, offset));
    }

    /// Crashes `node` without a word on the wire: what its sockets send while the crashed
    /// runtime drops them (a FIN or RST each) is discarded.
    ///
    /// turmoil drops a crashed host's tasks in the order of tokio's task list, sharded by
    /// task id, and task ids come from a counter global to the process (every run, every
    /// test thread), so that order differs from one run of a seed to the next. Each
    /// segment a dropped socket sent drew its latency from the simulation's rng, so the
    /// order reshuffled every later latency, and peers saw the connections end in another
    /// order. Cut one way around the crash, nothing is sent and nothing drawn: the host
    /// vanishes as a machine does when it loses power, and peers learn of it from their own
    /// next segment (answered by a reset) or from kv-net's liveness, on simulated time.
    /// Segments already on the wire to it are kept (they meet closed sockets: resets);
    /// those it sent in its last milliseconds and not yet delivered are lost with it (a
    /// reply then turns into the client's timeout, `Unknown`).
    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, node: &str) {
        let others: Vec<&str> = self
            .hosts
            .iter()
            .copied()
            .filter(|n| *n != node)
            .chain(self.others.iter().map(String::as_str))
            .collect();
        for other in &others {
            sim.partition_oneway(node, *other);
        }
        sim.crash(node);
        for other in &others {
            sim.repair_oneway(node, *other);
        }
        // The repair made the links from the node healthy: a cut of it that is still on
        // holds them again (what the node had held on them died with it).
        if let Some((_, _, pairs)) = &self.held {
            for (a, b) in pairs {
                if a == node || b == node {
                    sim.hold(a.as_str(), b.as_str());
                }
            }
        }
    }

    /// Whether `node` may be crashed.
    fn may_crash(&self, node: &str) -> bool {
        match self.crashes {
            Crashes::Off => false,
            Crashes::Replicas => node != NODES[0],
            Crashes::Any => true,
        }
    }

    /// Ends the faults that are due, and draws a new one when its time comes.
    pub(crate) fn tick(&mut self, sim: &mut turmoil::Sim<'_>) {
        let now = sim.elapsed();
        let stopping = now >= self.until;
        if let Some((end, start, pairs)) = &self.held
            && (stopping || now >= *end)
        {
            for (a, b) in pairs {
                sim.release(a.as_str(), b.as_str());
            }
            self.log.push(format!("{now:?} release {pairs:?}"));
            if let Some((node, _)) = pairs.first() {
                self.impaired.push((node.clone(), *start, now));
            }
            self.held = None;
        }
        if let Some((end, node)) = self.crashed
            && (stopping || now >= end)
        {
            sim.bounce(node);
            self.log.push(format!("{now:?} bounce {node}"));
            self.impaired.push((node.to_string(), self.crashed_at, now));
            self.crashed = None;
        }
        if let Some((end, (a, b))) = self.slow
            && (stopping || now >= end)
        {
            sim.set_link_max_message_latency(a, b, Duration::from_millis(BASE_LATENCY_MS));
            self.log.push(format!("{now:?} fast {a}-{b}"));
            self.slow = None;
        }
        if let Some((end, index)) = self.skewed
            && (stopping || now >= end)
        {
            let base = self.clocks[index].1;
            self.set_clock(index, now, base);
            self.log
                .push(format!("{now:?} unskew {} to {base}ms", self.hosts[index]));
            self.skewed = None;
        }
        if stopping {
            if !self.healed {
                self.healed = true;
                self.log.push(format!("{now:?} faults stop"));
            }
            return;
        }
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_millis(self.rng.random_range(1000..3000));
        self.drop_connections(now);
        let mut node = self.hosts[self.rng.random_range(0..self.hosts.len())];
        // Half the time the fault falls on the raft leader (a crash of it: weight 2 among
        // crashes, membership.md §4.4; a partition of it cuts raft's traffic too).
        let mut leader = "";
        if let Some(l) = &self.leader
            && self.rng.random_bool(0.5)
            && let Some(l) = l()
        {
            node = l;
            leader = " (leader)";
        }
        let span = Duration::from_millis(self.rng.random_range(1000..8000));
        match self.rng.random_range(0..9) {
            0..=2 if self.held.is_none() => {
                let mut others: Vec<String> = self
                    .hosts
                    .iter()
                    .filter(|n| **n != node)
                    .map(|n| n.to_string())
                    .collect();
                let from_all = self.rng.random_bool(0.5);
                if from_all {
                    others.extend((0..self.clients).map(|c| format!("client{c}")));
                    others.push("admin".to_string());
                }
                let pairs: Vec<(String, String)> =
                    others.into_iter().map(|o| (node.to_string(), o)).collect();
                for (a, b) in &pairs {
                    sim.hold(a.as_str(), b.as_str());
                }
                let what = if from_all { "everyone" } else { "the nodes" };
                self.log
                    .push(format!("{now:?} hold {node} from {what} for {span:?}"));
                self.held = Some((now + span, now, pairs));
            }
            3..=4 if self.slow.is_none() => {
                let other = self
                    .hosts
                    .iter()
                    .copied()
                    .find(|n| *n != node)
                    .unwrap_or(node);
                let latency = Duration::from_millis(self.rng.random_range(50..500));
                sim.set_link_max_message_latency(node, other, latency);
                self.log.push(format!(
                    "{now:?} slow {node}-{other} {latency:?} for {span:?}"
                ));
                self.slow = Some((now + span, (node, other)));
            }
            5..=7 if self.crashed.is_none() && self.may_crash(node) => {
                if self.crashes == Crashes::Replicas {
                    let i = NODES.iter().position(|n| *n == node).unwrap_or(0);
                    self.restarted.lock()[i] = true;
                }
                let down = Duration::from_millis(self.rng.random_range(0..6000));
                self.crash(sim, node);
                self.log
                    .push(format!("{now:?} crash {node} for {down:?}{leader}"));
                self.crashed = Some((now + down, node));
                self.crashed_at = now;
            }
            8 if self.skewed.is_none() && self.skew_step_ms > 0 => {
                let index = self.hosts.iter().position(|h| *h == node).unwrap_or(0);
                let step = self
                    .rng
                    .random_range(-self.skew_step_ms..=self.skew_step_ms);
                let offset = self.clocks[index].1.saturating_add(step);
                self.set_clock(index, now, offset);
                self.log.push(format!(
                    "{now:?} skew {node} by {step}ms to {offset}ms for {span:?}"
                ));
                self.skewed = Some((now + span, index));
            }
            _ => {}
        }
    }
}
