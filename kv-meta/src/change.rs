//! A membership change in progress: its steps, its ring before and after, and its stream tasks.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state::RingMember;

/// Whether a change adds a node or removes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A `Registered` node joins the ring.
    Add,
    /// A `Normal` node leaves the ring.
    Remove,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Add => "add",
            ChangeKind::Remove => "remove",
        })
    }
}

/// The step a change is in (membership.md §3.1). Each of `Pending`, `Mid`, `Final` and
/// `Aborting` is entered with a new epoch; `Streaming` keeps `Pending`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Writes go to both rings, reads to the old one; waiting for barrier B1.
    Pending,
    /// As `Pending`, and the stream tasks run.
    Streaming,
    /// Every task finished: reads move to the new ring, writes still go to both.
    Mid,
    /// The new ring is the ring: writes and reads go to it only; cleanup runs.
    Final,
    /// Aborted before `Mid`: routing is back on the old ring while the joiner drops its copies.
    Aborting,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Pending => "pending",
            Step::Streaming => "streaming",
            Step::Mid => "mid",
            Step::Final => "final",
            Step::Aborting => "aborting",
        })
    }
}

/// Where a stream task copies from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// One old replica: the one that loses the ranges (consistent range movement).
    Node(String),
    /// Every live old replica of the ranges, newest version wins at the destination: the
    /// fallback when the losing replica is down (membership.md §3.6).
    Survivors,
}

/// One stream of a change: ranges copied from a source to a destination, with the progress
/// recorded so far.
///
/// # Example
///
/// ```
/// use kv_meta::{Source, StreamTask};
///
/// let task = StreamTask::new(0, Source::Node("n1".into()), "n4".into(), vec![(10, 20)]);
/// assert_eq!(task.done_through, vec![None]);
/// assert!(!task.finished);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTask {
    /// The task's id, unique within its change.
    pub id: u32,
    /// Where it copies from.
    pub from: Source,
    /// The member it copies to.
    pub to: String,
    /// The token ranges `(start, end]` it copies, coalesced.
    pub ranges: Vec<(u64, u64)>,
    /// Per range: the tokens up to here (walking from `start`) are copied and synced on `to`;
    /// `Some(end)` is the whole range.
    pub done_through: Vec<Option<u64>>,
    /// Keys copied so far (display only).
    pub keys: u64,
    /// Bytes copied so far (display only).
    pub bytes: u64,
    /// Every range is copied.
    pub finished: bool,
}

impl StreamTask {
    /// A task with nothing copied yet: what `StartChange` carries.
    pub fn new(id: u32, from: Source, to: String, ranges: Vec<(u64, u64)>) -> StreamTask {
        let done_through = vec![None; ranges.len()];
        StreamTask {
            id,
            from,
            to,
            ranges,
            done_through,
            keys: 0,
            bytes: 0,
            finished: false,
        }
    }

    /// Whether nothing is recorded as copied (a task as the plan makes it).
    pub fn is_fresh(&self) -> bool {
        self.done_through.len() == self.ranges.len()
            && self.done_through.iter().all(Option::is_none)
            && self.keys == 0
            && self.bytes == 0
            && !self.finished
    }
}

/// How far into the range `(start, end]` the token `t` is, walking clockwise: 1 for the first
/// token after `start`, the range's length for `end`; `None` if `t` is outside it. `start ==
/// end` is the whole ring (2^64 tokens), so `end` itself is its last token.
pub(crate) fn position_in(range: (u64, u64), t: u64) -> Option<u128> {
    let (start, end) = range;
    let len: u128 = if start == end {
        1 << 64
    } else {
        u128::from(end.wrapping_sub(start))
    };
    let pos: u128 = if t == end {
        len
    } else {
        u128::from(t.wrapping_sub(start))
    };
    (pos >= 1 && pos <= len).then_some(pos)
}

/// The change in progress (at most one at a time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The raft log index of the `StartChange` entry that began it.
    pub id: u64,
    /// Add or remove.
    pub kind: ChangeKind,
    /// The node that joins or leaves.
    pub node: String,
    /// The ring before the change: members with their tokens (rings are rebuilt from tokens,
    /// never recomputed).
    pub from_members: Vec<RingMember>,
    /// The ring after the change.
    pub to_members: Vec<RingMember>,
    /// The step it is in.
    pub step: Step,
    /// The epochs at which `Pending`, `Mid` and `Final` were entered (0: not yet).
    pub step_epochs: [u64; 3],
    /// The stream plan, fixed when the change starts.
    pub tasks: Vec<StreamTask>,
    /// Why it is stuck, for `KVSTORE CHANGE` (set by the driver; not by `apply`).
    pub error: Option<String>,
    /// The proposing leader's wall clock when it started the change, in ms (display only).
    pub started_ms: u64,
}

impl Change {
    /// The number of tasks not finished.
    pub fn unfinished(&self) -> usize {
        self.tasks.iter().filter(|t| !t.finished).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_walk_clockwise_and_wrap() {
        assert_eq!(position_in((10, 20), 10), None);
        assert_eq!(position_in((10, 20), 11), Some(1));
        assert_eq!(position_in((10, 20), 20), Some(10));
        assert_eq!(position_in((10, 20), 21), None);
        assert_eq!(position_in((u64::MAX - 1, 5), u64::MAX), Some(1));
        assert_eq!(position_in((u64::MAX - 1, 5), 0), Some(2));
        assert_eq!(position_in((u64::MAX - 1, 5), 5), Some(7));
        assert_eq!(position_in((u64::MAX - 1, 5), 6), None);
        // The whole ring: every token is in it, its end last.
        assert_eq!(position_in((7, 7), 8), Some(1));
        assert_eq!(position_in((7, 7), 7), Some(1 << 64));
        assert_eq!(position_in((7, 7), 6), Some((1 << 64) - 1));
    }
}
