//! Background anti-entropy: one thread that runs [`Cluster::repair`]'s work every interval.
//!
//! Opt in with [`ClusterOptions::background_repair`](crate::ClusterOptions::background_repair).
//! The thread shares the cluster's routing table and admin lock (not the `Cluster` itself),
//! so that the `Cluster` stays a plain owned value:
//!
//! - **One round at a time**, each under the admin lock like [`Cluster::repair`], so a round
//!   never overlaps a membership change, a failure or a recovery, and loads its routing
//!   snapshot only while holding that lock (a change's drain never waits on it).
//! - **Bounded**: the first round starts one interval after the cluster opens, the next one
//!   interval after the previous one *finished*, so repair takes at most one thread and never
//!   piles up behind a slow round.
//! - **Stoppable**: dropping or closing the cluster sets a stop flag that a round checks
//!   between replica runs and the idle wait wakes on, then joins the thread; no node handle
//!   outlives the cluster.
//! - **Observable**: [`Cluster::background_repair`] (and [`ClusterStats`]) report the rounds
//!   run and the last round's [`RepairSummary`] or error; [`Cluster::trigger_background_repair`]
//!   and [`Cluster::wait_background_repair`] let a caller (a test, an operator) ask for a round
//!   now and wait, with a bound, until it finished.
//!
//! [`ClusterStats`]: crate::ClusterStats

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::repair::{RepairSummary, repair_where};
use crate::routing::RoutingTable;

/// What the background repair has done so far (see [`Cluster::background_repair`]).
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
///
/// let dir = tempfile::tempdir()?;
/// let opts = ClusterOptions::new()
///     .backend(Arc::new(MemoryBackend::default()))
///     .background_repair(Some(Duration::from_secs(3600)));
/// let cluster = Cluster::open(dir.path(), opts)?;
/// let status = cluster.background_repair().expect("enabled");
/// assert_eq!((status.rounds, status.last.is_none()), (0, true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackgroundRepairStatus {
    /// The configured pause between the end of a round and the start of the next.
    pub interval: Duration,
    /// Rounds finished (successfully or not).
    pub rounds: u64,
    /// The summary of the last round that succeeded (ranges compared, keys repaired, ...).
    pub last: Option<RepairSummary>,
    /// The error of the last round, if it failed (a node error; the next round retries).
    pub last_error: Option<String>,
    /// When the last round finished.
    pub last_finished: Option<SystemTime>,
}

/// The thread's shared state.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a trigger or a stop.
    wake: Condvar,
    /// Signals a finished round.
    done: Condvar,
    /// Checked by a running round between replica runs.
    stop: AtomicBool,
}

#[derive(Debug)]
struct State {
    triggered: bool,
    started: u64,
    status: BackgroundRepairStatus,
}

/// The background repair thread, owned by the cluster; stops and joins when dropped.
#[derive(Debug)]
pub(crate) struct Repairer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What a round needs: the cluster's routing table and admin lock, and its parameters.
pub(crate) struct RepairContext {
    pub(crate) routing: Arc<RoutingTable>,
    pub(crate) admin: Arc<crate::gate::Gate>,
    pub(crate) rf: usize,
    pub(crate) batch: usize,
    /// The cluster's clock (a round's elapsed time).
    pub(crate) clock: Arc<dyn kv_node::Clock>,
}

impl Repairer {
    /// Starts the thread.
    pub(crate) fn start(ctx: RepairContext, interval: Duration, dir: &Path) -> Result<Repairer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                triggered: false,
                started: 0,
                status: BackgroundRepairStatus {
                    interval,
                    rounds: 0,
                    last: None,
                    last_error: None,
                    last_finished: None,
                },
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kv-cluster-repair".into())
            .spawn(move || run(&worker, &ctx, interval))
            .map_err(|e| Error::io("spawn the repair thread for", dir, e))?;
        Ok(Repairer {
            shared,
            thread: Some(thread),
        })
    }

    fn status(&self) -> BackgroundRepairStatus {
        self.shared.state.lock().status.clone()
    }

    /// Asks for a round now; returns its number (the next round to start).
    fn trigger(&self) -> u64 {
        let mut state = self.shared.state.lock();
        state.triggered = true;
        self.shared.wake.notify_all();
        state.started + 1
    }

    /// Waits until `round` rounds have finished, or `timeout`.
    fn wait(&self, round: u64, timeout: Duration) -> Option<BackgroundRepairStatus> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.shared.state.lock();
        while state.status.rounds < round {
            if wait_until(&self.shared.done, &mut state, deadline) {
                return (state.status.rounds >= round).then(|| state.status.clone());
            }
        }
        Some(state.status.clone())
    }

    /// Stops the thread (a running round stops at its next replica run) and joins it.
    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            // Under the lock: the thread is either waiting (and gets the notification) or
            // will see the flag before it waits again.
            let _state = self.shared.state.lock();
            self.shared.wake.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            // A panicked round has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

impl Drop for Repairer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits on `condvar` until notified or `deadline`; `None` (a duration too large to add to
/// the clock) waits until notified. Returns whether the deadline passed.
fn wait_until(
    condvar: &Condvar,
    guard: &mut parking_lot::MutexGuard<'_, State>,
    deadline: Option<Instant>,
) -> bool {
    match deadline {
        Some(d) => condvar.wait_until(guard, d).timed_out(),
        None => {
            condvar.wait(guard);
            false
        }
    }
}

/// The thread: wait an interval (or a trigger), run a round, record it; until stopped.
fn run(shared: &Shared, ctx: &RepairContext, interval: Duration) {
    let stopped = || shared.stop.load(Ordering::Acquire);
    loop {
        {
            let mut state = shared.state.lock();
            let deadline = Instant::now().checked_add(interval);
            while !state.triggered && !stopped() {
                if wait_until(&shared.wake, &mut state, deadline) {
                    break;
                }
            }
            if stopped() {
                return;
            }
            state.triggered = false;
            state.started += 1;
        }
        // A panicking replica must not kill the thread silently (every later trigger would
        // wait forever): the round is recorded as failed and the thread goes on.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _admin = ctx.admin.lock();
            let routing = ctx.routing.load();
            crate::block::block_on(repair_where(
                &routing,
                ctx.rf,
                ctx.batch,
                ctx.clock.as_ref(),
                &|_| true,
                &stopped,
            ))
        }))
        .unwrap_or(Err(crate::Error::RepairPanicked));
        let mut state = shared.state.lock();
        let status = &mut state.status;
        status.rounds += 1;
        status.last_finished = Some(SystemTime::now());
        match outcome {
            Ok(summary) => {
                status.last = Some(summary);
                status.last_error = None;
            }
            Err(e) => status.last_error = Some(e.chain()),
        }
        shared.done.notify_all();
    }
}

impl Cluster {
    /// The background repair's status, or `None` if the cluster runs none (see
    /// [`ClusterOptions::background_repair`](crate::ClusterOptions::background_repair)).
    pub fn background_repair(&self) -> Option<BackgroundRepairStatus> {
        self.repairer.as_ref().map(Repairer::status)
    }

    /// Asks the background repair for a round now (without waiting for its interval); returns
    /// the number of that round, for [`wait_background_repair`](Cluster::wait_background_repair).
    /// A round already running finishes first; triggers before a round starts make one round.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] if the cluster runs no background repair.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use kv_cluster::{Cluster, ClusterOptions, MemoryBackend};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = ClusterOptions::new()
    ///     .backend(Arc::new(MemoryBackend::default()))
    ///     .background_repair(Some(Duration::from_secs(3600)));
    /// let cluster = Cluster::open(dir.path(), opts)?;
    /// cluster.put(b"k", b"v")?;
    /// let round = cluster.trigger_background_repair()?;
    /// let status = cluster
    ///     .wait_background_repair(round, Duration::from_secs(60))
    ///     .expect("the round finished");
    /// let last = status.last.expect("it succeeded");
    /// assert_eq!((last.ranges_compared, last.keys_repaired), (1, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trigger_background_repair(&self) -> Result<u64> {
        self.repairer
            .as_ref()
            .map(Repairer::trigger)
            .ok_or_else(|| Error::InvalidOptions {
                reason: "the cluster runs no background repair".into(),
            })
    }

    /// Waits until the background repair has finished `round` rounds, at most `timeout`;
    /// returns its status then, or `None` on timeout or if the cluster runs no background
    /// repair.
    pub fn wait_background_repair(
        &self,
        round: u64,
        timeout: Duration,
    ) -> Option<BackgroundRepairStatus> {
        self.repairer.as_ref()?.wait(round, timeout)
    }
}
