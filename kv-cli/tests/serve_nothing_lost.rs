//! Nothing acknowledged is lost when `kvstore serve` stops: clients write (single commands and
//! pipelines, sets and deletes) and record every acknowledgement in a model while the server
//! is killed with SIGKILL, or shut down with SIGTERM or SIGINT; a server restarted on the same
//! data directory answers every acknowledged write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{EXIT_TIMEOUT, Served, data_dir};

/// Each key's last acknowledged state (`None`: deleted).
type Model = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Acknowledged writes seen before the server is stopped.
const ACKED_BEFORE_STOP: usize = 3_000;

/// Pipelined `SET`s per batch.
const PIPELINE: u64 = 50;

/// The value written under index `i`: its length varies, and it is not text.
fn value(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.extend((0..i % 97).map(|b| (b as u8).wrapping_mul(31) ^ 0x80));
    v
}

fn connect(addr: SocketAddr) -> redis::Connection {
    let c = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// One `SET` at a time, and every tenth command a `DEL` of a key set earlier, until the server
/// goes away.
fn single_writer(addr: SocketAddr, acked: Arc<AtomicUsize>) -> JoinHandle<Model> {
    std::thread::spawn(move || {
        let mut c = connect(addr);
        let mut model = Model::new();
        for i in 0.. {
            let key = format!("single:{i:08}").into_bytes();
            let v = value(i);
            match redis::cmd("SET").arg(&key).arg(&v).query::<String>(&mut c) {
                Ok(ok) => assert_eq!(ok, "OK"),
                Err(_) => break,
            }
            model.insert(key, Some(v));
            acked.fetch_add(1, Ordering::Relaxed);
            if i % 10 == 9 {
                let key = format!("single:{:08}", i - 5).into_bytes();
                match redis::cmd("DEL").arg(&key).query::<i64>(&mut c) {
                    Ok(n) => assert_eq!(n, 1),
                    Err(_) => break,
                }
                model.insert(key, None);
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }
        model
    })
}

/// Pipelines of `PIPELINE` `SET`s, acknowledged only when every reply of the batch has come,
/// until the server goes away.
fn pipeline_writer(addr: SocketAddr, acked: Arc<AtomicUsize>) -> JoinHandle<Model> {
    std::thread::spawn(move || {
        let mut c = connect(addr);
        let mut model = Model::new();
        for batch in 0.. {
            let mut pipe = redis::pipe();
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..PIPELINE)
                .map(|j| {
                    let key = format!("pipe:{batch:06}:{j:02}").into_bytes();
                    (key, value(batch * PIPELINE + j))
                })
                .collect();
            for (k, v) in &pairs {
                pipe.cmd("SET").arg(k).arg(v);
            }
            match pipe.query::<Vec<String>>(&mut c) {
                Ok(replies) => assert!(replies.iter().all(|r| r == "OK"), "{replies:?}"),
                Err(_) => break,
            }
            for (k, v) in pairs {
                model.insert(k, Some(v));
            }
            acked.fetch_add(PIPELINE as usize, Ordering::Relaxed);
        }
        model
    })
}

/// Starts a server and the writers, stops the server with `stop` once enough writes are
/// acknowledged, and returns the data directory and what the writers were told.
fn write_then_stop(stop: impl FnOnce(Served)) -> (tempfile::TempDir, Model) {
    let dir = data_dir();
    let server = Served::start(dir.path(), &[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let writers = [
        single_writer(server.addr, Arc::clone(&acked)),
        pipeline_writer(server.addr, Arc::clone(&acked)),
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::Relaxed) < ACKED_BEFORE_STOP {
        assert!(
            Instant::now() < deadline,
            "only {} writes acknowledged",
            acked.load(Ordering::Relaxed)
        );
        assert!(
            !writers.iter().any(JoinHandle::is_finished),
            "a writer stopped while the server was up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The writers are still writing: some commands are in flight when the server stops.
    stop(server);
    let mut model = Model::new();
    for w in writers {
        model.extend(w.join().expect("writer"));
    }
    assert!(model.len() >= ACKED_BEFORE_STOP / 2, "{}", model.len());
    (dir, model)
}

/// Restarts a server on `dir` and checks it answers every write of `model`.
fn every_acknowledged_write_is_there(dir: &tempfile::TempDir, model: &Model) {
    let server = Served::start(dir.path(), &[]);
    let mut c = server.client();
    let entries: Vec<_> = model.iter().collect();
    let mut present = 0;
    for chunk in entries.chunks(500) {
        let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
        let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
        for ((key, want), got) in chunk.iter().zip(got) {
            assert_eq!(
                &got,
                *want,
                "key {:?} after the restart",
                String::from_utf8_lossy(key)
            );
            present += usize::from(got.is_some());
        }
    }
    // The deletes are part of the model too.
    assert!(present < model.len(), "no acknowledged delete was checked");
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let (dir, model) = write_then_stop(Served::crash);
    every_acknowledged_write_is_there(&dir, &model);
}

fn graceful(signal: libc::c_int, name: &str) {
    let (dir, model) = write_then_stop(|mut server| {
        server.signal(signal);
        let status = server.wait_exit(EXIT_TIMEOUT);
        let stderr = server.stderr();
        assert_eq!(status.code(), Some(0), "{status}: {stderr}");
        assert!(stderr.contains(&format!("{name} received")), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    });
    every_acknowledged_write_is_there(&dir, &model);
}

#[test]
fn sigterm_exits_zero_and_loses_no_acknowledged_write() {
    graceful(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_exits_zero_and_loses_no_acknowledged_write() {
    graceful(libc::SIGINT, "SIGINT");
}
