//! Fault injection in the transport, for tests: drop, delay, duplicate or black-hole the
//! frames exchanged with a chosen peer, in a chosen direction, switched at run time; or cut
//! the connection to a peer once ([`Faults::reset`]), as a connection reset by the network.
//!
//! Faults act on the frames of a [`Peers`](crate::Peers) connection: `Outbound` on what this
//! node sends (requests, pings), `Inbound` on what it receives (responses, pongs). Every
//! message between two nodes crosses one of their `Peers`, so a test reaches any message by
//! setting faults on the right node. Bulk streams see only an outbound black hole: a stream
//! cannot be opened across it, and one already open stalls (its sender fails at its stall
//! timeout) until it heals. Handshakes are not affected.
//!
//! Off by default and then free: every frame pays one relaxed atomic load. Random choices
//! (a drop's probability) come from one RNG seeded by the caller, so a run can be repeated.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which frames of a peer a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Frames this node sends to the peer.
    Outbound,
    /// Frames this node receives from the peer.
    Inbound,
}

/// What happens to a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Each frame is dropped with this probability (0.0 to 1.0).
    Drop {
        /// The probability of a drop.
        probability: f64,
    },
    /// Each frame is delivered this much later.
    Delay(Duration),
    /// Each frame is delivered twice.
    Duplicate,
    /// Every frame is dropped (with both directions: a partition; heartbeats stop, so the peer
    /// is soon not alive).
    BlackHole,
}

/// What the transport does with one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    Pass,
    Drop,
    Delay(Duration),
    Duplicate,
    /// Cut the connection (inbound only: see [`Faults::reset`]).
    Reset,
}

/// A handle on the faults of one [`Peers`](crate::Peers); cheap to clone, shared with the
/// transport's tasks.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use kv_net::{Direction, Fault, Faults};
///
/// let faults = Faults::new(42);
/// faults.set("node2", Direction::Outbound, Fault::Delay(Duration::from_millis(20)));
/// faults.partition("node3");
/// assert!(faults.is_active());
/// faults.clear_all();
/// assert!(!faults.is_active());
/// ```
#[derive(Clone, Debug)]
pub struct Faults {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// True while any rule is set: the only thing the frame path reads when faults are off.
    active: AtomicBool,
    rules: Mutex<Rules>,
}

#[derive(Debug)]
struct Rules {
    by_peer: HashMap<String, [Option<Fault>; 2]>,
    /// Peers whose connection is cut at its next inbound frame ([`Faults::reset`]).
    resets: HashSet<String>,
    rng: StdRng,
}

impl Rules {
    fn any(&self) -> bool {
        !self.by_peer.is_empty() || !self.resets.is_empty()
    }
}

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
    }
}

impl Faults {
    /// No faults; random choices seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                active: AtomicBool::new(false),
                rules: Mutex::new(Rules {
                    by_peer: HashMap::new(),
                    resets: HashSet::new(),
                    rng: StdRng::seed_from_u64(seed),
                }),
            }),
        }
    }

    /// Sets the fault for a peer and direction, replacing the previous one.
    pub fn set(&self, peer: &str, direction: Direction, fault: Fault) {
        let mut rules = self.inner.rules.lock();
        rules.by_peer.entry(peer.to_string()).or_default()[slot(direction)] = Some(fault);
        self.inner.active.store(true, Ordering::Release);
    }

    /// Removes the fault of a peer and direction.
    pub fn clear(&self, peer: &str, direction: Direction) {
        let mut rules = self.inner.rules.lock();
        if let Some(both) = rules.by_peer.get_mut(peer) {
            both[slot(direction)] = None;
            if both.iter().all(Option::is_none) {
                rules.by_peer.remove(peer);
            }
        }
        self.inner.active.store(rules.any(), Ordering::Release);
    }

    /// Black-holes both directions of a peer: a network partition between this node and it.
    pub fn partition(&self, peer: &str) {
        self.set(peer, Direction::Outbound, Fault::BlackHole);
        self.set(peer, Direction::Inbound, Fault::BlackHole);
    }

    /// Removes every fault of a peer (heals a partition).
    pub fn heal(&self, peer: &str) {
        let mut rules = self.inner.rules.lock();
        rules.by_peer.remove(peer);
        self.inner.active.store(rules.any(), Ordering::Release);
    }

    /// Cuts the connection to `peer` once, as a connection reset by the network: at its next
    /// inbound frame (an answer, or the next pong: within a heartbeat interval) the
    /// connection is closed, every request in flight on it fails at once with
    /// [`Error::Disconnected`](crate::Error::Disconnected), and it is reestablished with
    /// backoff. Other faults of the peer stay as they are.
    ///
    /// # Example
    ///
    /// ```
    /// let faults = kv_net::Faults::new(7);
    /// faults.reset("node2");
    /// assert!(faults.is_active()); // until the connection has been cut
    /// ```
    pub fn reset(&self, peer: &str) {
        let mut rules = self.inner.rules.lock();
        rules.resets.insert(peer.to_string());
        self.inner.active.store(true, Ordering::Release);
    }

    /// Removes every fault.
    pub fn clear_all(&self) {
        let mut rules = self.inner.rules.lock();
        rules.by_peer.clear();
        rules.resets.clear();
        self.inner.active.store(false, Ordering::Release);
    }

    /// True while any fault is set.
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// True while frames to `peer` are black-holed (a partition): bulk streams stall then
    /// rather than lose chunks, as a TCP stream across a partition does.
    pub(crate) fn black_holed(&self, peer: &str) -> bool {
        self.is_active()
            && self
                .inner
                .rules
                .lock()
                .by_peer
                .get(peer)
                .is_some_and(|both| {
                    matches!(both[slot(Direction::Outbound)], Some(Fault::BlackHole))
                })
    }

    /// What to do with the next frame to or from `peer`.
    pub(crate) fn decide(&self, peer: &str, direction: Direction) -> Action {
        if !self.is_active() {
            return Action::Pass;
        }
        let mut rules = self.inner.rules.lock();
        if direction == Direction::Inbound && rules.resets.remove(peer) {
            let any = rules.any();
            self.inner.active.store(any, Ordering::Release);
            return Action::Reset;
        }
        let Rules { by_peer, rng, .. } = &mut *rules;
        match by_peer.get(peer).and_then(|both| both[slot(direction)]) {
            None => Action::Pass,
            Some(Fault::BlackHole) => Action::Drop,
            Some(Fault::Drop { probability }) => {
                if rng.random_bool(probability.clamp(0.0, 1.0)) {
                    Action::Drop
                } else {
                    Action::Pass
                }
            }
            Some(Fault::Delay(d)) => Action::Delay(d),
            Some(Fault::Duplicate) => Action::Duplicate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_per_peer_and_direction() {
        let f = Faults::new(1);
        assert_eq!(f.decide("a", Direction::Outbound), Action::Pass);
        f.set("a", Direction::Outbound, Fault::Duplicate);
        assert_eq!(f.decide("a", Direction::Outbound), Action::Duplicate);
        assert_eq!(f.decide("a", Direction::Inbound), Action::Pass);
        assert_eq!(f.decide("b", Direction::Outbound), Action::Pass);
        f.clear("a", Direction::Outbound);
        assert!(!f.is_active());
        f.partition("b");
        assert_eq!(f.decide("b", Direction::Inbound), Action::Drop);
        f.heal("b");
        assert!(!f.is_active());
    }

    #[test]
    fn a_reset_cuts_the_next_inbound_frame_once() {
        let f = Faults::new(1);
        f.set("a", Direction::Inbound, Fault::Duplicate);
        f.reset("a");
        assert_eq!(f.decide("a", Direction::Outbound), Action::Pass);
        assert_eq!(f.decide("b", Direction::Inbound), Action::Pass);
        assert_eq!(f.decide("a", Direction::Inbound), Action::Reset);
        assert_eq!(f.decide("a", Direction::Inbound), Action::Duplicate);
        f.clear("a", Direction::Inbound);
        assert!(!f.is_active());
        f.reset("c");
        f.clear_all();
        assert!(!f.is_active());
    }

    #[test]
    fn drops_follow_the_seed() {
        let run = |seed| {
            let f = Faults::new(seed);
            f.set("a", Direction::Outbound, Fault::Drop { probability: 0.5 });
            (0..64)
                .map(|_| f.decide("a", Direction::Outbound) == Action::Drop)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let drops = run(7).iter().filter(|d| **d).count();
        assert!((10..54).contains(&drops), "{drops} of 64");
    }
}
