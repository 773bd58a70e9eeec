//! One peer's state on the dialing side: its connection's queue, its pending requests with
//! their deadlines, and what the status snapshot reports.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
// Tokio's clock, not std's: under a paused clock (tests, the simulation) deadlines fire on
// virtual time; otherwise the two read the same.
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::io::Link;
use crate::peers::RequestId;

/// What completes a request: called once, with the response body or the error.
pub(crate) type Done = Box<dyn FnOnce(RequestId, Result<Bytes>) + Send>;

pub(crate) struct Pending {
    done: Done,
    deadline: Instant,
    timeout: Duration,
}

/// One peer's state, shared by the callers and its connection task.
pub(crate) struct PeerState {
    pub(crate) id: Arc<str>,
    pub(crate) addr: SocketAddr,
    /// The current connection's queue; `None` while not connected.
    pub(crate) link: Mutex<Option<Link>>,
    pub(crate) pending: Mutex<HashMap<RequestId, Pending>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) connected: AtomicBool,
    /// Microseconds since [`Core::base`] (plus one) of the last frame received; 0: never.
    pub(crate) last_seen_us: AtomicU64,
    /// Smoothed round trip in microseconds; 0: unknown.
    pub(crate) rtt_us: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// The epoch announced by the peer; `u64::MAX`: unknown.
    pub(crate) epoch: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// The deadlines of the pending requests, earliest first (the sweeper's queue).
    pub(crate) deadlines: Mutex<BTreeSet<(Instant, RequestId)>>,
    /// Wakes the sweeper when a request gets a deadline earlier than every other.
    pub(crate) earliest_changed: Notify,
    /// The connection task and the sweeper.
    pub(crate) tasks: Mutex<Vec<AbortHandle>>,
}

impl PeerState {
    /// The state of a peer just added: not connected, nothing pending.
    pub(crate) fn new(node_id: &str, addr: SocketAddr) -> Self {
        Self {
            id: Arc::from(node_id),
            addr,
            link: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            last_seen_us: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            epoch: AtomicU64::new(u64::MAX),
            last_error: Mutex::new(None),
            deadlines: Mutex::new(BTreeSet::new()),
            earliest_changed: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Completes a request if it is still pending (whoever comes first, answer, timeout or
    /// disconnect, wins; the others find nothing).
    pub(crate) fn complete(&self, id: RequestId, result: Result<Bytes>) {
        let Some(pending) = self.pending.lock().remove(&id) else {
            return;
        };
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.deadlines.lock().remove(&(pending.deadline, id));
        (pending.done)(id, result);
    }

    /// Registers a request as pending, with its deadline.
    pub(crate) fn insert(&self, id: RequestId, done: Done, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.pending.lock().insert(
            id,
            Pending {
                done,
                deadline,
                timeout,
            },
        );
        let earliest = {
            let mut deadlines = self.deadlines.lock();
            let earliest = deadlines.first().is_none_or(|&(first, _)| deadline < first);
            deadlines.insert((deadline, id));
            earliest
        };
        // Requests usually share one timeout, so a new deadline is rarely the earliest and
        // the sweeper is rarely woken: no task or timer per request.
        if earliest {
            self.earliest_changed.notify_one();
        }
    }

    /// Fails, with [`Error::Timeout`], every pending request whose deadline has passed.
    pub(crate) fn expire(&self, now: Instant) {
        loop {
            let due = {
                let mut deadlines = self.deadlines.lock();
                match deadlines.first() {
                    Some(&(at, id)) if at <= now => {
                        deadlines.pop_first();
                        id
                    }
                    _ => return,
                }
            };
            let Some(pending) = self.pending.lock().remove(&due) else {
                continue;
            };
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            let err = Error::Timeout {
                peer: self.id.to_string(),
                request: due,
                after: pending.timeout,
            };
            (pending.done)(due, Err(err));
        }
    }

    /// Stops the peer's tasks (which closes its connection) and fails its pending requests
    /// ([`Error::Shutdown`] if the transport is shutting down, else `Disconnected`).
    pub(crate) fn stop(&self, shutdown: bool) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        *self.link.lock() = None;
        self.connected.store(false, Ordering::Release);
        self.fail_all(shutdown);
    }

    /// Fails every pending request with [`Error::Disconnected`] (or `Shutdown`).
    pub(crate) fn fail_all(&self, shutdown: bool) {
        #[cfg_attr(not(feature = "sim"), allow(unused_mut))]
        let mut drained: Vec<(RequestId, Pending)> = self.pending.lock().drain().collect();
        // A simulation replays a seed exactly: failures complete in request order, not in
        // the hash map's (randomly seeded) order.
        #[cfg(feature = "sim")]
        drained.sort_unstable_by_key(|(id, _)| *id);
        for (id, pending) in drained {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.deadlines.lock().remove(&(pending.deadline, id));
            let err = if shutdown {
                Error::Shutdown
            } else {
                Error::Disconnected {
                    peer: self.id.to_string(),
                    request: id,
                }
            };
            (pending.done)(id, Err(err));
        }
    }
}

/// Runs for as long as the peer is added: times out its requests at their deadlines, sleeping
/// until the earliest one (or until a request with an earlier one arrives).
pub(crate) async fn sweep_deadlines(p: Arc<PeerState>) {
    loop {
        let next = p.deadlines.lock().first().map(|&(at, _)| at);
        match next {
            None => p.earliest_changed.notified().await,
            Some(at) if at <= Instant::now() => p.expire(Instant::now()),
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = p.earliest_changed.notified() => {}
                }
            }
        }
    }
}
