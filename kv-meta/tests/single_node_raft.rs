//! One real openraft node on `MetaLog` + `MetaMachine` (no network: a one-voter cluster
//! commits alone): commands commit and apply, refusals come back as answers, `MetaWatch`
//! sees each applied state, and after a restart the state is back from the snapshot file
//! plus the log re-applied up to the saved committed id, before any new leader commits.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kv_meta::{
    Command, MetaError, MetaLog, MetaMachine, MetaNode, MetaResponse, MetaTypes, NewMember,
};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, Raft};

/// A network that reaches nobody: a single voter never needs it.
struct Nowhere;

fn unreachable<E: std::error::Error>() -> RPCError<u64, MetaNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
        "no network in this test",
    )))
}

impl RaftNetwork<MetaTypes> for Nowhere {
    async fn append_entries(
        &mut self,
        _: AppendEntriesRequest<MetaTypes>,
        _: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MetaNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _: InstallSnapshotRequest<MetaTypes>,
        _: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, MetaNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _: VoteRequest<u64>,
        _: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, MetaNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

impl RaftNetworkFactory<MetaTypes> for Nowhere {
    type Network = Nowhere;
    async fn new_client(&mut self, _: u64, _: &MetaNode) -> Nowhere {
        Nowhere
    }
}

fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

async fn start(dir: &Path) -> (Raft<MetaTypes>, MetaMachine) {
    // The previous run's storage thread may still be releasing the log's lock.
    let mut tries = 0;
    let log = loop {
        match MetaLog::open(&dir.join("log")).await {
            Ok(log) => break log,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let machine = MetaMachine::open(dir).unwrap();
    let raft = Raft::new(1, config(), Nowhere, log, machine.clone())
        .await
        .unwrap();
    (raft, machine)
}

fn register(id: &str) -> Command {
    Command::Register {
        id: id.into(),
        cluster_addr: format!("{id}:7000"),
        client_addr: format!("{id}:6379"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_commit_apply_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, machine) = start(dir.path()).await;
    let mut watch = machine.watch();
    let nodes = BTreeMap::from([(
        1,
        MetaNode {
            id: 1,
            cluster_addr: "n1:7000".into(),
        },
    )]);
    raft.initialize(nodes).await.unwrap();
    raft.wait(Some(Duration::from_secs(10)))
        .current_leader(1, "leader")
        .await
        .unwrap();

    let bootstrap = Command::Bootstrap {
        uuid: 7,
        name: "test".into(),
        rf: 1,
        vnodes: 4,
        members: vec![NewMember {
            id: "n1".into(),
            cluster_addr: "n1:7000".into(),
            client_addr: "n1:6379".into(),
            weight: 1.0,
            tokens: vec![10, 20, 30, 40],
        }],
    };
    let r = raft.client_write(bootstrap).await.unwrap();
    assert_eq!(r.data, MetaResponse::Ok { epoch: 1 });
    watch.wait_for(|s| s.meta.epoch == 1).await.unwrap();
    assert!(
        raft.client_write(register("n2"))
            .await
            .unwrap()
            .data
            .is_ok()
    );
    // Proposed twice: committed, and refused by the state machine.
    let again = raft.client_write(register("n2")).await.unwrap();
    assert_eq!(
        again.data,
        MetaResponse::Refused(MetaError::AlreadyMember { id: "n2".into() })
    );

    // A snapshot on disk, then one more entry only in the log.
    raft.trigger().snapshot().await.unwrap();
    let at = again.log_id;
    raft.wait(Some(Duration::from_secs(10)))
        .snapshot(at, "snapshot")
        .await
        .unwrap();
    assert!(dir.path().join("snapshot").exists());
    let last = raft.client_write(register("n3")).await.unwrap();
    assert!(last.data.is_ok());
    assert!(machine.current().meta.members.contains_key("n3"));
    raft.shutdown().await.unwrap();
    drop(raft);

    // The snapshot file alone holds the state at the snapshot.
    let snap = MetaMachine::open(dir.path()).unwrap().current();
    assert_eq!(snap.last_log_id, Some(at));
    assert!(snap.meta.members.contains_key("n2") && !snap.meta.members.contains_key("n3"));
    // Restart: by the time `Raft::new` returns, the log is re-applied up to the committed id
    // it saved, before any election (membership.md §2.6: the fence is back at once).
    let (raft, machine) = start(dir.path()).await;
    assert_eq!(machine.current().last_log_id, Some(last.log_id));
    assert_eq!(machine.current().meta.members["n3"].raft_id, 3);
    raft.shutdown().await.unwrap();
}
