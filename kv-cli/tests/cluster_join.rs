//! A fourth process joins a running three-process cluster with `--join` (membership.md §2.5,
//! issue 23 step 8, its first part): every process is killed when its guard drops, also when
//! a test fails.
//!
//! - the joiner, pointed at a member that is not the metadata leader, is registered and
//!   becomes a raft learner (the request is forwarded to the leader); every node shows it in
//!   `KVSTORE META`, with the same cluster uuid;
//! - it catches up on the metadata, then coordinates: it reads what was written before it
//!   joined and its writes are read through the others (it holds no range yet: no change
//!   has given it any: `KVSTORE ADDNODE` does, see `cluster_addnode.rs`);
//! - restarted, it keeps its raft id, slot and uuid from `<data-dir>/meta/joined`, ignores
//!   `--join` (pointed at an address where nothing listens) and serves again;
//! - a joiner of another cluster name never gets in (the handshake's cluster id is the
//!   name's), and clients of it get `TRYAGAIN`, while the cluster is untouched.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ONE_CLUSTER, Served, free_port_pair, poll};
use redis::Commands as _;

/// `KVSTORE META` through node `n`, as `field -> value`.
fn meta(n: &Served) -> BTreeMap<String, String> {
    let mut c = n.client();
    let text: String = redis::cmd("KVSTORE").arg("META").query(&mut c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn joiner_args(port: u16, seed: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--node-id",
        "n4",
        "--join",
        seed,
        "--replica-timeout",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn a_fourth_process_joins_catches_up_coordinates_and_restarts_without_asking_again() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let (dirs, ports) = common::layout(root.path());
    let nodes: Vec<Served> = (0..3)
        .map(|i| common::start_member(&dirs, &ports, i, &[]))
        .collect();
    // Bootstrapped and caught up everywhere: a write through n1 succeeds.
    let mut c1 = poll(Duration::from_secs(30), "n1 serves clients", || {
        let mut c = nodes[0].client();
        c.set::<_, _, ()>("probe", 1).ok().map(|()| c)
    });
    for k in 0..200 {
        c1.set::<_, _, ()>(format!("before-{k}"), k).unwrap();
    }
    let leader = meta(&nodes[0])["leader"].clone();
    // The seed is a member that is not the leader: the Join is forwarded.
    let seed_index = (0..3).find(|i| format!("n{}", i + 1) != leader).unwrap();
    let seed = format!("n{}@127.0.0.1:{}", seed_index + 1, ports[seed_index]);
    let port4 = free_port_pair();
    let args = joiner_args(port4, &seed, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let joiner = Served::start(&dirs[3], &args);
    let said = joiner.stderr_so_far();
    assert!(said.contains("n4 joined the cluster"), "{said}");

    // Every node sees n4 registered and a learner, under one uuid.
    let uuid = meta(&nodes[0])["cluster_uuid"].clone();
    for n in nodes.iter().chain(std::iter::once(&joiner)) {
        let view = poll(Duration::from_secs(20), "n4 registered everywhere", || {
            let view = meta(n);
            (view["members"].contains("n4=registered") && view["learners"] == "n4").then_some(view)
        });
        assert_eq!(view["cluster_uuid"], uuid);
        assert_eq!(view["voters"], "n1,n2,n3");
    }
    assert_eq!(meta(&joiner)["self"], "n4");
    assert!(
        dirs[3].join("meta").join("joined").is_file(),
        "the registration is kept"
    );

    // It coordinates: reads what was there before it, writes read through the others.
    let mut c4 = poll(Duration::from_secs(30), "n4 serves clients", || {
        let mut c = joiner.client();
        c.get::<_, Option<u64>>("before-0").ok().map(|_| c)
    });
    for k in 0..200 {
        assert_eq!(
            c4.get::<_, Option<u64>>(format!("before-{k}")).unwrap(),
            Some(k),
            "before-{k} through n4"
        );
    }
    for k in 0..50 {
        c4.set::<_, _, ()>(format!("through-n4-{k}"), k).unwrap();
    }
    let mut c2 = nodes[1].client();
    for k in 0..50 {
        assert_eq!(
            c2.get::<_, Option<u64>>(format!("through-n4-{k}")).unwrap(),
            Some(k)
        );
    }

    // Restarted with --join at an address where nothing listens: it asks nothing, it is a
    // member, and it serves again.
    joiner.crash();
    let nowhere = format!("n1@127.0.0.1:{}", free_port_pair());
    let args = joiner_args(port4, &nowhere, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let joiner = Served::start(&dirs[3], &args);
    let said = joiner.stderr_so_far();
    assert!(said.contains("--join ignored"), "{said}");
    let mut c4 = poll(Duration::from_secs(30), "n4 serves clients again", || {
        let mut c = joiner.client();
        c.get::<_, Option<u64>>("through-n4-0").ok().map(|v| (c, v))
    });
    assert_eq!(c4.1, Some(0));
    assert_eq!(c4.0.get::<_, Option<u64>>("before-199").unwrap(), Some(199));
    assert_eq!(
        meta(&nodes[0])["learners"],
        "n4",
        "one registration, not two"
    );
    drop(joiner);

    // A joiner of another cluster name is refused at every handshake: never registered.
    let port5 = free_port_pair();
    let mut args = joiner_args(port5, &seed, &["--cluster-name", "other"]);
    args[3] = "n5".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stranger = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .arg("serve")
        .arg("--data-dir")
        .arg(root.path().join("n5"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stranger = Kill(stranger);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !meta(&nodes[0])["members"].contains("n5"),
        "another cluster's node was registered"
    );
}
