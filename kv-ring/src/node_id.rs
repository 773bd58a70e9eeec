//! Node identifiers.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The longest node id accepted, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;

/// The name of a node: 1 to 64 characters of `[A-Za-z0-9_.-]`, unique in a cluster.
///
/// Cheap to clone (a shared string). Ordered and hashed as its text.
///
/// # Example
/// ```
/// use kv_ring::NodeId;
///
/// let id = NodeId::new("node1")?;
/// assert_eq!(id.as_str(), "node1");
/// assert!(NodeId::new("bad id").is_err());
/// assert!(NodeId::new("").is_err());
/// # Ok::<(), kv_ring::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Validates `id` and makes a node id of it.
    ///
    /// # Errors
    /// [`Error::InvalidNodeId`] if `id` is empty, longer than [`MAX_NODE_ID_LEN`] or holds a
    /// character outside `[A-Za-z0-9_.-]`.
    pub fn new(id: impl AsRef<str>) -> Result<Self> {
        let id = id.as_ref();
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > MAX_NODE_ID_LEN {
            Some("it is longer than 64 characters")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            Some("only letters, digits, '_', '.' and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidNodeId {
                id: id.to_owned(),
                reason,
            }),
            None => Ok(NodeId(Arc::from(id))),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        NodeId::new(s)
    }
}

impl TryFrom<&str> for NodeId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        NodeId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(NodeId::new("node-1.a_B").is_ok());
        assert!(NodeId::new("a".repeat(64)).is_ok());
        assert!(NodeId::new("a".repeat(65)).is_err());
        for bad in ["", "a b", "ü", "a/b", "a\0"] {
            assert!(
                matches!(NodeId::new(bad), Err(Error::InvalidNodeId { .. })),
                "{bad:?}"
            );
        }
        let id: NodeId = "n1".parse().unwrap();
        assert_eq!(id.to_string(), "n1");
    }
}
