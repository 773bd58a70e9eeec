//! Test-only switches (feature `testing`): each breaks one mechanism of a membership change
//! on purpose, so a checker (kv-sim's, `docs/membership.md` §4.7) can be shown to catch the
//! breakage. Nothing here is compiled into a build without the feature.

/// A mechanism broken on purpose, set with
/// [`ClusterOptions::sabotage`](crate::ClusterOptions::sabotage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sabotage {
    /// In a change's `Pending`/`Streaming` steps (an installed topology with a pending ring,
    /// not `Mid`), writes go to the old ring's replicas only, and count only them: a write
    /// the new replica misses while its range streams is then missing from the new ring
    /// once the change is final (property 1 or 2 of the simulation's checker).
    SkipPendingDualWrite,
}
