//! Three metadata rafts talking through kv-remote's `ReplicaServer` and `MetaClient` over
//! real sockets on loopback (membership.md §5 step 4), with the raft configuration of §2.1:
//! they elect a leader and bootstrap; a command proposed on a follower is forwarded to the
//! leader and applied on every node; with the leader's whole node stopped (raft, server,
//! transport) the other two elect a new leader and commit; the stopped node restarted from
//! its directory catches up (ReadIndex, then its applied index reaches it). A joiner that
//! arrives after the log was purged catches up by snapshot.
#![allow(clippy::unwrap_used)]

mod net;

use kv_meta::{
    Command, JoinRequest, MetaError, MetaRaft, MetaResponse, MetaStatus, RateLimit, meta_config,
};
use net::*;
use openraft::SnapshotPolicy;

fn rate(keys: u64) -> Command {
    Command::SetStreamRate {
        rate: RateLimit {
            keys_per_sec: keys,
            bytes_per_sec: 0,
        },
    }
}

/// Waits until `raft` has applied a stream rate of `keys`.
async fn sees_rate(raft: &MetaRaft, keys: u64) {
    let mut watch = raft.watch();
    tokio::time::timeout(
        LONG,
        watch.wait_for(|s| s.meta.stream_rate.keys_per_sec == keys),
    )
    .await
    .unwrap_or_else(|_| panic!("raft {} never applied rate {keys}", raft.raft_id()))
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rafts_elect_forward_fail_over_and_catch_up() {
    let root = tempfile::tempdir().unwrap();
    let config = meta_config("test");
    let started = std::time::Instant::now();
    let (mut nodes, list, bootstrap) = cluster(root.path(), 3, &config).await;
    let elected = started.elapsed();

    // Elected and bootstrapped: one leader all agree on, every node at epoch 1 with the
    // three members and raft ids in list order.
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    for node in &nodes {
        let state = node.raft().watch().borrow().clone();
        assert_eq!(state.meta.epoch, 1, "{}", node.id);
        let ids: Vec<u64> = state.meta.members.values().map(|m| m.raft_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let MetaStatus { voters, .. } = node.raft().status();
        assert_eq!(voters, [1, 2, 3]);
    }

    // Proposed on a follower: forwarded to the leader, committed, applied everywhere.
    let follower = nodes.iter().find(|n| n.raft_id != leader).unwrap();
    assert_ne!(follower.raft().status().leader, Some(follower.raft_id));
    let t = std::time::Instant::now();
    let (log_id, response) = follower.raft().propose(rate(100)).await.unwrap();
    let forwarded_commit = t.elapsed();
    assert!(response.is_ok(), "{response:?}");
    assert_eq!(log_id.leader_id.node_id, leader, "committed by the leader");
    for node in &nodes {
        sees_rate(node.raft(), 100).await;
    }
    // The leader's view, asked from the follower over the network.
    let leader_peer = nodes.iter().find(|n| n.raft_id == leader).unwrap().peer();
    let status = follower.raft().status_of(&leader_peer).await.unwrap();
    assert_eq!((status.raft_id, status.leader), (leader, Some(leader)));
    assert!(status.applied >= log_id.index, "{status:?}");
    assert_eq!(status.epoch, 1);
    // A refusal is an answer, forwarded back like any other.
    let (_, again) = follower.raft().propose(bootstrap.clone()).await.unwrap();
    assert!(
        matches!(
            again,
            MetaResponse::Refused(MetaError::AlreadyBootstrapped { .. })
        ),
        "{again:?}"
    );

    // The leader's node stops entirely: raft, server, transport.
    let old = nodes.iter().position(|n| n.raft_id == leader).unwrap();
    nodes[old].stop().await;
    let t = std::time::Instant::now();
    let survivors: Vec<&net::Node> = nodes.iter().filter(|n| n.raft.is_some()).collect();
    let new_leader = agreed_leader(&survivors).await;
    let failover = t.elapsed();
    assert_ne!(new_leader, leader);
    // Proposed on whichever survivor: committed by the new leader.
    let (later, response) = survivors[0].raft().propose(rate(200)).await.unwrap();
    assert!(response.is_ok());
    assert_eq!(later.leader_id.node_id, new_leader);
    assert!(later.index > log_id.index);
    for node in &survivors {
        sees_rate(node.raft(), 200).await;
    }

    // Restarted from its directory, on its port: it had applied rate 100, not 200; after a
    // ReadIndex and waiting for its applied index, it has 200.
    let (id, raft_id, dir, addr) = {
        let n = &nodes[old];
        (n.id.clone(), n.raft_id, n.dir.clone(), n.addr)
    };
    let mut back = Node::listen(&id, raft_id, &dir, Some(addr)).await;
    back.start(&list, config.clone()).await;
    assert_eq!(
        back.raft().watch().borrow().meta.stream_rate.keys_per_sec,
        100,
        "the state it had applied is back from its own log before it hears from anyone"
    );
    // Bootstrapping again with the same list is harmless.
    back.raft().bootstrap(&bootstrap, LONG).await.unwrap();
    let t = std::time::Instant::now();
    let index = back.raft().read_index().await.unwrap();
    assert!(index >= later.index, "{index} < {}", later.index);
    back.raft().wait_applied(index, LONG).await.unwrap();
    let caught_up = t.elapsed();
    assert_eq!(
        back.raft().watch().borrow().meta.stream_rate.keys_per_sec,
        200
    );
    nodes[old] = back;

    // All three commit again, proposed on the restarted node.
    let (_, response) = nodes[old].raft().propose(rate(300)).await.unwrap();
    assert!(response.is_ok());
    for node in &nodes {
        sees_rate(node.raft(), 300).await;
    }
    eprintln!(
        "elected and bootstrapped in {elected:?}; forwarded commit in {forwarded_commit:?}; \
         new leader {failover:?} after the stop; restarted node caught up in {caught_up:?}"
    );
    stop_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_catches_up_by_snapshot_after_the_log_is_purged() {
    let root = tempfile::tempdir().unwrap();
    let mut config = meta_config("test");
    // A snapshot every 5 entries, none kept behind it: the joiner cannot get the log.
    config.snapshot_policy = SnapshotPolicy::LogsSinceLast(5);
    config.max_in_snapshot_log_to_keep = 0;
    config.purge_batch_size = 1;
    let (mut nodes, mut list, _) = cluster(root.path(), 3, &config).await;
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    for keys in 1..=20 {
        let (_, r) = nodes[0].raft().propose(rate(keys)).await.unwrap();
        assert!(r.is_ok());
    }
    let leader_node = nodes.iter().find(|n| n.raft_id == leader).unwrap();
    let mut metrics = leader_node.raft().raft().metrics();
    tokio::time::timeout(
        LONG,
        metrics.wait_for(|m| m.purged.is_some_and(|p| p.index >= 10)),
    )
    .await
    .expect("the leader purges its log behind a snapshot")
    .unwrap();

    // n4 listens, then asks a follower to join: forwarded to the leader, registered, a learner.
    let mut n4 = Node::listen("n4", 0, &root.path().join("n4"), None).await;
    list.push(("n4".into(), n4.addr));
    // The members' transports learn of n4 (a node process's PeerSync does this from MetaWatch).
    for node in &mut nodes {
        node.add_peer("n4", n4.addr).await;
    }
    let seed = nodes.iter().find(|n| n.raft_id != leader).unwrap().peer();
    n4.connect(&list).await;
    let probe = n4.transport();
    let joiner = JoinRequest {
        id: "n4".into(),
        cluster_addr: n4.addr.to_string(),
        client_addr: "127.0.0.1:6499".into(),
        cluster_name: "test".into(),
    };
    let joined = MetaRaft::join(probe.as_ref(), &seed, &joiner)
        .await
        .unwrap();
    assert_eq!((joined.raft_id, joined.slot), (4, 3));
    // Asked again: the same answer, nothing registered twice.
    let again = MetaRaft::join(probe.as_ref(), &seed, &joiner)
        .await
        .unwrap();
    assert_eq!(again, joined);
    // Another cluster's name is refused.
    let other = JoinRequest {
        id: "n5".into(),
        cluster_name: "other".into(),
        ..joiner.clone()
    };
    let wrong = MetaRaft::join(probe.as_ref(), &seed, &other).await;
    assert!(
        matches!(wrong, Err(MetaError::WrongCluster { .. })),
        "{wrong:?}"
    );
    drop(probe);

    n4.raft_id = joined.raft_id;
    n4.open(config.clone()).await;
    let index = n4.raft().read_index().await.unwrap();
    n4.raft().wait_applied(index, LONG).await.unwrap();
    let state = n4.raft().watch().borrow().clone();
    assert_eq!(state.meta.stream_rate.keys_per_sec, 20);
    assert_eq!(state.meta.members["n4"].raft_id, 4);
    // It got there by a snapshot: installed (on disk in its meta directory), its log starting
    // after it.
    assert!(n4.dir.join("meta").join(kv_meta::SNAPSHOT_FILE).exists());
    let m = n4.raft().raft().metrics().borrow().clone();
    assert!(
        m.snapshot.is_some_and(|s| s.index >= 10),
        "{:?}",
        m.snapshot
    );
    let status = leader_node_status(&nodes, leader);
    assert_eq!(status.learners, [4]);
    assert_eq!(status.voters, [1, 2, 3]);

    // The learner follows new commits too.
    let (_, r) = nodes[1].raft().propose(rate(99)).await.unwrap();
    assert!(r.is_ok());
    sees_rate(n4.raft(), 99).await;
    n4.stop().await;
    stop_all(&mut nodes).await;
}

fn leader_node_status(nodes: &[Node], leader: u64) -> MetaStatus {
    nodes
        .iter()
        .find(|n| n.raft_id == leader)
        .unwrap()
        .raft()
        .status()
}

/// Waits until the leader's raft membership satisfies `ok`, and returns it.
async fn membership_where(nodes: &[Node], ok: impl Fn(&MetaStatus) -> bool) -> MetaStatus {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let running: Vec<&Node> = nodes.iter().filter(|n| n.raft.is_some()).collect();
        let leader = agreed_leader(&running).await;
        let status = leader_node_status(nodes, leader);
        if ok(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "membership never reached the expected shape: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voter_reconciler_keeps_three_voters_of_five() {
    let root = tempfile::tempdir().unwrap();
    let config = meta_config("test");
    let (mut nodes, _, _) = cluster(root.path(), 5, &config).await;
    // A bootstrap of five makes five voters; capped at three, the reconciler on the leader
    // (every node runs one) demotes two, one at a time, keeping them as learners.
    for node in &nodes {
        node.raft().spawn_voter_reconciler(
            3,
            node.liveness(),
            std::time::Duration::from_millis(200),
        );
    }
    let status = membership_where(&nodes, |s| s.voters.len() == 3 && s.learners.len() == 2).await;
    let leader = status.leader.unwrap();
    assert!(status.voters.contains(&leader));

    // A voter that is not the leader stops: a live learner is promoted, the dead voter
    // demoted, and three live voters commit.
    let gone = *status.voters.iter().find(|&&v| v != leader).unwrap();
    let at = nodes.iter().position(|n| n.raft_id == gone).unwrap();
    nodes[at].stop().await;
    let status = membership_where(&nodes, |s| {
        s.voters.len() == 3 && !s.voters.contains(&gone) && s.learners.contains(&gone)
    })
    .await;
    let running: Vec<u64> = nodes
        .iter()
        .filter(|n| n.raft.is_some())
        .map(|n| n.raft_id)
        .collect();
    assert!(
        status.voters.iter().all(|v| running.contains(v)),
        "{status:?}"
    );
    let proposer = nodes.iter().find(|n| n.raft.is_some()).unwrap();
    let (_, r) = proposer.raft().propose(rate(7)).await.unwrap();
    assert!(r.is_ok());
    for node in nodes.iter().filter(|n| n.raft.is_some()) {
        sees_rate(node.raft(), 7).await;
    }
    stop_all(&mut nodes).await;
}
