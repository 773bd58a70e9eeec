//! `KVSTORE ADDNODE` between processes (issue 23 step 8, part 2): a fourth process joins a
//! three-process cluster holding [`KEYS`] keys with `--join`, and `KVSTORE ADDNODE n4`
//! through a member that is not the metadata leader runs the change to its end (pending, B1,
//! streams, mid, B2, final) while a client thread writes and reads through the first three
//! nodes. Every process is killed when its guard drops, also when the test fails.
//!
//! - an `ADDNODE` of a node that never joined is refused, and so is any `ADDNODE` while the
//!   change runs;
//! - the change finishes (`KVSTORE CHANGE` says `change:none`), n4 is `normal` everywhere;
//! - no client operation failed during the change, and every acknowledged write (the loaded
//!   keys and the ones written during the change) is read back through every node;
//! - the keys copied to n4 are within 10% of its share: at RF 3 with 4 nodes, 3/4 of them.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, fields, poll, start_joiner};
use redis::Commands as _;

/// Keys loaded before the change (debug build: the test's wall time stays under a minute).
const KEYS: usize = 20_000;

/// A client thread's tally: writes acknowledged (key index, value), and every failed
/// operation as text.
#[derive(Default)]
struct Tally {
    acked: Vec<(u64, u64)>,
    reads: u64,
    failures: Vec<String>,
}

#[test]
fn addnode_through_a_follower_moves_three_quarters_of_the_keys_under_load() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let (dirs, ports) = common::layout(root.path());
    let nodes: Vec<Served> = (0..3)
        .map(|i| common::start_member(&dirs, &ports, i, &[]))
        .collect();
    let mut c1 = poll(Duration::from_secs(30), "n1 serves clients", || {
        let mut c = nodes[0].client();
        c.set::<_, _, ()>("probe", 1).ok().map(|()| c)
    });
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.set(format!("load-{k}"), k).ignore();
        }
        pipe.query::<()>(&mut c1).unwrap();
    }
    assert_eq!(fields(&nodes[0], "CHANGE")["change"], "none");

    let joiner = start_joiner(&dirs[3], &ports);
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

    // Client load through n1..n3 from before the change to after it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients: Vec<redis::Connection> = nodes.iter().map(Served::client).collect();
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut tally = Tally::default();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = &mut clients[usize::try_from(i).unwrap() % 3];
                match c.set::<_, _, ()>(format!("live-{i}"), i * 7) {
                    Ok(()) => tally.acked.push((i, i * 7)),
                    Err(e) => tally.failures.push(format!("SET live-{i}: {e}")),
                }
                let k = (i * 7919) % KEYS as u64;
                match c.get::<_, Option<u64>>(format!("load-{k}")) {
                    Ok(Some(v)) if v == k => tally.reads += 1,
                    other => tally.failures.push(format!("GET load-{k}: {other:?}")),
                }
                i += 1;
            }
            tally
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let said: String = redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n4")
        .query(&mut c)
        .unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    let e = redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n4")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("in progress"), "{e}");
    let mut last = String::new();
    let mut copied = 0u64;
    let mut info_during = String::new();
    poll(Duration::from_secs(180), "the change finishes", || {
        let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
        if info.contains("kvstore_change_in_progress:add n4") {
            info_during = info;
        }
        let text: String = redis::cmd("KVSTORE").arg("CHANGE").query(&mut c).unwrap();
        if let Some(k) = text.lines().find_map(|l| l.strip_prefix("keys_copied:")) {
            copied = k.parse().unwrap();
        }
        let step = text.lines().find(|l| l.starts_with("step:")).unwrap_or("");
        if step != last {
            eprintln!(
                "{:?}: {}",
                started.elapsed(),
                text.lines().take(9).collect::<Vec<_>>().join(" | ")
            );
            last = step.to_owned();
        }
        text.starts_with("change:none").then_some(())
    });
    let took = started.elapsed();
    // INFO cluster showed the change while it ran (once: its id, step, tasks) and none after.
    assert!(
        info_during.contains("kvstore_change_step:") && info_during.contains("kvstore_change_id:"),
        "{info_during}"
    );
    assert_eq!(
        info_during.matches("kvstore_change_in_progress:").count(),
        1
    );
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
    assert!(info.contains("kvstore_change_in_progress:none"), "{info}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tally = load.join().unwrap();
    eprintln!(
        "change finished in {took:?}: {copied} keys copied to n4 of {KEYS} loaded; {} writes \
         acknowledged and {} reads during the load",
        tally.acked.len(),
        tally.reads
    );
    assert!(
        tally.failures.is_empty(),
        "{:?}",
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert!(tally.acked.len() > 50, "the load ran through the change");

    let all: Vec<&Served> = nodes.iter().chain(std::iter::once(&joiner)).collect();
    for n in &all {
        assert!(fields(n, "META")["members"].contains("n4=normal"));
        let mut c = n.client();
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.get(format!("load-{k}"));
            }
            let got: Vec<Option<usize>> = pipe.query(&mut c).unwrap();
            for (k, v) in chunk.iter().zip(got) {
                assert_eq!(v, Some(*k), "load-{k}");
            }
        }
        for chunk in tally.acked.chunks(1000) {
            let mut pipe = redis::pipe();
            for (i, _) in chunk {
                pipe.get(format!("live-{i}"));
            }
            let got: Vec<Option<u64>> = pipe.query(&mut c).unwrap();
            for ((i, v), got) in chunk.iter().zip(got) {
                assert_eq!(got, Some(*v), "live-{i}");
            }
        }
    }
    // n4 replicates 3/4 of the keys; the streams copy the loaded ones and whatever the load
    // wrote before its writes reached both rings.
    let expected = KEYS as f64 * 3.0 / 4.0;
    let moved = copied as f64;
    assert!(
        (moved - expected).abs() <= expected * 0.10 + tally.acked.len() as f64,
        "{copied} keys copied, expected about {expected}"
    );
}

/// The metadata leader, which is also the source of a task, is SIGKILLed while the tasks
/// stream: a new leader's driver takes the change over from the committed state, and once
/// the killed node is restarted (its task waits for it: no `Survivors` sources yet, and the
/// barriers wait for every node) the change finishes with every loaded key readable through
/// every node.
#[test]
fn the_change_finishes_after_the_leader_is_killed_mid_stream_and_restarted() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let (dirs, ports) = common::layout(root.path());
    let start = |i: usize| common::start_member(&dirs, &ports, i, &[]);
    let mut nodes: Vec<Option<Served>> = (0..3).map(|i| Some(start(i))).collect();
    let node = |nodes: &[Option<Served>], i: usize| -> redis::Connection {
        nodes[i].as_ref().unwrap().client()
    };
    let mut c1 = poll(Duration::from_secs(30), "n1 serves clients", || {
        let mut c = node(&nodes, 0);
        c.set::<_, _, ()>("probe", 1).ok().map(|()| c)
    });
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.set(format!("load-{k}"), k).ignore();
        }
        pipe.query::<()>(&mut c1).unwrap();
    }
    let joiner = start_joiner(&dirs[3], &ports);
    poll(Duration::from_secs(20), "n4 registered", || {
        fields(nodes[0].as_ref().unwrap(), "META")["members"]
            .contains("n4=registered")
            .then_some(())
    });
    let leader = fields(nodes[0].as_ref().unwrap(), "META")["leader"].clone();
    let li: usize = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    let other = (li + 1) % 3;
    let said: String = redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n4")
        .query(&mut node(&nodes, other))
        .unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    poll(
        Duration::from_secs(60),
        "streaming with keys copied",
        || {
            let view = fields(nodes[other].as_ref().unwrap(), "CHANGE");
            (view.get("step").is_some_and(|s| s == "streaming") && view["keys_copied"] != "0")
                .then_some(())
        },
    );
    nodes[li].take().unwrap().crash();
    let started = Instant::now();
    // A new leader among the two left; the change is still there, not finished: the killed
    // node's task waits for it.
    poll(Duration::from_secs(30), "a new leader", || {
        let view = fields(nodes[other].as_ref().unwrap(), "META");
        (!view["leader"].is_empty() && view["leader"] != leader).then_some(())
    });
    assert_ne!(
        fields(nodes[other].as_ref().unwrap(), "CHANGE")["change"],
        "none"
    );
    nodes[li] = Some(start(li));
    poll(
        Duration::from_secs(180),
        "the change finishes after the restart",
        || (fields(nodes[other].as_ref().unwrap(), "CHANGE")["change"] == "none").then_some(()),
    );
    eprintln!(
        "the change finished {:?} after the leader was killed",
        started.elapsed()
    );
    for i in 0..4 {
        let mut c = if i < 3 {
            poll(Duration::from_secs(30), "serves after the change", || {
                let mut c = node(&nodes, i);
                c.get::<_, Option<u64>>("load-0").ok().map(|_| c)
            })
        } else {
            joiner.client()
        };
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.get(format!("load-{k}"));
            }
            let got: Vec<Option<usize>> = pipe.query(&mut c).unwrap();
            for (k, v) in chunk.iter().zip(got) {
                assert_eq!(v, Some(*k), "load-{k} through n{}", i + 1);
            }
        }
    }
}
