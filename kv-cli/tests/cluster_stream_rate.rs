//! The stream rate limit between processes (issue 23, membership.md §3.4): three nodes
//! started with `--stream-rate 100000`, a committed `KVSTORE CHANGE RATE 20` that overrides
//! the flag on every node, an `ADDNODE` whose streams copy at about 20 keys/s per source,
//! and a `CHANGE RATE unlimited` that lets the change finish long before 20 keys/s could.
//! Every process is killed when its guard drops, also when the test fails.
//!
//! The bounds cannot flake on a slow machine in the direction that matters: the limiter
//! cannot send faster than its rate (the upper bound holds however loaded the machine is),
//! and the lower bound is 30% of the limit. The limit is far below what a debug build copies
//! unlimited on a machine loaded to 20 on two cores (about 300 keys/s with these 16,000
//! keys: the per-range work of 100 vnodes dominates), so the limit, not the machine, sets
//! the pace.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, poll, start_joiner};

/// `KVSTORE CHANGE` through node `n`, as `field -> value`.
fn change(n: &Served) -> BTreeMap<String, String> {
    let mut c = n.client();
    let text: String = redis::cmd("KVSTORE").arg("CHANGE").query(&mut c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `KVSTORE sub args...` through `n`: the reply or the error's text.
fn kvstore(n: &Served, args: &[&str]) -> Result<String, String> {
    let mut c = n.client();
    redis::cmd("KVSTORE")
        .arg(args)
        .query::<String>(&mut c)
        .map_err(|e| e.to_string())
}

/// Keys loaded: n4 gets 3/4 of them, about a quarter of all from each of the three sources.
const KEYS: usize = 16_000;
/// The committed rate, per source process.
const RATE: f64 = 20.0;
/// The sources stream at once: the cluster copies at up to three times the rate.
const SOURCES: f64 = 3.0;

#[test]
fn a_committed_rate_overrides_the_flag_paces_the_streams_and_unlimited_lets_them_finish() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let (dirs, ports) = common::layout(root.path());
    let flag = ["--stream-rate".to_owned(), "100000".to_owned()];
    let nodes: Vec<Served> = (0..3)
        .map(|i| common::start_member(&dirs, &ports, i, &flag))
        .collect();
    let mut c1 = poll(Duration::from_secs(30), "n1 serves clients", || {
        let mut c = nodes[0].client();
        redis::cmd("SET")
            .arg("probe")
            .arg(1)
            .query::<()>(&mut c)
            .ok()
            .map(|()| c)
    });
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("SET").arg(format!("load-{k}")).arg(k).ignore();
        }
        pipe.query::<()>(&mut c1).unwrap();
    }
    let joiner = start_joiner(&dirs[3], &ports);
    let all: Vec<&Served> = nodes.iter().chain(std::iter::once(&joiner)).collect();

    // Nothing committed: each node's own flag (n4 has none: unlimited).
    let view = change(&nodes[1]);
    assert_eq!(view["stream_rate"], "100000 keys/s");
    assert_eq!(view["stream_rate_from"], "flag");
    let view = change(&joiner);
    assert_eq!(view["stream_rate"], "unlimited");
    assert_eq!(view["stream_rate_from"], "flag");

    // Bad rates are refused with a reason; nothing is committed.
    let e = kvstore(&nodes[1], &["CHANGE", "RATE", "0"]).unwrap_err();
    assert!(e.contains("positive rate"), "{e}");
    let e = kvstore(&nodes[1], &["CHANGE", "RATE", "fast"]).unwrap_err();
    assert!(e.contains("not a number"), "{e}");
    let e = kvstore(&nodes[1], &["CHANGE", "RATE", "1", "2", "3"]).unwrap_err();
    assert!(e.contains("usage"), "{e}");
    assert_eq!(change(&nodes[0])["stream_rate_from"], "flag");

    // Committed through n2 (whichever leads): visible from every node, the joiner included.
    let said = kvstore(&nodes[1], &["CHANGE", "RATE", "20"]).unwrap();
    assert!(
        said.starts_with("OK stream rate 20 keys/s committed"),
        "{said}"
    );
    for (i, n) in all.iter().enumerate() {
        poll(
            Duration::from_secs(10),
            "the committed rate everywhere",
            || {
                let view = change(n);
                (view["stream_rate"] == "20 keys/s" && view["stream_rate_from"] == "committed")
                    .then_some(())
            },
        );
        assert_eq!(
            kvstore(n, &["CHANGE", "RATE"]).unwrap(),
            "stream_rate:20 keys/s\nstream_rate_from:committed",
            "n{}",
            i + 1
        );
    }

    let said = kvstore(&nodes[2], &["ADDNODE", "n4"]).unwrap();
    assert!(said.starts_with("OK change "), "{said}");
    let started = Instant::now();
    // The copy rate over a window of six seconds from the first progress reported.
    let copied = |n: &Served| -> Option<(u64, String)> {
        let view = change(n);
        let step = view.get("step")?.clone();
        Some((view.get("keys_copied")?.parse().ok()?, step))
    };
    let (k0, t0) = poll(Duration::from_secs(60), "keys copied", || {
        copied(&nodes[0])
            .and_then(|(k, step)| (k > 0 && step == "streaming").then_some(k))
            .map(|k| (k, Instant::now()))
    });
    std::thread::sleep(Duration::from_secs(6));
    let (k1, step) = copied(&nodes[0]).unwrap();
    let window = t0.elapsed().as_secs_f64();
    assert_eq!(step, "streaming", "still limited after {window:.1} s");
    let rate = (k1 - k0) as f64 / window;
    let limit = RATE * SOURCES;
    eprintln!("{k0} -> {k1} keys copied in {window:.2} s: {rate:.0} keys/s (limit {limit})");
    // Above: one chunk (1,000 keys) and the bucket's burst (0.1 s) per source beyond the
    // rate, and the progress's granularity; below: far under what the limit allows.
    assert!(
        rate <= limit * 1.5,
        "{rate:.0} keys/s: the limit is {limit}"
    );
    assert!(
        rate >= limit * 0.3,
        "{rate:.0} keys/s: too slow for {limit}"
    );

    let said = kvstore(&joiner, &["CHANGE", "RATE", "unlimited"]).unwrap();
    assert!(
        said.starts_with("OK stream rate unlimited committed"),
        "{said}"
    );
    poll(Duration::from_secs(120), "the change finishes", || {
        (change(&nodes[0])["change"] == "none").then_some(())
    });
    let took = started.elapsed().as_secs_f64();
    let at_limit = KEYS as f64 * 0.75 / limit;
    eprintln!("the change finished {took:.1} s after ADDNODE; {at_limit:.0} s at the limit");
    assert!(
        took < at_limit * 0.8,
        "{took:.1} s: unlimited did not speed the streams up ({at_limit:.0} s at the limit)"
    );
    for n in &all {
        let view = change(n);
        assert_eq!(view["stream_rate"], "unlimited");
        assert_eq!(view["stream_rate_from"], "committed", "overrides the flag");
    }
    // Every key is there through the joiner.
    let mut c = joiner.client();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("GET").arg(format!("load-{k}"));
        }
        let got: Vec<Option<usize>> = pipe.query(&mut c).unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(v, Some(*k), "load-{k}");
        }
    }
}
