//! A child process appends in a loop and is killed with `SIGKILL`; reopening recovers every
//! record the child reported as appended, in order, and nothing but a prefix of what it wrote.
//!
//! The child is this test binary itself, re-executed with `KV_WAL_KILL_CHILD` set and told to
//! run only [`child_appender`]; it prints `ack <thread> <n> <lsn>` after each append returns.
//!
//! Two shapes: 2 writers in 64 KiB segments, and 16 writers in 8 KiB segments (a roll-over
//! every few dozen appends, and records reserved but not yet copied when the kill lands: holes
//! in the page cache that recovery must stop at and zero, and that the appends after the
//! reopen must continue past; seen in about one round in ten).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use common::{collect, payload};
use kv_wal::{Lsn, SyncPolicy, Wal, WalOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const ENV_DIR: &str = "KV_WAL_KILL_CHILD";
const ENV_ROUND: &str = "KV_WAL_KILL_ROUND";
const ENV_THREADS: &str = "KV_WAL_KILL_THREADS";
const ENV_SEGMENT: &str = "KV_WAL_KILL_SEGMENT";

fn policy(round: u64) -> SyncPolicy {
    match round % 3 {
        0 => SyncPolicy::Never,
        1 => SyncPolicy::Periodic(Duration::from_millis(5)),
        _ => SyncPolicy::Always,
    }
}

/// Record number `n` of thread `t` in round `round`.
fn tag(round: u64, t: u64, n: u64) -> u64 {
    (round << 48) | (t << 40) | n
}

/// The child: does nothing unless re-executed by `sigkill_recovers_every_reported_append`.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let round: u64 = std::env::var(ENV_ROUND).unwrap().parse().unwrap();
    let threads: u64 = std::env::var(ENV_THREADS).unwrap().parse().unwrap();
    let segment: u32 = std::env::var(ENV_SEGMENT).unwrap().parse().unwrap();
    let opts = WalOptions::new().segment_size(segment).sync(policy(round));
    let wal = Wal::open(&dir, opts).unwrap();
    std::thread::scope(|s| {
        for t in 0..threads {
            let wal = &wal;
            s.spawn(move || {
                // Bounded: the parent kills us long before this ends.
                for n in 0..500_000 {
                    let lsn = wal.append(&payload(tag(round, t, n))).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {t} {n} {}", lsn.as_u64()).unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn sigkill_recovers_every_reported_append() {
    if std::env::var(ENV_DIR).is_ok() {
        return; // We are the child.
    }
    run(2, 64 << 10, 0x5eed);
}

#[test]
fn sigkill_of_many_writers_across_roll_overs_recovers_every_reported_append() {
    if std::env::var(ENV_DIR).is_ok() {
        return; // We are the child.
    }
    run(16, 8 << 10, 0x16);
}

/// Three rounds (one per sync policy) of: start a child with `threads` writers in segments of
/// `segment` bytes, kill it after a random number of acknowledgements, reopen and check.
fn run(threads: u64, segment: u32, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut expected: BTreeMap<Lsn, Vec<u8>> = BTreeMap::new();
    for round in 0..3u64 {
        let kill_after = rng.random_range(300..1500);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, dir.path())
            .env(ENV_ROUND, round.to_string())
            .env(ENV_THREADS, threads.to_string())
            .env(ENV_SEGMENT, segment.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked: Vec<(u64, u64, Lsn)> = Vec::new();
        let mut killed = false;
        // Bounded: the child appends at most `threads` x 500,000 records.
        while let Some(Ok(line)) = lines.next() {
            let mut it = line.split_whitespace();
            if it.next() != Some("ack") {
                continue;
            }
            let t: u64 = it.next().unwrap().parse().unwrap();
            let n: u64 = it.next().unwrap().parse().unwrap();
            let lsn = Lsn::from_u64(it.next().unwrap().parse().unwrap());
            acked.push((t, n, lsn));
            if acked.len() == 10 {
                // The child holds the lock: a second open from another process must fail.
                match Wal::open(dir.path(), WalOptions::new()) {
                    Err(kv_wal::Error::Locked { .. }) => {}
                    other => panic!("expected Locked while the child runs, got {other:?}"),
                }
            }
            if acked.len() >= kill_after && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        child.wait().unwrap();
        assert!(
            killed,
            "round {round}: the child ended before it was killed"
        );

        let opts = WalOptions::new()
            .segment_size(segment)
            .sync(SyncPolicy::Never);
        let wal = Wal::open(dir.path(), opts).unwrap();
        let got = collect(&wal);
        // Everything from earlier rounds is still there, in order.
        let old: Vec<(Lsn, Vec<u8>)> = expected.iter().map(|(l, p)| (*l, p.clone())).collect();
        assert_eq!(
            got[..old.len()],
            old[..],
            "round {round}: earlier rounds changed"
        );
        // This round's records: per thread, numbers 0..k in order, with the right payloads.
        let mut next = vec![0u64; threads as usize];
        for (lsn, p) in &got[old.len()..] {
            let v = u64::from_le_bytes(p[..8].try_into().unwrap());
            let (r, t, n) = (v >> 48, (v >> 40) & 0xff, v & 0xff_ffff_ffff);
            assert_eq!(r, round);
            assert_eq!(
                n, next[t as usize],
                "round {round}: thread {t} out of order at {lsn}"
            );
            assert_eq!(p, &payload(v));
            next[t as usize] += 1;
            expected.insert(*lsn, p.clone());
        }
        // Every acknowledged append is there, at its Lsn.
        for (t, n, lsn) in &acked {
            assert_eq!(
                expected.get(lsn),
                Some(&payload(tag(round, *t, *n))),
                "round {round}: acknowledged append {t}/{n} at {lsn} lost"
            );
        }
        assert!(wal.end_lsn().segment() > 1 || round == 0);
    }
    assert!(
        expected.keys().last().unwrap().segment() > 1,
        "should cross segments"
    );
}
