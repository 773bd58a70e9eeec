//! A cluster of processes on its metadata raft (`docs/membership.md` §5 step 7): three
//! `kvstore serve --node-id ... --peers ...` on 127.0.0.1, each killed when its guard drops.
//!
//! - the three bootstrap the metadata from `--peers` and agree on it (`KVSTORE META` on each
//!   shows the same leader, term, epoch, voters and members; `INFO cluster` the same as
//!   `kvstore_meta_*` lines, `meta` in `kvstore --connect` too), at the epoch of the static
//!   ring, and serve SET/GET;
//! - the raft leader killed with SIGKILL under client load through the two others: a new
//!   leader is elected, no client operation fails, and the killed node, restarted, catches up
//!   (same applied index and epoch as the others) before it serves;
//! - a restarted node's replica refuses a request at an epoch below the fence it replayed
//!   from its metadata (raised above the static ring's by `KVSTORE META BUMP`), before and
//!   after it caught up; a restart with the members in another order is refused with both
//!   cluster uuids printed.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, free_port_pair, poll};
use kv_cluster::Replica as _;
use redis::Commands as _;

/// Three nodes' ports and directories, and their processes while they run.
struct Nodes {
    _one: MutexGuard<'static, ()>,
    _root: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    ports: Vec<u16>,
    running: Vec<Option<Served>>,
}

impl Nodes {
    fn start() -> Nodes {
        let one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
        let root = common::data_dir();
        let mut nodes = Nodes {
            _one: one,
            dirs: (1..=3).map(|i| root.path().join(format!("n{i}"))).collect(),
            _root: root,
            ports: (0..3).map(|_| free_port_pair()).collect(),
            running: vec![None, None, None],
        };
        for i in 0..3 {
            nodes.restart(i);
        }
        nodes
    }

    fn args(&self, i: usize) -> Vec<String> {
        let extra = ["--enable-debug-faults".to_string()];
        common::member_args(i, &self.ports, &extra)
    }

    fn restart(&mut self, i: usize) {
        let args = self.args(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.running[i] = Some(Served::start(&self.dirs[i], &args));
    }

    fn node(&self, i: usize) -> &Served {
        self.running[i].as_ref().expect("node running")
    }
}

/// `KVSTORE META` through node `n`, as `field -> value`.
fn meta(n: &Served) -> BTreeMap<String, String> {
    let mut c = n.client();
    let text: String = redis::cmd("KVSTORE").arg("META").query(&mut c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The views of `nodes` once they agree on leader, term, epoch, applied index, voters and
/// members, and each has caught up (it serves clients).
fn agreed(nodes: &[&Served]) -> BTreeMap<String, String> {
    let same = [
        "leader",
        "term",
        "epoch",
        "applied_index",
        "voters",
        "members",
    ];
    let last = std::cell::RefCell::new(Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    poll(
        Duration::from_secs(31),
        "the nodes agree on the metadata",
        || {
            let views: Vec<_> = nodes.iter().map(|n| meta(n)).collect();
            assert!(
                Instant::now() < deadline,
                "the nodes do not agree: {:?}",
                last.borrow()
            );
            *last.borrow_mut() = views.clone();
            let first = &views[0];
            let agree = views
                .iter()
                .all(|v| same.iter().all(|k| v.get(*k) == first.get(*k)));
            let caught_up = nodes.iter().all(|n| {
                let mut c = n.client();
                let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
                info.contains("kvstore_meta_caught_up:1")
            });
            (agree && caught_up && !first["leader"].is_empty()).then(|| first.clone())
        },
    )
}

#[test]
fn three_nodes_agree_and_a_killed_leader_is_replaced_with_no_failed_client_operation() {
    let mut nodes = Nodes::start();
    let all: Vec<&Served> = (0..3).map(|i| nodes.node(i)).collect();
    let view = agreed(&all);
    // The static ring's epoch (three nodes joined one by one: 3), its three members.
    assert_eq!(view["epoch"], "3", "{view:?}");
    assert_eq!(view["voters"], "n1,n2,n3", "{view:?}");
    assert_eq!(view["members"], "n1=normal,n2=normal,n3=normal", "{view:?}");
    // INFO cluster says the same in kvstore_meta_* lines.
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query(&mut nodes.node(1).client())
        .unwrap();
    assert!(
        info.contains(&format!("kvstore_meta_leader:{}\r\n", view["leader"])),
        "{info}"
    );
    assert!(info.contains("kvstore_meta_epoch:3\r\n"), "{info}");
    assert!(info.contains("kvstore_ring_epoch:3\r\n"), "{info}");
    // And `meta` in `kvstore --connect`.
    let addr = nodes.node(2).addr.to_string();
    let run = common::scripted(&["--connect", &addr], &[], "meta\n");
    assert!(run.status.success(), "{run:?}");
    assert!(
        run.stdout.contains(&format!("leader:{}", view["leader"]))
            && run.stdout.contains("self:n3")
            && run.stdout.contains("epoch:3"),
        "{run:?}"
    );
    // Every node coordinates.
    for i in 0..3 {
        nodes
            .node(i)
            .client()
            .set::<_, _, ()>(format!("k{i}"), i)
            .unwrap();
        let back: Option<usize> = nodes
            .node((i + 1) % 3)
            .client()
            .get(format!("k{i}"))
            .unwrap();
        assert_eq!(back, Some(i));
    }

    // Client load through the two nodes that survive, while the leader dies.
    let leader: usize = view["leader"][1..].parse::<usize>().unwrap() - 1;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = others
        .iter()
        .map(|&i| {
            let addr = nodes.node(i).addr;
            let (stop, ops) = (Arc::clone(&stop), Arc::clone(&ops));
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://{addr}/"))
                    .unwrap()
                    .get_connection_with_timeout(Duration::from_secs(10))
                    .unwrap();
                let mut failed = Vec::new();
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("load-{i}-{n}");
                    match c.set::<_, _, ()>(&k, n) {
                        Ok(()) => acked.push(k.clone()),
                        Err(e) => failed.push(format!("SET {k}: {e}")),
                    }
                    match c.get::<_, Option<u64>>(&k) {
                        Ok(Some(v)) if v == n => {}
                        other => failed.push(format!("GET {k}: {other:?}")),
                    }
                    n += 1;
                    ops.fetch_add(2, Ordering::Relaxed);
                }
                (acked, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    nodes.running[leader].take().unwrap().crash();
    let killed = Instant::now();
    let survivors: Vec<&Served> = others.iter().map(|&i| nodes.node(i)).collect();
    let (new_leader, elected) = poll(Duration::from_secs(30), "a new leader", || {
        let views: Vec<_> = survivors.iter().map(|n| meta(n)).collect();
        let l = views[0]["leader"].clone();
        (l != view["leader"] && !l.is_empty() && views.iter().all(|v| v["leader"] == l))
            .then(|| (l, killed.elapsed()))
    });
    eprintln!("new leader {new_leader} agreed {elected:?} after the kill");
    // The load goes on a little under the new leader.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in load {
        let (a, failed) = t.join().unwrap();
        assert!(failed.is_empty(), "failed client operations: {failed:?}");
        acked.extend(a);
    }
    assert!(
        ops.load(Ordering::Relaxed) > 20,
        "too little load: {}",
        ops.load(Ordering::Relaxed)
    );

    // The killed node restarts, catches up before serving, and agrees.
    let restarted = Instant::now();
    nodes.restart(leader);
    let all: Vec<&Served> = (0..3).map(|i| nodes.node(i)).collect();
    let after = agreed(&all);
    eprintln!(
        "restarted node agreed {:?} after its restart",
        restarted.elapsed()
    );
    assert_eq!(after["leader"], new_leader);
    assert_eq!(after["epoch"], "3");
    let log = nodes.node(leader).stderr_so_far();
    assert!(log.contains("metadata replayed: epoch 3"), "{log}");
    assert!(log.contains("metadata caught up in"), "{log}");
    // It coordinates again: reads what was written while it was down.
    let mut c = nodes.node(leader).client();
    for k in acked.iter().step_by(acked.len().div_ceil(20).max(1)) {
        assert!(
            c.get::<_, Option<u64>>(k).unwrap().is_some(),
            "{k} through the restarted node"
        );
    }
}

/// The cluster uuid a node computes from `--peers` (`kv-cli/src/node.rs`): FNV-1a over the
/// length-prefixed name, the member count and each length-prefixed id in order, then RF and
/// vnodes.
fn cluster_uuid(name: &str, members: &[&str], rf: u32, vnodes: u32) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let fold = |h: u128, bytes: &[u8]| {
        bytes
            .iter()
            .fold(h, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
    };
    let field = |h: u128, b: &[u8]| fold(fold(h, &(b.len() as u32).to_le_bytes()), b);
    let mut h = field(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d, name.as_bytes());
    h = fold(h, &(members.len() as u32).to_le_bytes());
    for m in members {
        h = field(h, m.as_bytes());
    }
    fold(fold(h, &rf.to_le_bytes()), &vnodes.to_le_bytes())
}

/// The cluster id of the handshake (`kv-cli/src/node.rs`): FNV-1a over the length-prefixed
/// cluster name alone.
fn name_id(name: &str) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let h = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    (name.len() as u32)
        .to_le_bytes()
        .iter()
        .chain(name.as_bytes())
        .fold(h, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

#[test]
fn a_restarted_node_refuses_requests_below_the_fence_it_replayed() {
    let mut nodes = Nodes::start();
    let all: Vec<&Served> = (0..3).map(|i| nodes.node(i)).collect();
    agreed(&all);
    // Two epochs above the static ring's, through a node that is not n1.
    let bumped: String = redis::cmd("KVSTORE")
        .arg("META")
        .arg("BUMP")
        .query(&mut nodes.node(1).client())
        .unwrap();
    assert_eq!(bumped, "OK epoch 5");
    let all: Vec<&Served> = (0..3).map(|i| nodes.node(i)).collect();
    let view = agreed(&all);
    assert_eq!(view["epoch"], "5");
    assert_eq!(view["members"], "n1=normal,n2=normal,n3=normal");
    let uuid = cluster_uuid("kvstore", &["n1", "n2", "n3"], 3, 100);
    assert_eq!(view["cluster_uuid"], format!("{uuid:032x}"));
    // Each node's follower installs the applied epoch (a moment after it is applied).
    for i in 0..3 {
        poll(
            Duration::from_secs(10),
            "the ring of epoch 5 installed",
            || {
                let info: String = redis::cmd("INFO")
                    .arg("cluster")
                    .query(&mut nodes.node(i).client())
                    .unwrap();
                info.contains("kvstore_ring_epoch:5\r\n").then_some(())
            },
        );
    }

    // n1 dies; the other two lose quorum for nothing (n1 is one of three voters).
    nodes.running[0].take().unwrap().crash();
    // A restart with the members in another order is refused, both uuids printed.
    let mut reordered = nodes.args(0);
    let peers_at = reordered.iter().position(|a| a == "--peers").unwrap() + 1;
    let mut list: Vec<&str> = reordered[peers_at].split(',').collect();
    list.swap(1, 2);
    reordered[peers_at] = list.join(",");
    let reordered: Vec<&str> = reordered.iter().map(String::as_str).collect();
    match Served::try_start(&nodes.dirs[0], &reordered) {
        Ok(_) => panic!("a restart with the members in another order was served"),
        Err(refused) => {
            assert!(!refused.status.success(), "{refused:?}");
            assert!(
                refused.stderr.contains("same order") && refused.stderr.contains("--peers"),
                "{}",
                refused.stderr
            );
        }
    }

    // Restarted as it was: its fence is the replayed epoch at once.
    nodes.restart(0);
    let peer = format!("127.0.0.1:{}", nodes.ports[0] + 10_000)
        .parse()
        .unwrap();
    // The handshake's id is the name's alone; the uuid (above) is the metadata's.
    let id = name_id("kvstore");
    let transport: kv_remote::ReplicaPeers =
        kv_net::Peers::start(kv_net::Identity::new(id, "n2"), kv_net::PeersOptions::new()).unwrap();
    transport.add_peer("n1", peer).unwrap();
    let remote = kv_remote::RemoteReplica::new(
        "n1".parse().unwrap(),
        Arc::new(transport),
        Duration::from_secs(2),
    );
    let stale = poll(
        Duration::from_secs(20),
        "an answer from n1's replica",
        || {
            match remote.read(3, b"k0") {
                Err(kv_cluster::Error::StaleEpoch { epoch, current, .. }) => Some((epoch, current)),
                Err(kv_cluster::Error::Remote { .. }) => None, // not connected yet
                other => panic!("a read at epoch 3 below the fence: {other:?}"),
            }
        },
    );
    assert_eq!(stale, (3, 5));
    assert!(matches!(
        remote.read(4, b"k0"),
        Err(kv_cluster::Error::StaleEpoch { current: 5, .. })
    ));
    remote.read(5, b"k0").unwrap();
    // Caught up, it serves clients and still refuses the old epochs.
    let all: Vec<&Served> = (0..3).map(|i| nodes.node(i)).collect();
    assert_eq!(agreed(&all)["epoch"], "5");
    assert!(matches!(
        remote.read(3, b"k0"),
        Err(kv_cluster::Error::StaleEpoch { current: 5, .. })
    ));
    nodes.node(0).client().set::<_, _, ()>("after", 1).unwrap();
}
