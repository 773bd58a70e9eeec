//! Removing the node that leads the metadata raft (issue 23, membership.md §3.6): the leader
//! drives its own removal. A three-process cluster grows to four (n4 joins and is added),
//! then `KVSTORE REMOVENODE <the leader>` goes through another node under a client load
//! through the members that stay: the change completes, the leaver deregisters itself, leaves
//! the raft and exits 0 naming that it left, the others elect a leader without waiting the
//! grace kept for a silent leaver, no client operation
//! fails, and every loaded key and acknowledged write reads back through every remaining
//! node. At most four processes run; each is killed when its guard drops, also on failure.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, fields, poll, start_joiner};
use redis::Commands as _;

/// Keys loaded before the changes (small: the subject is who drives the removal).
const KEYS: usize = 5_000;

/// `OK change <id> epoch <e>` -> e.
fn started_epoch(said: &str) -> u64 {
    said.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Polls `KVSTORE CHANGE` through `n` until no change runs at epoch `done_at` or later.
fn wait_done(n: &Served, done_at: u64, limit: Duration) {
    poll(limit, "the change finishes", || {
        let mut c = n.client();
        let text: String = redis::cmd("KVSTORE").arg("CHANGE").query(&mut c).ok()?;
        let epoch: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("epoch:"))?
            .parse()
            .ok()?;
        (text.starts_with("change:none") && epoch >= done_at).then_some(())
    });
}

#[test]
fn the_metadata_leader_removed_hands_over_and_leaves() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let (dirs, ports) = common::layout(root.path());
    let mut nodes: Vec<Option<Served>> = (0..3)
        .map(|i| Some(common::start_member(&dirs, &ports, i, &[])))
        .collect();
    let mut c = poll(Duration::from_secs(30), "serves clients", || {
        let mut c = nodes[0].as_ref().unwrap().client();
        c.set::<_, _, ()>("probe", 1).ok().map(|()| c)
    });
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let pairs: Vec<(String, usize)> = batch.iter().map(|k| (format!("k{k}"), *k)).collect();
        c.mset::<_, _, ()>(&pairs).unwrap();
    }

    let joiner = start_joiner(&dirs[3], &ports);
    poll(Duration::from_secs(30), "n4 registered", || {
        fields(nodes[0].as_ref().unwrap(), "META")["members"]
            .contains("n4=registered")
            .then_some(())
    });
    let said: String = redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n4")
        .query(&mut c)
        .unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    wait_done(
        nodes[0].as_ref().unwrap(),
        started_epoch(&said) + 2,
        Duration::from_secs(120),
    );

    // The leader now, removed through n4 under load through the two members that stay.
    let leader = fields(nodes[0].as_ref().unwrap(), "META")["leader"].clone();
    let leaving: usize = leader
        .strip_prefix('n')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=3).contains(n))
        .unwrap_or_else(|| panic!("leader {leader} is not one of n1..n3"))
        - 1;
    let stay: Vec<usize> = (0..3).filter(|&i| i != leaving).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients: Vec<redis::Connection> = stay
        .iter()
        .map(|&i| nodes[i].as_ref().unwrap().client())
        .collect();
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut acked, mut failures) = (Vec::new(), Vec::new());
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = clients.len();
                let c = &mut clients[usize::try_from(i).unwrap() % n];
                match c.set::<_, _, ()>(format!("live-{i}"), i) {
                    Ok(()) => acked.push(i),
                    Err(e) => failures.push(format!("SET live-{i}: {e}")),
                }
                let k = i % KEYS as u64;
                match c.get::<_, Option<u64>>(format!("k{k}")) {
                    Ok(Some(v)) if v == k => {}
                    other => failures.push(format!("GET k{k}: {other:?}")),
                }
                i += 1;
            }
            (acked, failures)
        })
    };
    let started = Instant::now();
    let mut c4 = joiner.client();
    let said: String = redis::cmd("KVSTORE")
        .arg("REMOVENODE")
        .arg(&leader)
        .query(&mut c4)
        .unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    wait_done(&joiner, started_epoch(&said) + 2, Duration::from_secs(120));
    eprintln!("{leader} removed in {:?}", started.elapsed());

    let mut gone = nodes[leaving].take().unwrap();
    let status = gone.wait_exit(Duration::from_secs(60));
    let stderr = gone.stderr();
    assert!(
        status.success(),
        "the leaver exited with {status}: {stderr}"
    );
    assert!(stderr.contains("left the cluster"), "{stderr}");
    let exited = Instant::now();
    eprintln!(
        "{leader} exited {:?} after the removal began",
        started.elapsed()
    );
    assert!(
        stderr.contains("it deregisters itself and leaves the raft"),
        "the leaving leader did not deregister itself: {stderr}"
    );
    let first = nodes[stay[0]].as_ref().unwrap();
    poll(
        Duration::from_secs(60),
        "a new leader deregisters the leaver",
        || {
            let meta = fields(first, "META");
            (meta["leader"] != leader
                && !meta["leader"].is_empty()
                && !meta["members"].contains(&format!("{leader}=")))
            .then_some(())
        },
    );
    eprintln!(
        "{leader} deregistered {:?} after the removal began, {:?} after it exited",
        started.elapsed(),
        exited.elapsed()
    );
    // The leaving leader deregistered itself and left the raft before it exited, so nobody
    // waited the 30 s grace kept for a leaver that went without a word.
    assert!(
        exited.elapsed() < Duration::from_secs(20),
        "deregistered {:?} after the leaver exited: the grace for a silent leaver, not a handover",
        exited.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (acked, failures) = load.join().unwrap();
    eprintln!("{} writes acknowledged during the removal", acked.len());
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(acked.len() > 20, "the load ran through the removal");

    // A write after the removal commits through every remaining node, and every key reads
    // back through each of them.
    let remaining: Vec<&Served> = stay
        .iter()
        .map(|&i| nodes[i].as_ref().unwrap())
        .chain(std::iter::once(&joiner))
        .collect();
    for (j, n) in remaining.iter().enumerate() {
        let mut c = n.client();
        c.set::<_, _, ()>(format!("after-{j}"), j).unwrap();
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|k| format!("k{k}")).collect();
            let got: Vec<Option<usize>> = c.mget(&keys).unwrap();
            for (k, v) in chunk.iter().zip(got) {
                assert_eq!(v, Some(*k), "k{k} through node {j}");
            }
        }
        for chunk in acked.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|i| format!("live-{i}")).collect();
            let got: Vec<Option<u64>> = c.mget(&keys).unwrap();
            for (i, v) in chunk.iter().zip(got) {
                assert_eq!(v, Some(*i), "live-{i} through node {j}");
            }
        }
    }
}
