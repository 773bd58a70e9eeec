//! `MetaMachine`: the raft state machine over [`ClusterMeta`], in memory, with its snapshot
//! optionally kept on disk.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use tokio::sync::{Mutex, watch};

use crate::command::MetaResponse;
use crate::error::{Error, Result};
use crate::raft::{MetaNode, MetaTypes};
use crate::snapshot::MetaSnapshot;

/// The file a snapshot is kept in, in the directory given to [`MetaMachine::open`].
pub const SNAPSHOT_FILE: &str = "snapshot";

/// The applied state as the rest of the node sees it: each value is the state after one
/// batch of applied entries (last log id, raft membership, [`ClusterMeta`]).
///
/// [`ClusterMeta`]: crate::ClusterMeta
pub type MetaWatch = watch::Receiver<Arc<MetaSnapshot>>;

/// The raft state machine: [`ClusterMeta`] in memory, applied entry by entry with
/// [`ClusterMeta::apply`], each applied batch published on a [`MetaWatch`].
///
/// Durability is openraft's "persistent snapshot" mode: `apply` writes nothing; a snapshot is
/// written to `<dir>/snapshot` (atomically: a temporary file, `fsync`, rename, `fsync` of the
/// directory) when it is built or installed, and on open the state is the snapshot's; openraft
/// then re-applies the log from the snapshot up to the committed id that [`MetaLog`] saved.
/// [`in_memory`](MetaMachine::in_memory) keeps the snapshot in memory only.
///
/// Clones share the state machine (a clone is the snapshot builder openraft asks for).
///
/// [`ClusterMeta`]: crate::ClusterMeta
/// [`ClusterMeta::apply`]: crate::ClusterMeta::apply
/// [`MetaLog`]: crate::MetaLog
///
/// # Example
///
/// ```
/// let machine = kv_meta::MetaMachine::in_memory();
/// let watch = machine.watch();
/// assert_eq!(watch.borrow().meta.epoch, 0); // not bootstrapped yet
/// ```
#[derive(Debug, Clone)]
pub struct MetaMachine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Serializes apply, build and install: each sees and leaves a whole state.
    state: Mutex<MachineState>,
    published: watch::Sender<Arc<MetaSnapshot>>,
    /// `<dir>/snapshot`, when snapshots are kept on disk.
    file: Option<PathBuf>,
}

#[derive(Debug)]
struct MachineState {
    current: MetaSnapshot,
    /// The last snapshot built or installed: its meta and its bytes (the file's bytes).
    snapshot: Option<(SnapshotMeta<u64, MetaNode>, Vec<u8>)>,
}

/// A snapshot's id: its last log id, so that every node names the same state alike.
fn snapshot_id(last: Option<LogId<u64>>) -> String {
    match last {
        Some(l) => format!("{}-{}", l.leader_id, l.index),
        None => "none".into(),
    }
}

fn snapshot_meta(s: &MetaSnapshot) -> SnapshotMeta<u64, MetaNode> {
    SnapshotMeta {
        last_log_id: s.last_log_id,
        last_membership: s.membership.clone(),
        snapshot_id: snapshot_id(s.last_log_id),
    }
}

impl MetaMachine {
    /// A state machine whose snapshots stay in memory (the simulation's, tests').
    pub fn in_memory() -> MetaMachine {
        MetaMachine::with(MetaSnapshot::default(), None, None)
    }

    /// A state machine keeping its snapshot in `<dir>/snapshot`, starting from the snapshot
    /// there if there is one.
    ///
    /// # Errors
    /// [`Error::Io`] if `dir` cannot be created; the errors of [`MetaSnapshot::read_file`] for a
    /// snapshot that cannot be read (the node does not start on a corrupt snapshot).
    pub fn open(dir: &Path) -> Result<MetaMachine> {
        kv_wal::durable::create_dir_all(dir)?;
        let file = dir.join(SNAPSHOT_FILE);
        Ok(match MetaSnapshot::read_file(&file)? {
            Some(snap) => {
                let bytes = snap.encode()?;
                MetaMachine::with(snap, Some(bytes), Some(file))
            }
            None => MetaMachine::with(MetaSnapshot::default(), None, Some(file)),
        })
    }

    fn with(current: MetaSnapshot, bytes: Option<Vec<u8>>, file: Option<PathBuf>) -> MetaMachine {
        let snapshot = bytes.map(|b| (snapshot_meta(&current), b));
        let (published, _) = watch::channel(Arc::new(current.clone()));
        MetaMachine {
            inner: Arc::new(Inner {
                state: Mutex::new(MachineState { current, snapshot }),
                published,
                file,
            }),
        }
    }

    /// A receiver of every applied state, starting with the current one.
    pub fn watch(&self) -> MetaWatch {
        self.inner.published.subscribe()
    }

    /// The state as last applied.
    pub fn current(&self) -> Arc<MetaSnapshot> {
        self.inner.published.borrow().clone()
    }

    fn publish(&self, state: &MetaSnapshot) {
        self.inner.published.send_replace(Arc::new(state.clone()));
    }

    /// Writes `bytes` as the snapshot file, off the async threads (it `fsync`s).
    async fn persist(&self, bytes: &[u8]) -> Result<()> {
        let Some(file) = self.inner.file.clone() else {
            return Ok(());
        };
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || kv_wal::durable::write_file_atomic(&file, &bytes))
            .await
            .map_err(|e| Error::Io {
                op: "write snapshot",
                path: self.inner.file.clone().unwrap_or_default(),
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(())
    }
}

impl RaftSnapshotBuilder<MetaTypes> for MetaMachine {
    async fn build_snapshot(
        &mut self,
    ) -> std::result::Result<Snapshot<MetaTypes>, StorageError<u64>> {
        let mut state = self.inner.state.lock().await;
        let meta = snapshot_meta(&state.current);
        let write_err = |e: &Error| StorageIOError::write_snapshot(Some(meta.signature()), e);
        let bytes = state.current.encode().map_err(|e| write_err(&e))?;
        self.persist(&bytes).await.map_err(|e| write_err(&e))?;
        state.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<MetaTypes> for MetaMachine {
    type SnapshotBuilder = MetaMachine;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId<u64>>, StoredMembership<u64, MetaNode>), StorageError<u64>>
    {
        let state = self.inner.state.lock().await;
        Ok((state.current.last_log_id, state.current.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<MetaResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<MetaTypes>> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.inner.state.lock().await;
        let current = &mut state.current;
        let mut responses = Vec::new();
        for entry in entries {
            current.last_log_id = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Normal(cmd) => current.meta.apply(entry.log_id.index, cmd),
                EntryPayload::Membership(m) => {
                    current.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    MetaResponse::Ok {
                        epoch: current.meta.epoch,
                    }
                }
                EntryPayload::Blank => MetaResponse::Ok {
                    epoch: current.meta.epoch,
                },
            };
            responses.push(response);
        }
        self.publish(&state.current);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> MetaMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MetaNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let read_err = |e: &Error| StorageIOError::read_snapshot(Some(meta.signature()), e);
        let snap = MetaSnapshot::decode(&bytes).map_err(|e| read_err(&e))?;
        if snap.last_log_id != meta.last_log_id || snap.membership != meta.last_membership {
            let e = Error::SnapshotCorrupt {
                reason: format!(
                    "its body is at {:?}, its meta says {:?}",
                    snap.last_log_id, meta.last_log_id
                ),
            };
            return Err(read_err(&e).into());
        }
        let mut state = self.inner.state.lock().await;
        self.persist(&bytes)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        state.current = snap;
        state.snapshot = Some((meta.clone(), bytes));
        self.publish(&state.current);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<MetaTypes>>, StorageError<u64>> {
        let state = self.inner.state.lock().await;
        Ok(state.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
