//! How the coordinator opens the node behind each member.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use kv_ring::NodeId;

use crate::error::Result;
use crate::replica::Replica;

/// Opens the [`Replica`] of a member from its directory (`<data-dir>/<node-id>/`). The default
/// opens a `kv_node::Node` there; [`MemoryBackend`](crate::MemoryBackend) keeps nodes in memory
/// for tests; a remote backend would connect to the node instead.
///
/// # Example
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// use kv_cluster::{Backend, MemoryBackend, Replica};
///
/// let backend = MemoryBackend::default();
/// let id = kv_ring::NodeId::new("node1")?;
/// let node: Arc<dyn Replica> = backend.open(&id, Path::new("/tmp/unused/node1"))?;
/// assert_eq!(node.id().as_str(), "node1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Backend: Send + Sync + fmt::Debug {
    /// Opens (creating if needed) the node `id` whose own directory is `dir`.
    ///
    /// # Errors
    /// Whatever opening the node fails with.
    fn open(&self, id: &NodeId, dir: &Path) -> Result<Arc<dyn Replica>>;

    /// Deletes everything of node `id`, which has left the cluster and whose handles are all
    /// dropped. Called instead of dropping every range of a leaving node, which would cost a
    /// scan of all it holds. Must be idempotent (a crash may repeat it), and a crash midway
    /// must not leave a half-deleted node at `dir`.
    ///
    /// # Errors
    /// Whatever deleting fails with.
    fn destroy(&self, id: &NodeId, dir: &Path) -> Result<()>;
}
