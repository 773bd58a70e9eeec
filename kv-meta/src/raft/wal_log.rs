//! `MetaLog`: the raft log, vote and committed id in a kv-wal log (membership.md §1.5).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use kv_wal::{Lsn, SyncPolicy, Wal, WalOptions};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::raft::MetaTypes;
use crate::raft::record::LogRecord;

/// The raft log, vote and committed log id, durable in a kv-wal log (`SyncPolicy::Always`).
///
/// - **One log for entries, votes and committed marks**, so openraft's rule that vote and log
///   writes are serialized holds by construction: one append order.
/// - **Durable before acknowledged**: `append`'s callback, `save_vote` and every other write
///   return only after the `msync` covering them.
/// - **Replayed on open**: the index (log index → record position) is rebuilt by scanning the
///   records in order. `truncate` appends a truncate-from record and `purge` a purged-through
///   one (the log is append-only), so a truncated suffix stays forgotten after a restart;
///   `purge` then deletes whole segments before the first entry it keeps (after writing the
///   vote and committed id again, so that they never live only in a deleted segment).
/// - **Its own thread**: kv-wal blocks under `Always`, so one storage thread owns the log;
///   openraft's async methods send it a message and await the answer.
///
/// Clones share the log (a clone is the log reader openraft asks for). The thread ends, and
/// the log closes, when every clone is dropped or on [`close`](MetaLog::close).
#[derive(Debug, Clone)]
pub struct MetaLog {
    tx: mpsc::Sender<Request>,
    dir: PathBuf,
}

type Reply<T> = oneshot::Sender<Result<T>>;
/// The last purged log id and the last log id.
type Bounds = (Option<LogId<u64>>, Option<LogId<u64>>);

enum Request {
    State(Reply<Bounds>),
    Read(Bound<u64>, Bound<u64>, Reply<Vec<Entry<MetaTypes>>>),
    Append(Vec<Entry<MetaTypes>>, Reply<()>),
    SaveVote(Vote<u64>, Reply<()>),
    ReadVote(Reply<Option<Vote<u64>>>),
    SaveCommitted(Option<LogId<u64>>, Reply<()>),
    ReadCommitted(Reply<Option<LogId<u64>>>),
    Truncate(u64, Reply<()>),
    Purge(LogId<u64>, Reply<()>),
    Close(Reply<()>),
}

/// The storage thread's state.
struct Store {
    wal: Wal,
    /// Log index → the entry's id and where its record is.
    index: BTreeMap<u64, (LogId<u64>, Lsn)>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
}

impl MetaLog {
    /// Opens (or creates) the log in `dir` and replays it, then starts its storage thread.
    ///
    /// # Errors
    /// [`Error::Wal`] if kv-wal cannot open the log (another process holds it, a damaged
    /// segment header), [`Error::UnsupportedRecord`] for a record of another version,
    /// [`Error::BadRecord`] for one that does not decode or leaves a hole in the log.
    ///
    /// # Example
    ///
    /// ```
    /// use openraft::storage::RaftLogStorage;
    /// # let dir = tempfile::tempdir()?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let mut log = kv_meta::MetaLog::open(dir.path()).await?;
    /// log.save_vote(&openraft::Vote::new(2, 1)).await?;
    /// log.close().await?;
    /// let mut log = kv_meta::MetaLog::open(dir.path()).await?;
    /// assert_eq!(log.read_vote().await?, Some(openraft::Vote::new(2, 1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn open(dir: &Path) -> Result<MetaLog> {
        let dir = dir.to_owned();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel();
        let thread_dir = dir.clone();
        thread::Builder::new()
            .name("kv-meta-log".into())
            .spawn(move || match Store::open(&thread_dir) {
                Ok(store) => {
                    let _ = ready_tx.send(Ok(()));
                    store.run(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|source| Error::Io {
                op: "spawn the storage thread for",
                path: dir.clone(),
                source,
            })?;
        ready_rx.await.map_err(|_| Error::StoreStopped)??;
        Ok(MetaLog { tx, dir })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Closes the log and waits until its storage thread has released it (so the directory
    /// can be opened again); other clones then answer [`Error::StoreStopped`].
    ///
    /// # Errors
    /// [`Error::Wal`] if the final flush fails, [`Error::StoreStopped`] if the thread was gone.
    pub async fn close(self) -> Result<()> {
        self.call(Request::Close).await
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| Error::StoreStopped)?;
        rx.await.map_err(|_| Error::StoreStopped)?
    }
}

/// openraft's error for a failed storage operation.
fn storage_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: &Error) -> StorageError<u64> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

impl RaftLogReader<MetaTypes> for MetaLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry<MetaTypes>>, StorageError<u64>> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.call(|r| Request::Read(start, end, r))
            .await
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }
}

impl RaftLogStorage<MetaTypes> for MetaLog {
    type LogReader = MetaLog;

    async fn get_log_state(
        &mut self,
    ) -> std::result::Result<LogState<MetaTypes>, StorageError<u64>> {
        let (last_purged_log_id, last_log_id) = self
            .call(Request::State)
            .await
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> MetaLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> std::result::Result<(), StorageError<u64>> {
        let vote = *vote;
        self.call(|r| Request::SaveVote(vote, r))
            .await
            .map_err(|e| storage_err(ErrorSubject::Vote, ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<u64>>, StorageError<u64>> {
        self.call(Request::ReadVote)
            .await
            .map_err(|e| storage_err(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> std::result::Result<(), StorageError<u64>> {
        self.call(|r| Request::SaveCommitted(committed, r))
            .await
            .map_err(|e| storage_err(ErrorSubject::Store, ErrorVerb::Write, &e))
    }

    async fn read_committed(
        &mut self,
    ) -> std::result::Result<Option<LogId<u64>>, StorageError<u64>> {
        self.call(Request::ReadCommitted)
            .await
            .map_err(|e| storage_err(ErrorSubject::Store, ErrorVerb::Read, &e))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetaTypes>,
    ) -> std::result::Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<MetaTypes>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        // Awaited before returning, so the entries are readable when `append` returns (as
        // openraft requires) and durable when the callback runs: the log is small and its
        // writes rare, so waiting for the flush here costs nothing that matters.
        match self.call(|r| Request::Append(entries, r)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(storage_err(ErrorSubject::Logs, ErrorVerb::Write, &e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> std::result::Result<(), StorageError<u64>> {
        self.call(|r| Request::Truncate(log_id.index, r))
            .await
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> std::result::Result<(), StorageError<u64>> {
        self.call(|r| Request::Purge(log_id, r))
            .await
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}

impl Store {
    fn open(dir: &Path) -> Result<Store> {
        let wal = Wal::open(dir, WalOptions::new().sync(SyncPolicy::Always))?;
        let mut store = Store {
            wal,
            index: BTreeMap::new(),
            vote: None,
            committed: None,
            purged: None,
        };
        let records: Vec<(Lsn, LogRecord)> = store
            .wal
            .iter_from(store.wal.first_lsn())
            .map(|r| {
                let r = r?;
                let record = LogRecord::decode(r.lsn.as_u64(), &r.payload)?;
                Ok((r.lsn, record))
            })
            .collect::<Result<_>>()?;
        for (lsn, record) in records {
            store.replay(lsn, record)?;
        }
        Ok(store)
    }

    /// Applies one record read back from the log, in log order.
    fn replay(&mut self, lsn: Lsn, record: LogRecord) -> Result<()> {
        match record {
            LogRecord::Entry(e) => {
                let index = e.log_id.index;
                // Entries follow each other (or the purge point) without a hole: openraft
                // only appends at the end, after truncating any conflicting suffix.
                let expected = match self.index.last_key_value() {
                    Some((last, _)) => Some(last + 1),
                    None => self.purged.map(|p| p.index + 1),
                };
                if expected.is_some_and(|x| x != index) {
                    return Err(Error::BadRecord {
                        lsn: lsn.as_u64(),
                        reason: format!("entry {index} does not follow {expected:?}"),
                    });
                }
                self.index.insert(index, (e.log_id, lsn));
            }
            LogRecord::Vote(v) => self.vote = Some(v),
            LogRecord::Committed(c) => self.committed = c,
            LogRecord::TruncateFrom(i) => {
                self.index.split_off(&i);
            }
            LogRecord::PurgedThrough(l) => self.forget_through(l),
        }
        Ok(())
    }

    fn forget_through(&mut self, l: LogId<u64>) {
        self.index = self.index.split_off(&(l.index + 1));
        if self.purged < Some(l) {
            self.purged = Some(l);
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(req) = rx.recv() {
            match req {
                Request::State(r) => {
                    let last = self.index.values().next_back().map(|(l, _)| *l);
                    let _ = r.send(Ok((self.purged, last.or(self.purged))));
                }
                Request::Read(start, end, r) => {
                    let _ = r.send(self.read(start, end));
                }
                Request::Append(entries, r) => {
                    let _ = r.send(self.append(entries));
                }
                Request::SaveVote(v, r) => {
                    let done = self
                        .write(&[LogRecord::Vote(v)])
                        .map(|_| self.vote = Some(v));
                    let _ = r.send(done);
                }
                Request::ReadVote(r) => {
                    let _ = r.send(Ok(self.vote));
                }
                Request::SaveCommitted(c, r) => {
                    let done = self
                        .write(&[LogRecord::Committed(c)])
                        .map(|_| self.committed = c);
                    let _ = r.send(done);
                }
                Request::ReadCommitted(r) => {
                    let _ = r.send(Ok(self.committed));
                }
                Request::Truncate(from, r) => {
                    let done = self.write(&[LogRecord::TruncateFrom(from)]).map(|_| {
                        self.index.split_off(&from);
                    });
                    let _ = r.send(done);
                }
                Request::Purge(upto, r) => {
                    let _ = r.send(self.purge(upto));
                }
                Request::Close(r) => {
                    let _ = r.send(self.wal.close().map_err(Error::from));
                    return;
                }
            }
        }
    }

    /// Appends `records` as one batch (all or none survive a crash) and returns their
    /// positions; under `Always` it returns once they are durable.
    fn write(&self, records: &[LogRecord]) -> Result<Vec<Lsn>> {
        let payloads = records
            .iter()
            .map(LogRecord::encode)
            .collect::<Result<Vec<_>>>()?;
        let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let first = self.wal.append_batch(&slices)?;
        // The batch's records follow its first contiguously: read their positions back.
        let mut lsns = Vec::with_capacity(records.len());
        for r in self.wal.iter_from(first).take(records.len()) {
            lsns.push(r?.lsn);
        }
        Ok(lsns)
    }

    fn append(&mut self, entries: Vec<Entry<MetaTypes>>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let ids: Vec<LogId<u64>> = entries.iter().map(|e| e.log_id).collect();
        let records: Vec<LogRecord> = entries.into_iter().map(LogRecord::Entry).collect();
        let lsns = self.write(&records)?;
        for (id, lsn) in ids.into_iter().zip(lsns) {
            self.index.insert(id.index, (id, lsn));
        }
        Ok(())
    }

    fn read(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry<MetaTypes>>> {
        let mut out = Vec::new();
        for (_, (_, lsn)) in self.index.range((start, end)) {
            let payload = self.wal.read(*lsn)?;
            match LogRecord::decode(lsn.as_u64(), &payload)? {
                LogRecord::Entry(e) => out.push(e),
                other => {
                    return Err(Error::BadRecord {
                        lsn: lsn.as_u64(),
                        reason: format!("the index points at a {other:?}, not an entry"),
                    });
                }
            }
        }
        Ok(out)
    }

    fn purge(&mut self, upto: LogId<u64>) -> Result<()> {
        // The vote and the committed id go again after the purge mark, so that deleting the
        // segments before the first kept entry cannot take the only copy of either.
        let mut records = vec![LogRecord::PurgedThrough(upto)];
        records.extend(self.vote.map(LogRecord::Vote));
        records.push(LogRecord::Committed(self.committed));
        let lsns = self.write(&records)?;
        self.forget_through(upto);
        let keep_from = self
            .index
            .values()
            .next()
            .map(|(_, lsn)| *lsn)
            .or(lsns.first().copied());
        if let Some(lsn) = keep_from {
            self.wal.truncate_before(lsn)?;
        }
        Ok(())
    }
}
