//! `MetaMachine` on its own: applying entries publishes each batch on `MetaWatch`; a
//! snapshot that does not decode, or whose body disagrees with its meta, is refused and
//! changes nothing; a corrupt snapshot file stops the open.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::Cursor;

use kv_meta::{Command, Error, MetaMachine, MetaResponse, MetaTypes, NewMember};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta};

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn bootstrap(index: u64) -> Entry<MetaTypes> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::Bootstrap {
            uuid: 9,
            name: "m".into(),
            rf: 1,
            vnodes: 2,
            members: vec![NewMember {
                id: "n1".into(),
                cluster_addr: "a:1".into(),
                client_addr: "a:2".into(),
                weight: 1.0,
                tokens: vec![5, 6],
            }],
        }),
    }
}

#[tokio::test]
async fn each_applied_batch_is_published() {
    let mut m = MetaMachine::in_memory();
    let mut watch = m.watch();
    let blank = Entry {
        log_id: log_id(1),
        payload: EntryPayload::Blank,
    };
    let responses = m.apply([blank, bootstrap(2), bootstrap(3)]).await.unwrap();
    assert_eq!(responses.len(), 3);
    assert_eq!(responses[1], MetaResponse::Ok { epoch: 1 });
    assert!(!responses[2].is_ok(), "a second bootstrap is refused");
    assert!(watch.has_changed().unwrap());
    let seen = watch.borrow_and_update().clone();
    assert_eq!((seen.last_log_id, seen.meta.epoch), (Some(log_id(3)), 1));
}

#[tokio::test]
async fn a_bad_snapshot_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = MetaMachine::in_memory();
    leader.apply([bootstrap(1)]).await.unwrap();
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let bytes = snap.snapshot.into_inner();

    let mut follower = MetaMachine::open(dir.path()).unwrap();
    let install = |meta: SnapshotMeta<u64, kv_meta::MetaNode>, b: Vec<u8>| {
        let mut f = follower.clone();
        async move { f.install_snapshot(&meta, Box::new(Cursor::new(b))).await }
    };
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(install(snap.meta.clone(), flipped).await.is_err());
    let mut other = snap.meta.clone();
    other.last_log_id = Some(log_id(99));
    assert!(install(other, bytes.clone()).await.is_err());
    assert_eq!(follower.current().meta.epoch, 0);
    assert!(!dir.path().join("snapshot").exists());

    install(snap.meta.clone(), bytes).await.unwrap();
    assert_eq!(follower.current().meta.epoch, 1);
    let reopened = MetaMachine::open(dir.path()).unwrap();
    assert_eq!(reopened.current().last_log_id, Some(log_id(1)));
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);

    // A damaged file: the node does not start on it.
    let path = dir.path().join("snapshot");
    let mut b = std::fs::read(&path).unwrap();
    b[8] = 7;
    std::fs::write(&path, b).unwrap();
    assert!(matches!(
        MetaMachine::open(dir.path()).unwrap_err(),
        Error::SnapshotVersion { found: 7, .. }
    ));
}
