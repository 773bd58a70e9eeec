//! When the members last made their writes durable: [`Cluster::last_flush`].

use crate::cluster::Cluster;

impl Cluster {
    /// The oldest of the members' last flushes ([`Replica::last_flush`]): every write a
    /// member had applied by then is durable on it. `None` if a member that is up has not
    /// flushed since it was opened (or keeps nothing on disk); down members are skipped.
    /// What `INFO persistence` reports.
    ///
    /// ```
    /// use kv_cluster::{Cluster, ClusterOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
    /// cluster.put(b"k", b"v")?;
    /// cluster.sync()?;
    /// assert!(cluster.last_flush().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`Replica::last_flush`]: crate::Replica::last_flush
    pub fn last_flush(&self) -> Option<std::time::SystemTime> {
        let routing = self.routing();
        let mut oldest = None;
        for id in routing.ring.nodes() {
            let Some(node) = routing.node(id) else {
                continue;
            };
            if node.is_down() {
                continue;
            }
            let at = node.last_flush()?;
            oldest = Some(oldest.map_or(at, |o: std::time::SystemTime| o.min(at)));
        }
        oldest
    }
}
