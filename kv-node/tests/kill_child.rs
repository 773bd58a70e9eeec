//! A child process writes from two threads, with background compaction and hint files
//! running, and is killed with SIGKILL; reopening finds every acknowledged write, at its
//! latest version, and nothing that was not written.
//!
//! The child is this test binary, re-executed with `KV_NODE_KILL_CHILD` set to run only
//! [`child_writer`]; it prints `ack <key> <version>` after each apply returns.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use kv_node::{Clock, Node, NodeOptions, SystemClock, Version};
use kv_wal::{SyncPolicy, WalOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const ENV_DIR: &str = "KV_NODE_KILL_CHILD";
const ENV_ROUND: &str = "KV_NODE_KILL_ROUND";
const ENV_BASE: &str = "KV_NODE_KILL_BASE";
const KEYS: u64 = 300;

fn opts(round: u64) -> NodeOptions {
    let sync = match round % 3 {
        0 => SyncPolicy::Never,
        1 => SyncPolicy::Periodic(Duration::from_millis(5)),
        _ => SyncPolicy::Always,
    };
    NodeOptions::new()
        .wal(WalOptions::new().segment_size(64 << 10).sync(sync))
        .maintenance_interval(Duration::from_millis(2))
        .compaction_threshold(0.3)
        .cache_entries(50)
}

/// Every seventh version is a delete.
fn value(key: u64, version: u64) -> Option<Vec<u8>> {
    (!version.is_multiple_of(7))
        .then(|| format!("{key}@{version}:{}", "p".repeat((key % 5) as usize * 30)).into_bytes())
}

#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let round: u64 = std::env::var(ENV_ROUND).unwrap().parse().unwrap();
    let base: u64 = std::env::var(ENV_BASE).unwrap().parse().unwrap();
    let node = Node::open(&dir, opts(round)).unwrap();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let node = &node;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(round * 10 + t);
                // Bounded: the parent kills us long before this ends.
                for n in 0..1_000_000u64 {
                    let key = rng.random_range(0..KEYS);
                    // Distinct versions per thread, increasing per round.
                    let version = base + (round << 32) + n * 2 + t;
                    let v = value(key, version);
                    node.apply(
                        format!("key{key}").as_bytes(),
                        v.as_deref(),
                        Version::new(version),
                    )
                    .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {key} {version}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    if std::env::var(ENV_DIR).is_ok() {
        return; // We are the child.
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    // Versions from the current time: tombstones stay within their grace period.
    let base = Version::from_parts(SystemClock.now_millis(), 0).as_u64();
    // key -> highest acknowledged version, over all rounds.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    for round in 0..3u64 {
        let kill_after = rng.random_range(3_000..12_000);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, dir.path())
            .env(ENV_ROUND, round.to_string())
            .env(ENV_BASE, base.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut n = 0;
        let mut killed = false;
        // Bounded: the child writes at most 2,000,000 records.
        while let Some(Ok(line)) = lines.next() {
            let mut it = line.split_whitespace();
            if it.next() != Some("ack") {
                continue;
            }
            let key: u64 = it.next().unwrap().parse().unwrap();
            let version: u64 = it.next().unwrap().parse().unwrap();
            let e = acked.entry(key).or_insert(0);
            *e = (*e).max(version);
            n += 1;
            if n >= kill_after && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        child.wait().unwrap();
        assert!(
            killed,
            "round {round}: the child ended before it was killed"
        );

        let node = Node::open(dir.path(), opts(round).background(false)).unwrap();
        for (&key, &min) in &acked {
            let got = node.get_versioned(format!("key{key}").as_bytes()).unwrap();
            let (v, ver) =
                got.unwrap_or_else(|| panic!("round {round}: key{key} lost (acked {min})"));
            let ver = ver.as_u64();
            assert!(
                ver >= min,
                "round {round}: key{key} at {ver}, but {min} was acknowledged"
            );
            // Whatever version is there was written with exactly this value.
            assert_eq!(
                v.map(|b| b.to_vec()),
                value(key, ver),
                "round {round}: key{key}@{ver}"
            );
        }
        let s = node.stats();
        assert!(s.live_keys + s.tombstones <= KEYS);
        // Leave the log as a killed process left it, plus what recovery did.
        drop(node);
    }
    // The runs were long enough to roll over many segments (compaction deleted most).
    let node = Node::open(dir.path(), opts(0).background(false)).unwrap();
    let r = node.recovery_report();
    let end = r.wal.as_ref().unwrap().end.segment();
    assert!(end > 5 && node.stats().segments < end as usize, "{r:?}");
}
