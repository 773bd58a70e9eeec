//! `KVSTORE ADDNODE` between processes (issue 23 step 8, part 2, first increment): a fourth
//! process joins a three-process cluster with `--join`, and `KVSTORE ADDNODE n4` through a
//! member that is not the metadata leader starts the change that adds it. Every process is
//! killed when its guard drops, also when the test fails.
//!
//! - the change is committed once and every node's `KVSTORE CHANGE` shows it: an add of n4,
//!   `pending` at the next epoch, every stream task copying to n4, none finished;
//! - n4 is `joining` in `KVSTORE META` everywhere;
//! - an `ADDNODE` of a node that never joined is refused, and so is any `ADDNODE` while the
//!   change runs;
//! - writes and reads through every node keep working while the change is pending (writes go
//!   to both rings), and what was written before is still readable.
//!
//! The driver past `Pending` (barriers, streams, `Mid`, `Final`) is not built: this test
//! stops at `Pending`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, free_port_pair};
use redis::Commands as _;

/// `KVSTORE sub` through node `n`, as `field -> value` (repeated fields: the last one).
fn fields(n: &Served, sub: &str) -> BTreeMap<String, String> {
    let mut c = n.client();
    let text: String = redis::cmd("KVSTORE").arg(sub).query(&mut c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Polls `what` every 50 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn addnode_through_a_follower_starts_the_change_every_node_shows() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let dirs: Vec<PathBuf> = (1..=4).map(|i| root.path().join(format!("n{i}"))).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port_pair()).collect();
    let nodes: Vec<Served> = (0..3)
        .map(|i| {
            let args = common::member_args(i, &ports, &[]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Served::start(&dirs[i], &args)
        })
        .collect();
    let mut c1 = poll(Duration::from_secs(30), "n1 serves clients", || {
        let mut c = nodes[0].client();
        c.set::<_, _, ()>("probe", 1).ok().map(|()| c)
    });
    for k in 0..300 {
        c1.set::<_, _, ()>(format!("before-{k}"), k).unwrap();
    }
    let epoch_before: u64 = fields(&nodes[0], "META")["epoch"].parse().unwrap();
    assert_eq!(fields(&nodes[0], "CHANGE")["change"], "none");

    let port4 = free_port_pair();
    let seed = format!("n1@127.0.0.1:{}", ports[0]);
    let args = [
        "--port",
        &port4.to_string(),
        "--node-id",
        "n4",
        "--join",
        &seed,
        "--replica-timeout",
        "500",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let joiner = Served::start(&dirs[3], &args);
    poll(Duration::from_secs(20), "n4 registered", || {
        fields(&nodes[0], "META")["members"]
            .contains("n4=registered")
            .then_some(())
    });

    // Through a member that is not the leader: the proposal is forwarded.
    let leader = fields(&nodes[0], "META")["leader"].clone();
    let via = (0..3).find(|i| format!("n{}", i + 1) != leader).unwrap();
    let mut c = nodes[via].client();
    let e = redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n9")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("n9 is not a member"), "{e}");
    assert_eq!(fields(&nodes[0], "CHANGE")["change"], "none");
    let said: String = redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n4")
        .query(&mut c)
        .unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    let change = said.split_whitespace().nth(2).unwrap().to_owned();

    let all: Vec<&Served> = nodes.iter().chain(std::iter::once(&joiner)).collect();
    for n in &all {
        let view = poll(Duration::from_secs(20), "the change everywhere", || {
            let view = fields(n, "CHANGE");
            (view["change"] == change).then_some(view)
        });
        assert_eq!(view["kind"], "add");
        assert_eq!(view["node"], "n4");
        assert_eq!(view["step"], "pending");
        assert_eq!(view["epoch"], (epoch_before + 1).to_string());
        let (done, total) = view["tasks_done"].split_once('/').unwrap();
        assert_eq!(done, "0");
        assert!(total.parse::<u32>().unwrap() > 0, "an add moves ranges");
        assert!(fields(n, "META")["members"].contains("n4=joining"));
    }

    // One change at a time.
    for id in ["n4", "n9"] {
        let e = redis::cmd("KVSTORE")
            .arg("ADDNODE")
            .arg(id)
            .query::<String>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("in progress"), "{id}: {e}");
    }
    assert_eq!(fields(&nodes[0], "CHANGE")["change"], change);

    // Pending: writes go to both rings, reads to the old one; every node serves.
    for (i, n) in all.iter().enumerate() {
        let mut c = poll(Duration::from_secs(30), "serves while pending", || {
            let mut c = n.client();
            c.get::<_, Option<u64>>("before-0").ok().map(|_| c)
        });
        for k in 0..50 {
            c.set::<_, _, ()>(format!("pending-{i}-{k}"), k).unwrap();
        }
    }
    for n in &all {
        let mut c = n.client();
        for i in 0..all.len() {
            for k in 0..50 {
                assert_eq!(
                    c.get::<_, Option<u64>>(format!("pending-{i}-{k}")).unwrap(),
                    Some(k),
                    "pending-{i}-{k}"
                );
            }
        }
        for k in 0..300 {
            assert_eq!(
                c.get::<_, Option<u64>>(format!("before-{k}")).unwrap(),
                Some(k)
            );
        }
    }
}
