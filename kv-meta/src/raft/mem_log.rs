//! `MemLog`: the raft log and vote in memory (the simulation's storage, and tests').

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, RaftLogReader, StorageError, Vote};
use tokio::sync::Mutex;

use crate::raft::MetaTypes;

/// The raft log, vote and committed id, in memory: nothing survives the process. What the
/// simulation runs on (membership.md §4.2) and what tests that need no disk use; [`MetaLog`]
/// is the durable one.
///
/// Clones share the log (a clone is the log reader openraft asks for).
///
/// [`MetaLog`]: crate::MetaLog
///
/// # Example
///
/// ```
/// use kv_meta::MemLog;
/// use openraft::storage::RaftLogStorage;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let mut log = MemLog::new();
/// log.save_vote(&openraft::Vote::new(1, 3)).await?;
/// assert_eq!(log.read_vote().await?, Some(openraft::Vote::new(1, 3)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<MemLogInner>>,
}

#[derive(Debug, Default)]
struct MemLogInner {
    last_purged: Option<LogId<u64>>,
    log: BTreeMap<u64, Entry<MetaTypes>>,
    committed: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
}

impl MemLog {
    /// An empty log.
    pub fn new() -> MemLog {
        MemLog::default()
    }
}

impl RaftLogReader<MetaTypes> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<MetaTypes>>, StorageError<u64>> {
        let inner = self.inner.lock().await;
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<MetaTypes> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<MetaTypes>, StorageError<u64>> {
        let inner = self.inner.lock().await;
        let last = inner.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.inner.lock().await.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        self.inner.lock().await.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetaTypes>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<MetaTypes>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        for e in entries {
            inner.log.insert(e.log_id.index, e);
        }
        // In memory, "persisted" is "stored".
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.inner.lock().await;
        inner.log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.inner.lock().await;
        let kept = inner.log.split_off(&(log_id.index + 1));
        inner.log = kept;
        if inner.last_purged < Some(log_id) {
            inner.last_purged = Some(log_id);
        }
        Ok(())
    }
}
