//! A child process drives a `MetaLog` (appends, votes, committed marks, truncations) and is
//! killed with `SIGKILL`; reopening finds exactly the state after every acknowledged
//! operation, or after one more (the one in flight may have reached the log before the kill:
//! each operation is one atomic kv-wal batch, so nothing in between).
//! After kv-wal's `tests/kill_child.rs`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use kv_meta::{MetaLog, MetaTypes};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

const ENV_DIR: &str = "KV_META_KILL_CHILD_DIR";

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// The state the log must hold: vote, committed id, entries as (term, index).
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    entries: Vec<(u64, u64)>,
}

enum Op {
    Append(u64, u64),
    Vote(Vote<u64>),
    Committed(LogId<u64>),
    Truncate(u64),
}

/// Operation `n`, a deterministic function of `n` and the state before it.
fn op(n: u64, m: &Model) -> Op {
    let last = m.entries.last().map_or(0, |e| e.1);
    let term = n / 10 + 1;
    match n % 10 {
        4 => Op::Vote(Vote::new(term, 1)),
        7 if last > 2 => Op::Committed(log_id(term, last - 2)),
        9 if last > 2 => Op::Truncate(last - 1),
        _ => Op::Append(term, last + 1),
    }
}

fn step(m: &mut Model, op: &Op) {
    match op {
        Op::Append(term, index) => m.entries.push((*term, *index)),
        Op::Vote(v) => m.vote = Some(*v),
        Op::Committed(c) => m.committed = Some(*c),
        Op::Truncate(from) => m.entries.retain(|e| e.1 < *from),
    }
}

fn model_after(ops: u64) -> Model {
    let mut m = Model::default();
    for n in 0..ops {
        let o = op(n, &m);
        step(&mut m, &o);
    }
    m
}

/// The child: does nothing unless re-executed by the test below.
#[test]
fn child_operator() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut log = MetaLog::open(std::path::Path::new(&dir)).await.unwrap();
        let mut m = Model::default();
        // Bounded: the parent kills us long before this ends.
        for n in 0..100_000 {
            let o = op(n, &m);
            match &o {
                Op::Append(term, index) => {
                    let e: Entry<MetaTypes> = Entry {
                        log_id: log_id(*term, *index),
                        payload: EntryPayload::Blank,
                    };
                    log.blocking_append([e]).await.unwrap();
                }
                Op::Vote(v) => log.save_vote(v).await.unwrap(),
                Op::Committed(c) => log.save_committed(Some(*c)).await.unwrap(),
                Op::Truncate(from) => log.truncate(log_id(0, *from)).await.unwrap(),
            }
            step(&mut m, &o);
            let mut out = std::io::stdout().lock();
            writeln!(out, "ack {n}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn sigkill_keeps_every_acknowledged_operation() {
    if std::env::var(ENV_DIR).is_ok() {
        return; // We are the child.
    }
    for kill_after in [37, 118, 263] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_operator",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = 0u64;
        let mut killed = false;
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Bounded: the child runs at most 100,000 operations.
        for line in lines {
            let Ok(line) = line else { break };
            let Some(n) = line.strip_prefix("ack ") else {
                continue;
            };
            acked = n.parse::<u64>().unwrap() + 1;
            if acked >= kill_after && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        child.wait().unwrap();
        assert!(killed, "the child ended before it was killed");

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let mut log = MetaLog::open(dir.path()).await.unwrap();
            let entries = log.try_get_log_entries(0..u64::MAX).await.unwrap();
            let m = Model {
                vote: log.read_vote().await.unwrap(),
                committed: log.read_committed().await.unwrap(),
                entries: entries
                    .iter()
                    .map(|e| (e.log_id.leader_id.term, e.log_id.index))
                    .collect(),
            };
            log.close().await.unwrap();
            m
        });
        let (exact, one_more) = (model_after(acked), model_after(acked + 1));
        assert!(
            got == exact || got == one_more,
            "after {acked} acknowledged operations the log holds {got:?}, expected {exact:?} or {one_more:?}"
        );
        assert!(!exact.entries.is_empty() && exact.vote.is_some());
    }
}
