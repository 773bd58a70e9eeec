//! The epoch fence a replica keeps (see [`Replica::fence`](crate::Replica::fence)).

use std::sync::atomic::{AtomicU64, Ordering};

use kv_ring::NodeId;

use crate::error::{Error, Result};

/// The lowest epoch a replica still serves. Raised by the coordinator once a membership change
/// has committed and every operation routed by the old ring has finished.
#[derive(Debug, Default)]
pub(crate) struct Fence(AtomicU64);

impl Fence {
    /// Refuses `epoch` if it is below the fence.
    #[inline]
    pub(crate) fn check(&self, node: &NodeId, epoch: u64) -> Result<()> {
        let current = self.0.load(Ordering::Acquire);
        if epoch < current {
            return Err(Error::StaleEpoch {
                node: node.clone(),
                epoch,
                current,
            });
        }
        Ok(())
    }

    /// Raises the fence to `epoch` (never lowers it).
    pub(crate) fn raise(&self, epoch: u64) {
        self.0.fetch_max(epoch, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_below_and_never_lowers() {
        let id = NodeId::new("n").unwrap();
        let f = Fence::default();
        f.raise(5);
        f.raise(3);
        assert!(f.check(&id, 5).is_ok() && f.check(&id, 6).is_ok());
        assert!(matches!(
            f.check(&id, 4),
            Err(Error::StaleEpoch {
                epoch: 4,
                current: 5,
                ..
            })
        ));
    }
}
