//! The history checker (`docs/membership.md` §4.5): properties 1 (no acknowledged write
//! lost), 2 (a read after a write finished sees it or newer: a per-key regular register) and
//! 3 (replicas converge after repair), exact per key, over what the simulated clients saw and
//! what the replicas hold at the end; and 5 (bounded unavailability, [`availability`]) over
//! the history and the faults.
//!
//! Times are the simulation's global clock, never the hosts' (skewed) clocks, and the
//! versions the replicas hold are compared only for equality: nothing is ordered by them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// What a client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `SET key value` at quorum.
    Set,
    /// `GET key` at quorum.
    Get,
}

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered: a write acknowledged, or a read's value.
    Ok,
    /// Refused: a read saw nothing; a write may still have landed on some replica.
    Err,
    /// No answer in time: it may or may not have happened.
    Unknown,
}

/// One client operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Op {
    /// The client host's index.
    pub client: u32,
    /// The node whose coordinator it went to.
    pub node: String,
    /// The version an acknowledged `SET` was given (for diagnosis only: never ordered by).
    pub version: Option<u64>,
    /// `SET` or `GET`.
    pub kind: Kind,
    /// The key's index in the key space.
    pub key: u16,
    /// A `SET`'s value (unique in the run); an answered `GET`'s value (`None`: no value).
    pub value: Option<String>,
    /// When the client sent it (simulated time since the start).
    pub invoke: Duration,
    /// When the client had its answer or gave up.
    pub complete: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} via {} {:?} k{} {:?} [{:?} .. {:?}] {:?} version {:?}",
            self.client,
            self.node,
            self.kind,
            self.key,
            self.value,
            self.invoke,
            self.complete,
            self.outcome,
            self.version
        )
    }
}

/// One replica's record of a key at the end: its value (`None`: a tombstone) and version.
pub type Held = Option<(Option<String>, u64)>;

/// What every replica holds at the end of the run: node id, then the record of each key it
/// is a replica of in the final ring (`None`: it has never seen the key). A key a node does
/// not replicate has no entry in its map.
pub type Replicas = Vec<(String, BTreeMap<u16, Held>)>;

/// A property of §4.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    /// 1: no acknowledged write lost.
    NoLostWrite,
    /// 2: a read after a write finished sees it or a newer one.
    ReadSeesFinishedWrite,
    /// 3: every replica holds the same record after repair.
    Convergence,
    /// 5: with at most one node impaired, fewer than half the operations of any 5 s
    /// window fail (checked by [`availability`]).
    BoundedUnavailability,
    /// A membership change ran to its end, and the metadata's invariants held after every
    /// command (checked by the run, not by [`check`]).
    ChangeCompletes,
    /// 4: every node applied the same metadata at the end, installed increasing epochs, and
    /// no two nodes installed different routings at one epoch (checked by the run).
    MetadataAgreement,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::NoLostWrite => "1-no-lost-write",
            Property::ReadSeesFinishedWrite => "2-read-sees-finished-write",
            Property::Convergence => "3-convergence",
            Property::ChangeCompletes => "change-completes",
            Property::MetadataAgreement => "4-metadata-agreement",
            Property::BoundedUnavailability => "5-bounded-unavailability",
        })
    }
}

/// A property that does not hold, with the operations that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub property: Property,
    /// The key.
    pub key: u16,
    /// What is wrong.
    pub message: String,
    /// The operations involved.
    pub ops: Vec<Op>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "property={} key=k{}: {}",
            self.property, self.key, self.message
        )?;
        for op in &self.ops {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// The nodes' clocks as the run set them: each node's offset from the simulation's global
/// time, from each time on (`docs/membership.md` §4.3). It decides which writes the checker
/// may call ordered in real time ([`Clocks::ordered`]): versions are last-writer-wins on
/// the coordinators' hybrid clocks, so a write counts as finished before another started
/// only if every version the first can carry is below every version the second can.
///
/// - The second write's version is at least its coordinator's wall clock at some moment
///   of the write (a hybrid clock never goes below its wall clock): its **floor** is the
///   lowest reading of that node's clock over the write.
/// - The first write's version is at most what its coordinator's hybrid clock can have
///   reached by the time the write finished, its **ceiling**: the highest reading of any
///   node's clock by then (a version read from a node whose clock ran ahead is observed),
///   but at most [`MAX_SKEW`](kv_cluster::MAX_SKEW) past the highest reading of its own (kv-cluster's observe
///   bound). A hybrid clock never goes back, so a clock stepped back keeps its highest
///   reading; and once a node's clock has stepped back, that node restarted may start at
///   its version lease, up to [`LEASE_WINDOW`](kv_cluster::LEASE_WINDOW) past its highest version (kv-cluster's
///   `lease_jumps`), so its highest reading counts that much higher.
///
/// With no clock steps (offsets fixed at the start) this is plain real-time order with a
/// margin of the largest offset minus the second coordinator's, at most twice the largest
/// skew; a node whose clock was stepped ahead by 10 s makes every write of the next 10 s
/// or so unordered with writes before it, since the store cannot order them either.
///
/// A node with no recorded offset has an exact clock; [`Clocks::default`] is all exact.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use kv_sim::check::{Clocks, Kind, Op, Outcome};
///
/// let set = |node: &str, from, to| Op {
///     client: 0, node: node.into(), version: None, kind: Kind::Set, key: 1, value: None,
///     invoke: Duration::from_millis(from), complete: Duration::from_millis(to), outcome: Outcome::Ok,
/// };
/// let mut clocks = Clocks::default();
/// assert!(clocks.ordered(&set("node1", 0, 10), &set("node2", 100, 110)));
/// assert!(!clocks.ordered(&set("node1", 0, 10), &set("node2", 11, 20))); // a tick apart
/// // node1's clock jumps 5 s ahead at 50 ms, back at 60 ms: a write through node1 then
/// // and a write through node2 at 2 s are no longer ordered, at 5.1 s they are.
/// clocks.step("node1", Duration::from_millis(50), 5_000);
/// clocks.step("node1", Duration::from_millis(60), 0);
/// assert!(!clocks.ordered(&set("node1", 40, 55), &set("node2", 2_000, 2_010)));
/// assert!(clocks.ordered(&set("node1", 40, 55), &set("node2", 5_100, 5_110)));
/// // After the step back, node1 may restart at its lease, a second past its highest
/// // reading (5.06 s): a write through it then is ordered only from 6.1 s.
/// assert!(!clocks.ordered(&set("node1", 70, 80), &set("node2", 6_000, 6_010)));
/// assert!(clocks.ordered(&set("node1", 70, 80), &set("node2", 6_100, 6_110)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Clocks {
    /// Each node's offsets in milliseconds, each from a time on, in time order.
    steps: BTreeMap<String, Vec<(Duration, i64)>>,
    /// The nodes whose clock was stepped back, and when it first was (milliseconds).
    stepped_back: BTreeMap<String, i64>,
}

/// kv-cluster's bound on how far ahead of its own wall clock a coordinator observes a
/// version, in milliseconds.
const MAX_SKEW: i64 = kv_cluster::MAX_SKEW.as_millis() as i64;
/// kv-cluster's version lease window, in milliseconds.
const LEASE_WINDOW: i64 = kv_cluster::LEASE_WINDOW.as_millis() as i64;
/// The hosts read the simulation's global time as published before each step; a client
/// may read it a tick later: two ticks of slack.
const SLACK_MS: i64 = 2;

impl Clocks {
    /// Sets `node`'s clock offset to `offset_ms` from `at` on (the start's offsets at
    /// zero). Steps of one node are given in time order.
    pub fn step(&mut self, node: &str, at: Duration, offset_ms: i64) {
        let steps = self.steps.entry(node.to_string()).or_default();
        let before = steps.last().map_or(0, |&(_, o)| o);
        if !steps.is_empty() && offset_ms < before {
            self.stepped_back.entry(node.to_string()).or_insert(ms(at));
        }
        steps.push((at, offset_ms));
    }

    /// The same clocks without their steps: each node's offset as set at the start, for
    /// ever (what a checker that ignored the skew faults would assume).
    pub fn at_start(&self) -> Clocks {
        let mut start = Clocks::default();
        for (node, steps) in &self.steps {
            if let Some(&(at, offset)) = steps.first()
                && at == Duration::ZERO
            {
                start.step(node, at, offset);
            }
        }
        start
    }

    /// The largest distance between two offsets ever set (milliseconds): how far apart
    /// two clocks have been at most.
    pub fn largest_spread_ms(&self) -> i64 {
        let all = self.steps.values().flatten().map(|&(_, o)| o);
        let (lo, hi) = all.fold((0, 0), |(lo, hi), o| (lo.min(o), hi.max(o)));
        hi - lo
    }

    /// Whether `first`'s version is below `then`'s whatever the clocks did (see
    /// [`Clocks`]): `first` finished before `then` began by more than the clocks allow
    /// to reorder.
    pub fn ordered(&self, first: &Op, then: &Op) -> bool {
        self.ceiling(&first.node, first.complete) + SLACK_MS
            < self.floor(&then.node, then.invoke, then.complete)
    }

    /// `node`'s offsets as `(from, until, offset)` spans (the last until the end).
    fn spans(&self, node: &str) -> Vec<(i64, i64, i64)> {
        let Some(steps) = self.steps.get(node) else {
            return vec![(0, i64::MAX, 0)];
        };
        let mut spans = Vec::with_capacity(steps.len() + 1);
        if steps.first().is_none_or(|&(at, _)| at > Duration::ZERO) {
            spans.push((0, steps.first().map_or(i64::MAX, |&(at, _)| ms(at)), 0));
        }
        for (i, &(at, offset)) in steps.iter().enumerate() {
            let until = steps.get(i + 1).map_or(i64::MAX, |&(next, _)| ms(next));
            spans.push((ms(at), until, offset));
        }
        spans
    }

    /// The highest reading of `node`'s clock by `t`.
    fn highest(&self, node: &str, t: i64) -> i64 {
        self.spans(node)
            .into_iter()
            .filter(|&(from, _, _)| from <= t)
            .map(|(_, until, offset)| until.min(t).saturating_add(offset))
            .max()
            .unwrap_or(t)
    }

    /// The highest version (in clock milliseconds) `node`'s own clock, or its lease after
    /// a restart, can have given it by `t`.
    fn highest_version(&self, node: &str, t: i64) -> i64 {
        let lease = if self.stepped_back.get(node).is_some_and(|&back| back <= t) {
            LEASE_WINDOW
        } else {
            0
        };
        self.highest(node, t).saturating_add(lease)
    }

    /// The highest version (in clock milliseconds) `node` can have minted by `t`: its own,
    /// or one observed from any node, bounded by its observe bound.
    fn ceiling(&self, node: &str, t: Duration) -> i64 {
        let t = ms(t);
        let any = self
            .steps
            .keys()
            .map(|n| self.highest_version(n, t))
            .chain([t])
            .max()
            .unwrap_or(t);
        let observed = any.min(self.highest(node, t).saturating_add(MAX_SKEW));
        observed.max(self.highest_version(node, t))
    }

    /// The lowest reading of `node`'s clock between `from` and `to`.
    fn floor(&self, node: &str, from: Duration, to: Duration) -> i64 {
        let (from, to) = (ms(from), ms(to));
        self.spans(node)
            .into_iter()
            .filter(|&(start, until, _)| start <= to && until > from)
            .map(|(start, _, offset)| start.max(from).saturating_add(offset))
            .min()
            .unwrap_or(from)
    }
}

/// `d` in whole milliseconds.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Checks properties 1, 2 and 3 on `history` and the final `replicas` (each key's replicas in
/// the final ring); an empty answer means all hold.
///
/// A write counts as finished before another started only if `clocks` says so
/// ([`Clocks::ordered`]): versions are last-writer-wins on the coordinators' clocks, so
/// writes closer than the clocks' skew may be ordered either way.
/// [`Clocks::default`] (exact clocks) checks plain real-time order.
///
/// # Example
///
/// ```
/// use std::collections::BTreeMap;
/// use std::time::Duration;
/// use kv_sim::check::{check, Clocks, Kind, Op, Outcome, Property};
///
/// let set = |v: &str, from, to| Op {
///     client: 0, node: "node1".into(), version: None, kind: Kind::Set, key: 1, value: Some(v.into()),
///     invoke: Duration::from_secs(from), complete: Duration::from_secs(to), outcome: Outcome::Ok,
/// };
/// let history = vec![set("a", 1, 2), set("b", 3, 4)];
/// // Every replica ended with "a", which finished before "b" started: "b" is lost.
/// let held = BTreeMap::from([(1, Some((Some("a".to_string()), 7)))]);
/// let replicas = vec![("node1".to_string(), held.clone()), ("node2".to_string(), held)];
/// let found = check(&history, &replicas, &Clocks::default());
/// assert_eq!(found.len(), 2); // one per replica
/// assert!(found.iter().all(|v| v.property == Property::NoLostWrite));
/// ```
pub fn check(history: &[Op], replicas: &Replicas, clocks: &Clocks) -> Vec<Violation> {
    let mut by_key: BTreeMap<u16, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key).or_default().push(op);
    }
    let mut found = Vec::new();
    for (key, ops) in &by_key {
        let writes: HashMap<&str, &Op> = ops
            .iter()
            .filter(|o| o.kind == Kind::Set)
            .filter_map(|o| o.value.as_deref().map(|v| (v, *o)))
            .collect();
        no_lost_write(*key, ops, &writes, replicas, clocks, &mut found);
        reads_see_finished_writes(*key, ops, &writes, clocks, &mut found);
    }
    convergence(replicas, &mut found);
    found
}

/// How long after a node is bounced or released it still counts as impaired: kv-net
/// reconnects with a backoff of up to 1 s and a restarted coordinator waits out its version
/// lease (under 1 s).
pub const RECOVERY: Duration = Duration::from_secs(3);

/// Property 5, bounded unavailability (`docs/membership.md` §4.5): in every 5 s window
/// (starting each second from `from`, ending by `until`) during which at most one node is
/// impaired (crashed or cut off, per `impaired`: node, from, to; each extended by
/// [`RECOVERY`]), fewer than half the operations invoked through the other nodes fail
/// (`Err` or `Unknown`). A window with fewer than 10 such operations is not judged. A liveness smoke check: it says a
/// quorum of live replicas keeps serving, not how fast.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use kv_sim::check::{availability, Kind, Op, Outcome};
///
/// let op = |at: u64, outcome| Op {
///     client: 0, node: "node1".into(), version: None, kind: Kind::Get, key: 1, value: None,
///     invoke: Duration::from_millis(at), complete: Duration::from_millis(at + 5), outcome,
/// };
/// // Every operation between 10 and 20 s fails while no node is impaired: caught.
/// let history: Vec<Op> = (0..200).map(|i| op(i * 100, if i >= 100 { Outcome::Err } else { Outcome::Ok })).collect();
/// let s = Duration::from_secs;
/// assert!(!availability(&history, &[], s(5), s(20)).is_empty());
/// // The same with two nodes down then: not judged.
/// let down = [("node1".to_string(), s(9), s(21)), ("node2".to_string(), s(9), s(21))];
/// assert!(availability(&history, &down, s(5), s(20)).is_empty());
/// ```
pub fn availability(
    history: &[Op],
    impaired: &[(String, Duration, Duration)],
    from: Duration,
    until: Duration,
) -> Vec<Violation> {
    const WINDOW: Duration = Duration::from_secs(5);
    let mut found = Vec::new();
    let mut start = from;
    while start + WINDOW <= until {
        let end = start + WINDOW;
        // The nodes impaired at some time in the window; more than one at once voids it.
        let overlapping: Vec<&(String, Duration, Duration)> = impaired
            .iter()
            .filter(|(_, a, b)| *a < end && *b + RECOVERY > start)
            .collect();
        let two_at_once = overlapping.iter().enumerate().any(|(i, (n1, a1, b1))| {
            overlapping[i + 1..]
                .iter()
                .any(|(n2, a2, b2)| n1 != n2 && *a1 < *b2 + RECOVERY && *a2 < *b1 + RECOVERY)
        });
        if !two_at_once {
            // Operations sent to the impaired node itself fail by design (a client waits
            // out its timeout on a node cut off): the property is that the others serve.
            let ops: Vec<&Op> = history
                .iter()
                .filter(|o| o.invoke >= start && o.invoke < end)
                .filter(|o| !overlapping.iter().any(|(n, _, _)| *n == o.node))
                .collect();
            let failed = ops.iter().filter(|o| o.outcome != Outcome::Ok).count();
            if ops.len() >= 10 && failed * 2 >= ops.len() {
                found.push(Violation {
                    property: Property::BoundedUnavailability,
                    key: 0,
                    message: format!(
                        "{failed} of {} operations invoked in [{start:?}, {end:?}) failed with at \
                         most one node impaired ({:?})",
                        ops.len(),
                        overlapping.iter().map(|(n, _, _)| n).collect::<Vec<_>>()
                    ),
                    ops: Vec::new(),
                });
            }
        }
        start += Duration::from_secs(1);
    }
    found
}

/// Property 1: every acknowledged `SET` is, on every replica, the final value or overwritten
/// by a write (of any outcome) that did not finish before it started.
fn no_lost_write(
    key: u16,
    ops: &[&Op],
    writes: &HashMap<&str, &Op>,
    replicas: &Replicas,
    clocks: &Clocks,
    found: &mut Vec<Violation>,
) {
    for w in ops
        .iter()
        .filter(|o| o.kind == Kind::Set && o.outcome == Outcome::Ok)
    {
        for (node, held) in replicas {
            let Some(last) = held.get(&key).cloned() else {
                continue; // Not a replica of the key.
            };
            let value = last.as_ref().and_then(|(v, _)| v.as_deref());
            let Some(value) = value else {
                found.push(Violation {
                    property: Property::NoLostWrite,
                    key,
                    message: format!("{node} holds no value; an acknowledged write is lost"),
                    ops: vec![(*w).clone()],
                });
                continue;
            };
            if Some(value) == w.value.as_deref() {
                continue;
            }
            match writes.get(value) {
                None => found.push(Violation {
                    property: Property::NoLostWrite,
                    key,
                    message: format!("{node} holds {value:?}, which no client wrote"),
                    ops: vec![(*w).clone()],
                }),
                Some(f) if clocks.ordered(f, w) => found.push(Violation {
                    property: Property::NoLostWrite,
                    key,
                    message: format!(
                        "{node} holds {value:?}, which finished before the acknowledged write \
                         started: that write is lost"
                    ),
                    ops: vec![(*w).clone(), (*f).clone()],
                }),
                Some(_) => {}
            }
        }
    }
}

/// Property 2, the per-key regular register: an answered `GET` returns a value no
/// acknowledged `SET` finished before the read started has superseded in real time (a
/// write finished before that `SET` started), nor a value written after the read finished.
fn reads_see_finished_writes(
    key: u16,
    ops: &[&Op],
    writes: &HashMap<&str, &Op>,
    clocks: &Clocks,
    found: &mut Vec<Violation>,
) {
    let acked: Vec<&Op> = ops
        .iter()
        .filter(|o| o.kind == Kind::Set && o.outcome == Outcome::Ok)
        .copied()
        .collect();
    for r in ops
        .iter()
        .filter(|o| o.kind == Kind::Get && o.outcome == Outcome::Ok)
    {
        let before: Vec<&Op> = acked
            .iter()
            .filter(|w| w.complete < r.invoke)
            .copied()
            .collect();
        let Some(value) = r.value.as_deref() else {
            if let Some(w) = before.last() {
                found.push(Violation {
                    property: Property::ReadSeesFinishedWrite,
                    key,
                    message: "read no value after an acknowledged write finished".to_string(),
                    ops: vec![(*r).clone(), (*w).clone()],
                });
            }
            continue;
        };
        let Some(seen) = writes.get(value) else {
            found.push(Violation {
                property: Property::ReadSeesFinishedWrite,
                key,
                message: format!("read {value:?}, which no client wrote"),
                ops: vec![(*r).clone()],
            });
            continue;
        };
        if seen.invoke > r.complete {
            found.push(Violation {
                property: Property::ReadSeesFinishedWrite,
                key,
                message: "read a value written after the read finished".to_string(),
                ops: vec![(*r).clone(), (*seen).clone()],
            });
            continue;
        }
        if let Some(newer) = before.iter().find(|w| clocks.ordered(seen, w)) {
            found.push(Violation {
                property: Property::ReadSeesFinishedWrite,
                key,
                message: format!(
                    "read {value:?}, superseded by a write that finished before the read began"
                ),
                ops: vec![(*r).clone(), (*seen).clone(), (*newer).clone()],
            });
        }
    }
}

/// Property 3: every replica of a key holds the same record of it.
fn convergence(replicas: &Replicas, found: &mut Vec<Violation>) {
    let mut keys: Vec<u16> = replicas
        .iter()
        .flat_map(|(_, held)| held.keys().copied())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let mut of_key = replicas
            .iter()
            .filter_map(|(node, held)| held.get(&key).map(|h| (node, h)));
        let Some((first, want)) = of_key.next() else {
            continue;
        };
        for (node, got) in of_key {
            if got != want {
                found.push(Violation {
                    property: Property::Convergence,
                    key,
                    message: format!("{first} holds {want:?}, {node} holds {got:?}"),
                    ops: Vec::new(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, v: Option<&str>, from: u64, to: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            node: "node1".into(),
            version: None,
            kind,
            key: 3,
            value: v.map(str::to_string),
            invoke: Duration::from_millis(from),
            complete: Duration::from_millis(to),
            outcome,
        }
    }

    fn everywhere(v: &str) -> Replicas {
        let held = BTreeMap::from([(3, Some((Some(v.to_string()), 1)))]);
        vec![("n1".into(), held.clone()), ("n2".into(), held)]
    }

    #[test]
    fn only_a_keys_replicas_count() {
        let w = op(Kind::Set, Some("a"), 0, 10, Outcome::Ok);
        let mut replicas = everywhere("a");
        // A node that is not a replica of the key in the final ring: not looked at.
        replicas.push(("n3".into(), BTreeMap::new()));
        assert!(check(std::slice::from_ref(&w), &replicas, &Clocks::default()).is_empty());
        // A replica that never saw the key: the acknowledged write is lost there, and the
        // replicas disagree.
        replicas.push(("n4".into(), BTreeMap::from([(3, None)])));
        let props: Vec<Property> = check(&[w], &replicas, &Clocks::default())
            .iter()
            .map(|v| v.property)
            .collect();
        assert_eq!(props, vec![Property::NoLostWrite, Property::Convergence]);
    }

    /// A clock 10 s ahead: its own writes stay ahead of later ones for 10 s and its
    /// lease's second; another coordinator observes its versions only up to `MAX_SKEW`
    /// past its own clock; a clock stepped back lowers the floor of writes through it.
    #[test]
    fn clocks_bound_the_order_by_the_steps_applied() {
        let at = |node: &str, from: u64, to: u64| Op {
            node: node.into(),
            ..op(Kind::Set, Some("x"), from, to, Outcome::Ok)
        };
        let mut clocks = Clocks::default();
        clocks.step("node1", Duration::ZERO, 0);
        clocks.step("node1", Duration::from_millis(5), 10_000);
        clocks.step("node1", Duration::from_millis(100), 0);
        assert_eq!(clocks.largest_spread_ms(), 10_000);
        // Through node1 while ahead: ordered only 10 s later.
        assert!(!clocks.ordered(&at("node1", 0, 10), &at("node3", 6_000, 6_010)));
        assert!(!clocks.ordered(&at("node1", 0, 10), &at("node3", 10_000, 10_010)));
        assert!(clocks.ordered(&at("node1", 0, 10), &at("node3", 10_100, 10_110)));
        // Through node1 after its clock stepped back: its clock keeps its highest reading
        // (10.1 s), and restarted it may start at its lease, a second past that.
        assert!(!clocks.ordered(&at("node1", 200, 210), &at("node3", 11_000, 11_010)));
        assert!(clocks.ordered(&at("node1", 200, 210), &at("node3", 11_200, 11_210)));
        // Through node2, which may have observed node1's versions: up to 5 s ahead.
        assert!(!clocks.ordered(&at("node2", 0, 10), &at("node3", 5_000, 5_010)));
        assert!(clocks.ordered(&at("node2", 0, 10), &at("node3", 5_100, 5_110)));
        // Before the step, writes through node1 are ordered as usual.
        assert!(clocks.ordered(&at("node1", 0, 2), &at("node3", 10, 20)));
        // The start's offsets alone order what the steps do not.
        assert!(
            clocks
                .at_start()
                .ordered(&at("node1", 0, 10), &at("node3", 6_000, 6_010))
        );

        // A clock stepped back 3 s: a write through it is not ordered after one that
        // finished within those 3 s, elsewhere.
        let mut back = Clocks::default();
        back.step("node2", Duration::from_secs(1), -3_000);
        assert!(!back.ordered(&at("node1", 900, 950), &at("node2", 2_000, 2_010)));
        assert!(back.ordered(&at("node1", 900, 950), &at("node2", 4_000, 4_010)));
    }

    #[test]
    fn a_concurrent_later_write_may_win() {
        let h = vec![
            op(Kind::Set, Some("a"), 0, 10, Outcome::Ok),
            op(Kind::Set, Some("b"), 5, 20, Outcome::Unknown),
        ];
        assert!(check(&h, &everywhere("b"), &Clocks::default()).is_empty());
        // "a" winning over a concurrent "b" is as good.
        assert!(check(&h, &everywhere("a"), &Clocks::default()).is_empty());
    }

    #[test]
    fn a_stale_read_is_caught_and_a_concurrent_one_is_not() {
        let w1 = op(Kind::Set, Some("a"), 0, 10, Outcome::Ok);
        let w2 = op(Kind::Set, Some("b"), 20, 30, Outcome::Ok);
        let stale = op(Kind::Get, Some("a"), 40, 50, Outcome::Ok);
        let concurrent = op(Kind::Get, Some("a"), 25, 50, Outcome::Ok);
        let found = check(
            &[w1.clone(), w2.clone(), stale],
            &everywhere("b"),
            &Clocks::default(),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].property, Property::ReadSeesFinishedWrite);
        assert!(check(&[w1, w2, concurrent], &everywhere("b"), &Clocks::default()).is_empty());
    }

    #[test]
    fn an_empty_read_after_a_write_and_a_divergent_replica_are_caught() {
        let w = op(Kind::Set, Some("a"), 0, 10, Outcome::Ok);
        let r = op(Kind::Get, None, 20, 30, Outcome::Ok);
        let mut replicas = everywhere("a");
        replicas[1].1.insert(3, Some((Some("a".into()), 2)));
        let found = check(&[w, r], &replicas, &Clocks::default());
        let props: Vec<Property> = found.iter().map(|v| v.property).collect();
        assert_eq!(
            props,
            vec![Property::ReadSeesFinishedWrite, Property::Convergence]
        );
    }
}
