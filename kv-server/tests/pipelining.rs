//! Pipelined batches: many commands in one write, replies in order, writes visible to later
//! reads of the same batch; many clients at once.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::Write;

use common::{TestServer, read_exactly};

#[test]
fn a_pipeline_of_10000_commands() {
    let server = TestServer::start();
    let mut c = server.client();
    let mut pipe = redis::pipe();
    for i in 0..5_000 {
        pipe.cmd("SET")
            .arg(format!("key:{i}"))
            .arg(format!("value:{i}"));
        pipe.cmd("GET").arg(format!("key:{i}"));
    }
    let replies: Vec<redis::Value> = pipe.query(&mut c).unwrap();
    assert_eq!(replies.len(), 10_000);
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(pair[0], redis::Value::Okay);
        assert_eq!(
            pair[1],
            redis::Value::BulkString(format!("value:{i}").into_bytes()),
            "command {i}"
        );
    }
}

#[test]
fn a_batch_sees_its_own_writes_in_order() {
    let server = TestServer::start();
    let mut s = server.raw();
    // One write: runs of SETs and GETs, the same key written twice in one run.
    s.write_all(
        b"SET k a\r\nSET k b\r\nGET k\r\nSET k c\r\nDEL k\r\nGET k\r\nSET k d\r\nGET k\r\n",
    )
    .unwrap();
    let want: &[u8] = b"+OK\r\n+OK\r\n$1\r\nb\r\n+OK\r\n:1\r\n$-1\r\n+OK\r\n$1\r\nd\r\n";
    assert_eq!(
        String::from_utf8_lossy(&read_exactly(&mut s, want.len())),
        String::from_utf8_lossy(want)
    );
}

#[test]
fn commands_split_across_writes_are_answered_once_complete() {
    let server = TestServer::start();
    let mut s = server.raw();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    s.write_all(b"lo\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        .unwrap();
    assert_eq!(read_exactly(&mut s, 16), b"+OK\r\n$5\r\nhello\r\n");
}

#[test]
fn one_hundred_concurrent_connections() {
    let server = TestServer::start();
    let threads: Vec<_> = (0..100)
        .map(|t| {
            let url = server.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                    .unwrap();
                for i in 0..20 {
                    let key = format!("t{t}:k{i}");
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(i)
                        .query::<()>(&mut c)
                        .unwrap();
                    let v: i64 = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
                    assert_eq!(v, i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_run_of_large_gets_is_answered_in_order_across_reply_flushes() {
    use kv_server::ServerOptions;

    // A reply bound of 64 KiB and values of 40 KiB: every second GET of the run waits for a
    // write, and is executed again after it.
    let server = TestServer::with_options(ServerOptions::new().max_pending_reply_bytes(64 << 10));
    let mut c = server.client();
    for i in 0..10u8 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(vec![i; 40 << 10])
            .query::<()>(&mut c)
            .unwrap();
    }
    let mut pipe = redis::pipe();
    for i in 0..10 {
        pipe.cmd("GET").arg(format!("k{i}"));
    }
    pipe.cmd("GET").arg("missing");
    let replies: Vec<Option<Vec<u8>>> = pipe.query(&mut c).unwrap();
    assert_eq!(replies.len(), 11);
    for (i, r) in replies[..10].iter().enumerate() {
        assert_eq!(r.as_deref(), Some(&vec![i as u8; 40 << 10][..]), "GET k{i}");
    }
    assert_eq!(replies[10], None);
}
