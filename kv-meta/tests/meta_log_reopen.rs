//! `MetaLog` across close and reopen: the vote, the entries and the committed id survive; a
//! truncated suffix stays truncated; a purge survives and deletes old segments without
//! losing the vote; a record of an unknown version stops the open.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;

use kv_meta::{Command, Error, LogRecord, MetaLog, MetaTypes};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// An entry carrying a `Register` whose address is `pad` bytes long (to fill segments).
fn entry(term: u64, index: u64, pad: usize) -> Entry<MetaTypes> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::Register {
            id: format!("n{index}"),
            cluster_addr: "x".repeat(pad),
            client_addr: format!("t{term}"),
        }),
    }
}

async fn indexes(log: &mut MetaLog) -> Vec<(u64, u64)> {
    log.try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

async fn reopen(log: MetaLog, dir: &Path) -> MetaLog {
    log.close().await.unwrap();
    MetaLog::open(dir).await.unwrap()
}

#[tokio::test]
async fn vote_entries_and_committed_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open(dir.path()).await.unwrap();
    log.save_vote(&Vote::new(3, 2)).await.unwrap();
    log.blocking_append((1..=10).map(|i| entry(1, i, 10)))
        .await
        .unwrap();
    log.save_committed(Some(log_id(1, 5))).await.unwrap();
    let mut log = reopen(log, dir.path()).await;
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 5)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (None, Some(log_id(1, 10)))
    );
    let entries = log.try_get_log_entries(3..5).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(matches!(
        &entries[0].payload,
        EntryPayload::Normal(Command::Register { id, .. }) if id == "n3"
    ));
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_truncated_suffix_stays_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open(dir.path()).await.unwrap();
    log.blocking_append((1..=10).map(|i| entry(1, i, 10)))
        .await
        .unwrap();
    log.truncate(log_id(1, 7)).await.unwrap();
    assert_eq!(indexes(&mut log).await.len(), 6);
    let mut log = reopen(log, dir.path()).await;
    assert_eq!(
        indexes(&mut log).await,
        (1..=6).map(|i| (1, i)).collect::<Vec<_>>()
    );
    // A new leader's entries replace the suffix, and survive in their turn.
    log.blocking_append((7..=8).map(|i| entry(2, i, 10)))
        .await
        .unwrap();
    let mut log = reopen(log, dir.path()).await;
    let mut expected: Vec<_> = (1..=6).map(|i| (1, i)).collect();
    expected.extend([(2, 7), (2, 8)]);
    assert_eq!(indexes(&mut log).await, expected);
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 8))
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_purge_survives_and_deletes_old_segments_but_not_the_vote() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open(dir.path()).await.unwrap();
    let segments = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "wal")
            })
            .count()
    };
    // The vote goes first, into the first segment.
    log.save_vote(&Vote::new(1, 1)).await.unwrap();
    log.save_committed(Some(log_id(1, 40))).await.unwrap();
    // 60 entries of 100 KB: several segments (1, 2, 4 MiB ...).
    for i in 1..=60 {
        log.blocking_append([entry(1, i, 100_000)]).await.unwrap();
    }
    let before = segments();
    assert!(before >= 3, "{before} segments");
    log.purge(log_id(1, 50)).await.unwrap();
    assert!(segments() < before, "no segment deleted ({before})");
    let mut log = reopen(log, dir.path()).await;
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 50)));
    assert_eq!(state.last_log_id, Some(log_id(1, 60)));
    assert_eq!(
        indexes(&mut log).await,
        (51..=60).map(|i| (1, i)).collect::<Vec<_>>()
    );
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 40)));
    // Purging everything leaves the purge point as the last log id.
    log.purge(log_id(1, 60)).await.unwrap();
    let mut log = reopen(log, dir.path()).await;
    let state = log.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(log_id(1, 60)), Some(log_id(1, 60)))
    );
    assert!(indexes(&mut log).await.is_empty());
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_record_of_an_unknown_version_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = MetaLog::open(dir.path()).await.unwrap();
    log.close().await.unwrap();
    {
        let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new()).unwrap();
        let mut record = LogRecord::Vote(Vote::new(1, 1)).encode().unwrap();
        record[0] = 2;
        wal.append(&record).unwrap();
        wal.close().unwrap();
    }
    match MetaLog::open(dir.path()).await.unwrap_err() {
        Error::UnsupportedRecord {
            version: 2,
            supported: 1,
            ..
        } => {}
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn a_hole_in_the_entries_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = kv_wal::Wal::open(dir.path(), kv_wal::WalOptions::new()).unwrap();
        for i in [1, 2, 4] {
            wal.append(&LogRecord::Entry(entry(1, i, 1)).encode().unwrap())
                .unwrap();
        }
        wal.close().unwrap();
    }
    match MetaLog::open(dir.path()).await.unwrap_err() {
        Error::BadRecord { reason, .. } => assert!(reason.contains("entry 4"), "{reason}"),
        e => panic!("{e:?}"),
    }
}
