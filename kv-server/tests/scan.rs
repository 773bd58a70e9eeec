//! `SCAN`: a key present for the whole scan is returned at least once, through node failures
//! and a node joining mid-scan; Redis's options and errors.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashSet;

use common::{TestServer, exchange};

/// Runs a whole scan, calling `between` after each call; returns every key returned.
fn full_scan(
    c: &mut redis::Connection,
    extra: &[&str],
    mut between: impl FnMut(&mut redis::Connection, usize),
) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut all = Vec::new();
    let mut calls = 0;
    loop {
        let (next, keys): (String, Vec<String>) =
            redis::cmd("SCAN").arg(&cursor).arg(extra).query(c).unwrap();
        all.extend(keys);
        calls += 1;
        between(c, calls);
        assert!(calls < 100_000, "the scan never ends");
        if next == "0" {
            return all;
        }
        cursor = next;
    }
}

#[test]
fn a_full_scan_returns_every_key_and_no_deleted_one() {
    let server = TestServer::start();
    let mut c = server.client();
    let mut cmd = redis::cmd("MSET");
    for i in 0..2000 {
        cmd.arg(format!("key:{i}")).arg(i);
    }
    let _: () = cmd.query(&mut c).unwrap();
    let _: i64 = redis::cmd("DEL").arg("key:7").query(&mut c).unwrap();
    let got = full_scan(&mut c, &["COUNT", "100"], |_, _| {});
    let set: HashSet<&String> = got.iter().collect();
    assert_eq!(set.len(), got.len(), "each key once when nothing changes");
    assert_eq!(set.len(), 1999);
    assert!(!set.contains(&"key:7".to_string()));

    let got = full_scan(&mut c, &["MATCH", "key:1?", "COUNT", "1000"], |_, _| {});
    let set: HashSet<String> = got.into_iter().collect();
    let want: HashSet<String> = (10..20).map(|i| format!("key:{i}")).collect();
    assert_eq!(set, want);
    let got = full_scan(&mut c, &["TYPE", "hash"], |_, _| {});
    assert!(got.is_empty());
}

#[test]
fn keys_present_for_the_whole_scan_survive_a_failed_node_and_a_join() {
    let server = TestServer::start();
    let mut c = server.client();
    let mut cmd = redis::cmd("MSET");
    for i in 0..1500 {
        cmd.arg(format!("stable:{i}")).arg("v");
    }
    let _: () = cmd.query(&mut c).unwrap();
    let mut other = server.client();
    let mut last_call = 0;
    let got = full_scan(&mut c, &["COUNT", "50"], |_, call| {
        last_call = call;
        // Churn while the scan runs: writes and deletes of other keys, a node down and back,
        // a node joining.
        let _: () = redis::cmd("SET")
            .arg(format!("churn:{call}"))
            .arg("x")
            .query(&mut other)
            .unwrap();
        match call {
            3 => {
                let _: String = redis::cmd("KVSTORE")
                    .arg("FAIL")
                    .arg("node2")
                    .query(&mut other)
                    .unwrap();
            }
            10 => {
                let _: String = redis::cmd("KVSTORE")
                    .arg("ADDNODE")
                    .arg("node4")
                    .query(&mut other)
                    .unwrap();
            }
            6 => {
                let _: String = redis::cmd("KVSTORE")
                    .arg("RECOVER")
                    .arg("node2")
                    .query(&mut other)
                    .unwrap();
            }
            _ => {}
        }
    });
    assert!(
        last_call > 10,
        "the node joined mid-scan ({last_call} calls)"
    );
    let set: HashSet<String> = got.into_iter().collect();
    for i in 0..1500 {
        assert!(set.contains(&format!("stable:{i}")), "stable:{i} missed");
    }
}

#[test]
fn scan_arguments_answer_as_redis() {
    let server = TestServer::start();
    let mut s = server.raw();
    let cases: &[(&[u8], &[u8])] = &[
        (b"SCAN x\r\n", b"-ERR invalid cursor\r\n"),
        (b"SCAN -1\r\n", b"-ERR invalid cursor\r\n"),
        (b"SCAN 0 COUNT 0\r\n", b"-ERR syntax error\r\n"),
        (
            b"SCAN 0 COUNT x\r\n",
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (b"SCAN 0 BOGUS 1\r\n", b"-ERR syntax error\r\n"),
        (b"SCAN 0 COUNT\r\n", b"-ERR syntax error\r\n"),
        (
            b"SCAN\r\n",
            b"-ERR wrong number of arguments for 'scan' command\r\n",
        ),
    ];
    for (request, reply) in cases {
        let got = exchange(&mut s, request, reply.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply)
        );
    }
    // An empty store: one call covers the ring.
    assert_eq!(
        exchange(&mut s, b"SCAN 0 COUNT 100000\r\n", 12),
        b"*2\r\n$1\r\n0\r\n*0\r\n"[..12]
    );
}

/// With every replica of the ring down nothing can be read: an error, not an empty (and so
/// wrongly complete) scan.
#[test]
fn scan_with_every_replica_down_answers_an_error() {
    let server = TestServer::start();
    let mut c = server.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    for node in ["node1", "node2", "node3"] {
        let _: String = redis::cmd("KVSTORE")
            .arg("FAIL")
            .arg(node)
            .query(&mut c)
            .unwrap();
    }
    let err = redis::cmd("SCAN")
        .arg(0)
        .query::<(String, Vec<String>)>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("scan"), "{err}");
}
