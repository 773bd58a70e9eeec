//! The cluster change running in the background (`KVSTORE ADDNODE`/`REMOVENODE`), whose
//! progress `INFO cluster` and `KVSTORE STATS` show while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use kv_cluster::Progress;

/// A change started by a client and running off the runtime.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// What runs, as typed: `ADDNODE node4`.
    pub(crate) what: String,
    pub(crate) started: Instant,
    /// The last progress report, once the first batch moved.
    pub(crate) progress: Option<Progress>,
    /// How it ended, once it has: `Ok(())` or `Err(error)`.
    pub(crate) outcome: Option<Result<(), String>>,
}

/// The background change, if one runs or ran.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    job: Mutex<Option<Job>>,
    /// Set at shutdown: a running change stops at its next batch.
    cancel: AtomicBool,
}

impl AdminState {
    /// The current (or last) job.
    pub(crate) fn job(&self) -> Option<Job> {
        self.lock().clone()
    }

    /// Starts `what` unless a job runs; returns whether it was started.
    pub(crate) fn start(&self, what: String) -> bool {
        let mut job = self.lock();
        if job.as_ref().is_some_and(|j| j.outcome.is_none()) {
            return false;
        }
        *job = Some(Job {
            what,
            started: Instant::now(),
            progress: None,
            outcome: None,
        });
        true
    }

    pub(crate) fn progress(&self, p: &Progress) {
        if let Some(job) = self.lock().as_mut() {
            job.progress = Some(p.clone());
        }
    }

    pub(crate) fn finish(&self, outcome: Result<(), String>) {
        if let Some(job) = self.lock().as_mut() {
            job.outcome = Some(outcome);
        }
    }

    /// Asks a running change to stop at its next batch.
    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Job>> {
        self.job.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
