//! `DEL`, `GETDEL` and `SET ... GET` from many clients at once: each answer comes from the
//! write itself (the replicas report what it replaced), so concurrent clients never both see
//! the same key or the same old value.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Barrier, Mutex};

use common::TestServer;
use redis::Commands;

/// Clients racing in each round.
const CLIENTS: usize = 4;
/// Rounds per test: enough for the old read-then-write path to lose a race many times.
const ROUNDS: usize = 60;

/// Runs `round` on `CLIENTS` threads, each with its own connection, `ROUNDS` times; before
/// each round `setup` runs alone on its own connection, after it `check` gets every client's
/// answer for the round.
fn race<T: Send + 'static>(
    server: &TestServer,
    setup: impl Fn(&mut redis::Connection, usize),
    round: impl Fn(&mut redis::Connection, usize, usize) -> T + Send + Sync + 'static,
    check: impl Fn(usize, Vec<T>),
) {
    let mut admin = server.client();
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let done = Arc::new(Barrier::new(CLIENTS + 1));
    let answers: Arc<Mutex<Vec<T>>> = Arc::new(Mutex::new(Vec::new()));
    let round = Arc::new(round);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let mut c = server.client();
            let (start, done) = (Arc::clone(&start), Arc::clone(&done));
            let (answers, round) = (Arc::clone(&answers), Arc::clone(&round));
            std::thread::spawn(move || {
                for r in 0..ROUNDS {
                    start.wait();
                    let got = round(&mut c, client, r);
                    answers.lock().unwrap().push(got);
                    done.wait();
                }
            })
        })
        .collect();
    for r in 0..ROUNDS {
        setup(&mut admin, r);
        start.wait();
        done.wait();
        let got = std::mem::take(&mut *answers.lock().unwrap());
        check(r, got);
    }
    for t in threads {
        t.join().unwrap();
    }
}

const KEYS: [&str; 8] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];

#[test]
fn concurrent_dels_of_the_same_keys_count_each_key_once() {
    let server = TestServer::start();
    race(
        &server,
        |c, r| {
            let pairs: Vec<(&str, String)> = KEYS.iter().map(|k| (*k, format!("v{r}"))).collect();
            let _: () = c.mset(&pairs).unwrap();
        },
        |c, _, _| -> i64 { c.del(&KEYS[..]).unwrap() },
        |r, counts| {
            let total: i64 = counts.iter().sum();
            assert_eq!(total, KEYS.len() as i64, "round {r}: {counts:?}");
        },
    );
}

#[test]
fn concurrent_getdels_of_a_key_return_its_value_once() {
    let server = TestServer::start();
    race(
        &server,
        |c, r| {
            let _: () = c.set("k", format!("v{r}")).unwrap();
        },
        |c, _, _| -> Option<String> { redis::cmd("GETDEL").arg("k").query(c).unwrap() },
        |r, got| {
            let values: Vec<&String> = got.iter().flatten().collect();
            assert_eq!(values, vec![&format!("v{r}")], "round {r}: {got:?}");
        },
    );
    let mut c = server.client();
    let gone: Option<String> = c.get("k").unwrap();
    assert_eq!(gone, None);
}

/// Each client replaces the value with its own and gets the one it replaced: the answers
/// form one chain from the round's first value to the final one, each value once.
#[test]
fn concurrent_set_gets_each_see_a_distinct_previous_value() {
    let server = TestServer::start();
    let check_client = server.client();
    let check_client = Mutex::new(check_client);
    race(
        &server,
        |c, r| {
            let _: () = c.set("k", format!("start{r}")).unwrap();
        },
        |c, client, r| -> (String, Option<String>) {
            let mine = format!("c{client}r{r}");
            let old: Option<String> = redis::cmd("SET")
                .arg("k")
                .arg(&mine)
                .arg("GET")
                .query(c)
                .unwrap();
            (mine, old)
        },
        |r, got| {
            let last: String = check_client.lock().unwrap().get("k").unwrap();
            let mut olds: Vec<String> = got.iter().map(|(_, o)| o.clone().unwrap()).collect();
            olds.sort();
            // Every value written this round but the last one was replaced exactly once.
            let mut expected: Vec<String> = got
                .iter()
                .map(|(mine, _)| mine.clone())
                .chain([format!("start{r}")])
                .filter(|v| *v != last)
                .collect();
            expected.sort();
            assert_eq!(olds, expected, "round {r}: {got:?}, last {last}");
        },
    );
}
