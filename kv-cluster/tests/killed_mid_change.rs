//! A process killed with SIGKILL while a node joins, once while streaming and once while the
//! old replicas drop what they lost (after the commit): on reopen the change completes, and
//! every acknowledged write (including those made while the change was pending) is on exactly
//! the replicas the ring names.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::process::{Command, Stdio};

use std::sync::Arc;

use common::faulty::FaultyBackend;
use kv_cluster::{Cluster, KvNodeBackend, NodeOptions};

/// Set in the child's environment to the cluster directory.
const CHILD_DIR: &str = "KV_CLUSTER_KILLED_CHILD_DIR";
/// Set in the child's environment to where it should stop: `stream` or `cleanup`.
const CHILD_AT: &str = "KV_CLUSTER_KILLED_CHILD_AT";
const KEYS: u64 = 5_000;
/// What the child prints once the change is under way.
const READY: &str = "kv-cluster-child: change pending";

fn during(i: u64) -> Option<Vec<u8>> {
    i.is_multiple_of(2)
        .then(|| format!("during{i}").into_bytes())
}

/// The child: loads keys, starts adding node4, writes while the change is pending, says
/// "ready" and waits to be killed. Does nothing in a normal test run.
#[test]
fn killed_child_body() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let at_cleanup = std::env::var(CHILD_AT).unwrap() == "cleanup";
    let backend = Arc::new(FaultyBackend::over(Arc::new(KvNodeBackend::new(
        NodeOptions::new().wal(kv_wal::WalOptions::new().segment_size(4 << 20)),
    ))));
    let opts = common::disk_opts().backend(backend.clone());
    let cluster = Cluster::open(&dir, opts.transfer_batch(100)).unwrap();
    for i in 0..KEYS {
        cluster
            .put(&common::key(i), format!("v{i}").as_bytes())
            .unwrap();
    }
    if at_cleanup {
        // The first node to have dropped its lost ranges says so and stops there.
        *backend.faults.after_drop.lock() = Some(Arc::new(|| {
            println!("\n{READY}");
            loop {
                std::thread::park();
            }
        }));
    }
    let mut batches = 0;
    let _ = cluster.add_node_with_progress("node4", |_| {
        batches += 1;
        if batches == 4 {
            for i in (0..KEYS).step_by(7) {
                match during(i) {
                    Some(v) => cluster.put(&common::key(i), &v).unwrap(),
                    None => cluster.delete(&common::key(i)).unwrap(),
                };
            }
            if !at_cleanup {
                // The harness may have printed the test name on the same line.
                println!("\n{READY}");
                loop {
                    std::thread::park();
                }
            }
        }
        ControlFlow::Continue(())
    });
    unreachable!("the parent kills this process mid-change");
}

#[test]
fn a_join_killed_mid_stream_completes_on_reopen() {
    killed_at("stream", "streaming");
}

#[test]
fn a_join_killed_mid_cleanup_completes_on_reopen() {
    killed_at("cleanup", "cleanup");
}

/// Runs the child until it stops `at` a phase, kills it, and checks the reopened cluster.
fn killed_at(at: &str, phase: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_child_body",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_AT, at)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map(|l| l.unwrap())
        .any(|l| l.trim() == READY);
    assert!(ready, "the child ended before the change was under way");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The change was recorded as pending when the process died.
    let meta = std::fs::read_to_string(dir.path().join("cluster.json")).unwrap();
    assert!(meta.contains(&format!("\"phase\": \"{phase}\"")), "{meta}");

    let cluster = Cluster::open(dir.path(), common::disk_opts()).unwrap();
    assert_eq!(cluster.pending_change(), None);
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.id.to_string()).collect();
    assert_eq!(nodes, ["node1", "node2", "node3", "node4"]);

    let model = common::Model::default();
    for i in 0..KEYS {
        // Versions are the child's: any will do, as long as the replicas agree.
        let k = common::key(i);
        if i % 7 == 0 {
            model.expect(&k, during(i).as_deref());
        } else {
            model.expect(&k, Some(format!("v{i}").as_bytes()));
        }
    }
    common::check(&cluster, &model);
}
