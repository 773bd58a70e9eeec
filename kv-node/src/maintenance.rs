//! The background thread: hint files for newly sealed segments, compaction past the
//! threshold.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::node::Inner;
use crate::{Error, Result};

pub(crate) struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Maintenance {
    pub fn start(inner: Arc<Inner>) -> Result<Maintenance> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let dir = inner.dir.clone();
        let thread = std::thread::Builder::new()
            .name("kv-node-maintenance".into())
            .spawn(move || {
                let every = inner.opts.maintenance_interval;
                loop {
                    {
                        let (lock, cv) = &*signal;
                        let mut stopped = lock.lock();
                        if !*stopped {
                            cv.wait_for(&mut stopped, every);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    // Compaction first: a segment it deletes needs no hint file (in an
                    // overwrite workload most sealed segments go soon after they are sealed,
                    // and a hint costs a read of the whole segment). Each runs whatever the
                    // other did: a hint that cannot be written (a full disk) must not stop the
                    // space from being reclaimed, nor a failed compaction the hints.
                    let pass = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let compaction = inner.compact(false);
                        let hints = inner.write_hints();
                        compaction.err().or(hints.err())
                    }));
                    let (error, panicked) = match pass {
                        Ok(error) => (error.map(|e| e.chain()), false),
                        Err(_) => (
                            Some("the maintenance thread panicked and stopped".into()),
                            true,
                        ),
                    };
                    *inner.last_maintenance_error.lock() = error;
                    if panicked {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("start the maintenance thread", dir, e))?;
        Ok(Maintenance {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (a pass in progress finishes first).
    pub fn stop(mut self) {
        self.signal_and_join();
    }

    fn signal_and_join(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock() = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.signal_and_join();
    }
}
