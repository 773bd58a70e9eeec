//! Issue 23's test between processes (step 8, part 3): grow a three-process cluster holding
//! [`KEYS`] keys to four with `--join` and `KVSTORE ADDNODE`, then shrink it back to three
//! with `KVSTORE REMOVENODE` through a node that is not the metadata leader, under a client
//! load that records every acknowledged write. Every process is killed when its guard drops,
//! also when the test fails; at most four run at once.
//!
//! - the add copies 3/4 of the keys to n4 and the removal 3/4 of them out of the leaver, each
//!   within 10% (plus the keys the load wrote meanwhile);
//! - the losers drop the ranges they lost: after the add each old member holds about 3/4 of
//!   the keys, not all of them (`local_keys` of `KVSTORE CHANGE`);
//! - the leaver refuses clients, naming that it left, exits 0 on its own, and is deregistered;
//! - no client operation failed, and every loaded key and acknowledged write is read back
//!   through every remaining node.
//!
//! A second test aborts an add while it streams (`KVSTORE CHANGE ABORT`): the change ends,
//! the joiner is `registered` again and holds none of the moved keys, and every acknowledged
//! write is readable.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, fields, poll, start_joiner};
use redis::Commands as _;

/// Keys loaded before the changes: issue 23's number.
const KEYS: usize = 100_000;

/// A client thread's tally: writes acknowledged (key index, value), and every failed
/// operation as text.
#[derive(Default)]
struct Tally {
    acked: Vec<(u64, u64)>,
    reads: u64,
    failures: Vec<String>,
}

/// Loads `load-0..KEYS` through `n` with pipelined `MSET`s of 200 keys, five at a time (a
/// debug build answers a replica batch of that size well within the tests' 500 ms replica
/// timeout).
fn load(n: &Served) {
    let mut c = poll(Duration::from_secs(30), "serves clients", || {
        let mut c = n.client();
        c.set::<_, _, ()>("probe", 1).ok().map(|()| c)
    });
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for chunk in batch.chunks(200) {
            let pairs: Vec<(String, usize)> =
                chunk.iter().map(|k| (format!("load-{k}"), *k)).collect();
            pipe.mset(&pairs).ignore();
        }
        pipe.query::<()>(&mut c).unwrap();
    }
}

/// Starts the client load through `via` (named `names`): a SET of a new key and a GET of a
/// loaded one per round, each outcome recorded, a failure with when it happened (since `t0`),
/// the node it went through and the error's text, until `stop` is set.
fn start_load(
    via: Vec<redis::Connection>,
    names: Vec<String>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Tally> {
    let mut clients = via;
    std::thread::spawn(move || {
        let mut tally = Tally::default();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let n = clients.len();
            let which = usize::try_from(i).unwrap() % n;
            let c = &mut clients[which];
            let sent = t0.elapsed();
            let failed = |what: String| {
                format!(
                    "{what} via {} (sent at {sent:.3?}, failed at {:.3?})",
                    names[which],
                    t0.elapsed()
                )
            };
            match c.set::<_, _, ()>(format!("live-{i}"), i * 7) {
                Ok(()) => {
                    tally.acked.push((i, i * 7));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tally.failures.push(failed(format!("SET live-{i}: {e}"))),
            }
            let k = (i * 7919) % KEYS as u64;
            match c.get::<_, Option<u64>>(format!("load-{k}")) {
                Ok(Some(v)) if v == k => tally.reads += 1,
                other => tally
                    .failures
                    .push(failed(format!("GET load-{k}: {other:?}"))),
            }
            i += 1;
        }
        tally
    })
}

/// The epoch a change's `OK change <id> epoch <e>` answer names.
fn started_epoch(said: &str) -> u64 {
    said.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Polls `KVSTORE CHANGE` through `n` until no change runs at epoch `done_at` or later (the
/// node may not have applied the change's start yet); returns the keys the change copied
/// (its last view) and how long it took. Logs each step once.
fn wait_done(n: &Served, done_at: u64, limit: Duration) -> (u64, Duration) {
    let started = Instant::now();
    let mut c = n.client();
    let (mut last, mut copied) = (String::new(), 0u64);
    poll(limit, "the change finishes", || {
        let text: String = redis::cmd("KVSTORE").arg("CHANGE").query(&mut c).unwrap();
        if let Some(k) = text.lines().find_map(|l| l.strip_prefix("keys_copied:")) {
            copied = k.parse().unwrap();
        }
        let step = text.lines().find(|l| l.starts_with("step:")).unwrap_or("");
        let waiting = text
            .lines()
            .find(|l| l.starts_with("waiting_for:"))
            .unwrap_or("");
        let now = format!("{step} {waiting}");
        if now != last {
            eprintln!(
                "{:?}: {}",
                started.elapsed(),
                text.lines().take(9).collect::<Vec<_>>().join(" | ")
            );
            last = now;
        }
        let epoch: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("epoch:"))
            .unwrap()
            .parse()
            .unwrap();
        (text.starts_with("change:none") && epoch >= done_at).then_some(())
    });
    (copied, started.elapsed())
}

/// Reads every loaded key and every acknowledged write through `n`.
fn read_back(n: &Served, name: &str, acked: &[(u64, u64)]) {
    let mut c = n.client();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.get(format!("load-{k}"));
        }
        let got: Vec<Option<usize>> = pipe.query(&mut c).unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(v, Some(*k), "load-{k} through {name}");
        }
    }
    for chunk in acked.chunks(1000) {
        let mut pipe = redis::pipe();
        for (i, _) in chunk {
            pipe.get(format!("live-{i}"));
        }
        let got: Vec<Option<u64>> = pipe.query(&mut c).unwrap();
        for ((i, v), got) in chunk.iter().zip(got) {
            assert_eq!(got, Some(*v), "live-{i} through {name}");
        }
    }
}

/// The keys node `n`'s own replica holds.
fn local_keys(n: &Served) -> f64 {
    fields(n, "CHANGE")["local_keys"].parse::<f64>().unwrap()
}

#[test]
fn grow_to_four_and_shrink_to_three_under_load_with_100k_keys() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let (dirs, ports) = common::layout(root.path());
    let mut nodes: Vec<Option<Served>> = (0..3)
        .map(|i| Some(common::start_member(&dirs, &ports, i, &[])))
        .collect();
    let loaded = Instant::now();
    load(nodes[0].as_ref().unwrap());
    eprintln!("{KEYS} keys loaded in {:?}", loaded.elapsed());

    // The leaver: n2, or n3 if n2 leads (the removal goes through a non-leader, and the
    // load through the two members that stay).
    let leader = fields(nodes[0].as_ref().unwrap(), "META")["leader"].clone();
    let leaver = if leader == "n2" { 2 } else { 1 };
    let stay: Vec<usize> = (0..3).filter(|&i| i != leaver).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = stay
        .iter()
        .map(|&i| nodes[i].as_ref().unwrap().client())
        .collect();
    let names = stay.iter().map(|&i| format!("n{}", i + 1)).collect();
    let acked = Arc::new(AtomicU64::new(0));
    let load_thread = start_load(
        clients,
        names,
        loaded,
        Arc::clone(&stop),
        Arc::clone(&acked),
    );
    // The keys in the cluster now: loaded and acknowledged by the load.
    let keys_now = || (KEYS as u64 + acked.load(Ordering::Relaxed)) as f64;

    // Grow: n4 joins and is added through a member that is not the leader.
    let joiner = start_joiner(&dirs[3], &ports);
    poll(Duration::from_secs(30), "n4 registered", || {
        fields(nodes[0].as_ref().unwrap(), "META")["members"]
            .contains("n4=registered")
            .then_some(())
    });
    let leader = fields(nodes[0].as_ref().unwrap(), "META")["leader"].clone();
    let via = (0..3).find(|i| format!("n{}", i + 1) != leader).unwrap();
    let mut c = nodes[via].as_ref().unwrap().client();
    let said: String = redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n4")
        .query(&mut c)
        .unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    // The streams copy n4's share (3/4 at RF 3 of 4) of what the cluster holds when they
    // start, and of the writes made before then (the later ones go to both rings).
    let before = keys_now();
    // Pending at e, mid at e + 1, final at e + 2.
    let done_at = started_epoch(&said) + 2;
    let (added, took) = wait_done(
        nodes[via].as_ref().unwrap(),
        done_at,
        Duration::from_secs(300),
    );
    let after = keys_now();
    eprintln!("add: {added} keys copied to n4 in {took:?} ({before}..{after} keys in the cluster)");
    let within = |copied: u64, low: f64, high: f64| {
        let c = copied as f64;
        c >= low * 0.75 * 0.9 && c <= high * 0.75 * 1.1
    };
    assert!(
        within(added, before, after),
        "add: {added} keys copied, expected 3/4 of {before}..{after}"
    );
    // The losers dropped what they lost: each of the four holds about 3/4 of the keys.
    let expected = keys_now() * 3.0 / 4.0;
    for (i, n) in nodes
        .iter()
        .flatten()
        .chain(std::iter::once(&joiner))
        .enumerate()
    {
        let held = local_keys(n);
        eprintln!("after the add, node {} holds {held} keys", i + 1);
        assert!(
            (held - expected).abs() <= expected * 0.10,
            "node {} holds {held} keys after the add, expected about {expected} (cleanup)",
            i + 1
        );
    }

    // Shrink: remove the leaver through n4 (a learner: never the leader).
    let name = format!("n{}", leaver + 1);
    let mut c4 = joiner.client();
    let e = redis::cmd("KVSTORE")
        .arg("REMOVENODE")
        .arg("n9")
        .query::<String>(&mut c4)
        .unwrap_err();
    assert!(e.to_string().contains("n9 is not a member"), "{e}");
    let said: String = redis::cmd("KVSTORE")
        .arg("REMOVENODE")
        .arg(&name)
        .query(&mut c4)
        .unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    let removal = said.clone();
    let e = redis::cmd("KVSTORE")
        .arg("REMOVENODE")
        .arg(&name)
        .query::<String>(&mut c4)
        .unwrap_err();
    assert!(e.to_string().contains("in progress"), "{e}");
    let before = keys_now();
    let (removed, took) = wait_done(
        &joiner,
        started_epoch(&removal) + 2,
        Duration::from_secs(300),
    );
    let after = keys_now();
    eprintln!("remove: {removed} keys copied out of {name} in {took:?} ({before}..{after} keys)");
    // The leaver held 3/4 of the keys: all of them stream out of it.
    assert!(
        within(removed, before, after),
        "remove: {removed} keys copied, expected 3/4 of {before}..{after}"
    );
    let mut gone = nodes[leaver].take().unwrap();
    let status = gone.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "the leaver exited with {status}");
    let said = gone.stderr();
    assert!(said.contains("left the cluster"), "{said}");
    poll(
        Duration::from_secs(60),
        "the leaver is deregistered",
        || {
            let members = fields(nodes[0].as_ref().unwrap(), "META")["members"].clone();
            (!members.contains(&format!("{name}="))).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let tally = load_thread.join().unwrap();
    eprintln!(
        "{} writes acknowledged and {} reads during both changes",
        tally.acked.len(),
        tally.reads
    );
    assert!(
        tally.failures.is_empty(),
        "{} failed, first: {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert!(tally.acked.len() > 100, "the load ran through the changes");

    let remaining: Vec<(String, &Served)> = stay
        .iter()
        .map(|&i| (format!("n{}", i + 1), nodes[i].as_ref().unwrap()))
        .chain(std::iter::once(("n4".to_owned(), &joiner)))
        .collect();
    let total = (KEYS + tally.acked.len()) as f64;
    for (name, n) in &remaining {
        read_back(n, name, &tally.acked);
        // Three nodes at RF 3: each holds every key again.
        let held = local_keys(n);
        eprintln!("after the removal, {name} holds {held} keys of {total}");
        assert!(
            (held - total).abs() <= total * 0.10,
            "{name} holds {held} keys, expected about {total}"
        );
    }
}

#[test]
fn an_add_aborted_while_streaming_leaves_the_joiner_empty_and_loses_nothing() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let (dirs, ports) = common::layout(root.path());
    let nodes: Vec<Served> = (0..3)
        .map(|i| common::start_member(&dirs, &ports, i, &[]))
        .collect();
    load(&nodes[0]);
    let stop = Arc::new(AtomicBool::new(false));
    // Every time in a failure's message is since `t0`; `events` says what happened when.
    let t0 = Instant::now();
    let mut events: Vec<String> = Vec::new();
    let mut note = |what: &str| {
        let line = format!("{:.3?} {what}", t0.elapsed());
        eprintln!("{line}");
        events.push(line);
    };
    let load_thread = start_load(
        nodes.iter().map(Served::client).collect(),
        (1..=3).map(|i| format!("n{i}")).collect(),
        t0,
        Arc::clone(&stop),
        Arc::default(),
    );
    let joiner = start_joiner(&dirs[3], &ports);
    poll(Duration::from_secs(30), "n4 registered", || {
        fields(&nodes[0], "META")["members"]
            .contains("n4=registered")
            .then_some(())
    });
    note("n4 registered");
    let mut c = nodes[1].client();
    let e = redis::cmd("KVSTORE")
        .arg("CHANGE")
        .arg("ABORT")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("no change in progress"), "{e}");
    let said: String = redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n4")
        .query(&mut c)
        .unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    note(&format!("ADDNODE n4: {said}"));
    // The abort epoch: one past the pending one.
    let done_at = started_epoch(&said) + 1;
    poll(
        Duration::from_secs(60),
        "streaming with keys copied",
        || {
            let view = fields(&nodes[1], "CHANGE");
            (view.get("step").is_some_and(|s| s == "streaming") && view["keys_copied"] != "0")
                .then_some(())
        },
    );
    let said: String = redis::cmd("KVSTORE")
        .arg("CHANGE")
        .arg("ABORT")
        .query(&mut c)
        .unwrap();
    assert!(said.contains("aborting"), "{said}");
    note(&format!("CHANGE ABORT: {said}"));
    let (copied, took) = wait_done(&nodes[1], done_at, Duration::from_secs(120));
    note("the abort finished (n2's view)");
    eprintln!("aborted after {copied} keys copied; the abort took {took:?}");
    assert!(
        (copied as usize) < KEYS * 3 / 4,
        "the abort came before the streams finished ({copied} copied)"
    );
    // Every node applies the end of the abort (n2 said so first).
    for n in &nodes {
        poll(Duration::from_secs(10), "n4 registered again", || {
            fields(n, "META")["members"]
                .contains("n4=registered")
                .then_some(())
        });
    }
    note("every node sees n4 registered");
    // The joiner dropped everything it received (it replicates nothing now).
    assert_eq!(local_keys(&joiner), 0.0, "n4 keeps no moved key");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let tally = load_thread.join().unwrap();
    note(&format!(
        "load stopped: {} writes acknowledged, {} reads",
        tally.acked.len(),
        tally.reads
    ));
    let stderr = |n: &Served| n.stderr_so_far();
    assert!(
        tally.failures.is_empty(),
        "{} failed, first: {:?}, last: {:?}\nevents: {events:#?}\n--- n1:\n{}\n--- n2:\n{}\n\
         --- n3:\n{}\n--- n4:\n{}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)],
        tally.failures.last(),
        stderr(&nodes[0]),
        stderr(&nodes[1]),
        stderr(&nodes[2]),
        stderr(&joiner)
    );
    for (i, n) in nodes.iter().enumerate() {
        read_back(n, &format!("n{}", i + 1), &tally.acked);
    }
}
