//! The client cap, and graceful shutdown keeping every acknowledged write.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{TestServer, exchange, read_to_close};
use kv_cluster::{Cluster, ClusterOptions};
use kv_server::ServerOptions;

#[test]
fn the_client_over_the_cap_is_refused_as_in_redis() {
    let server = TestServer::with_options(ServerOptions::new().max_clients(2));
    let mut a = server.raw();
    let mut b = server.raw();
    assert_eq!(exchange(&mut a, b"PING\r\n", 7), b"+PONG\r\n");
    assert_eq!(exchange(&mut b, b"PING\r\n", 7), b"+PONG\r\n");
    let mut c = server.raw();
    assert_eq!(
        read_to_close(&mut c),
        b"-ERR max number of clients reached\r\n"
    );
    // A slot frees when a client leaves.
    drop(a);
    let mut tries = 0;
    loop {
        let mut d = server.raw();
        d.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let got = exchange(&mut d, b"PING\r\n", 7);
        if got == b"+PONG\r\n" {
            break;
        }
        tries += 1;
        assert!(
            tries < 50,
            "slot never freed: {:?}",
            String::from_utf8_lossy(&got)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn graceful_shutdown_keeps_acknowledged_writes() {
    let server = TestServer::start();
    let mut c = server.client();
    let mut acknowledged = Vec::new();
    for i in 0..500 {
        let key = format!("key:{i}");
        redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query::<()>(&mut c)
            .unwrap();
        acknowledged.push((key, i));
    }
    // A client still connected when the server stops.
    let (cluster, dir) = server.stop();
    let cluster = cluster.expect("the server released the cluster");
    cluster.close().unwrap();
    assert!(
        redis::cmd("PING").query::<String>(&mut c).is_err(),
        "the connection was closed"
    );

    let cluster = Cluster::open(dir.path(), ClusterOptions::new()).unwrap();
    for (key, i) in acknowledged {
        let v = cluster.get(key.as_bytes()).unwrap();
        assert_eq!(v.as_deref(), Some(i.to_string().as_bytes()), "{key}");
    }
}

#[test]
fn a_client_that_does_not_read_stops_being_read() {
    use std::io::{ErrorKind, Write};

    let server =
        TestServer::with_options(ServerOptions::new().shutdown_grace(Duration::from_millis(500)));
    let mut c = server.client();
    redis::cmd("SET")
        .arg("big")
        .arg(vec![b'v'; 1 << 20])
        .query::<()>(&mut c)
        .unwrap();

    // GET the 1 MiB value over and over without reading a reply: once the replies fill the
    // socket buffers the server must stop reading, and our writes must block.
    let mut s = server.raw();
    s.set_nonblocking(true).unwrap();
    let request = b"GET big\r\n".repeat(1000);
    let mut written = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut blocked_since = None;
    loop {
        assert!(std::time::Instant::now() < deadline, "writes never blocked");
        match s.write(&request) {
            Ok(n) => {
                written += n;
                blocked_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(std::time::Instant::now);
                // Blocked for a while: the server is not reading.
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            written < 256 << 20,
            "the server kept reading: {written} bytes taken"
        );
    }
    // The server buffered at most the socket buffers' worth of requests, not the 1 MiB
    // replies they ask for (which would be tens of GiB by now).
    assert!(written < 64 << 20, "{written} bytes of requests taken");

    // Other clients are served meanwhile, and shutdown is not held up by the stuck client.
    let v: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).unwrap();
    assert_eq!(v.len(), 1 << 20);
    let started = std::time::Instant::now();
    let (cluster, _dir) = server.stop();
    assert!(started.elapsed() < Duration::from_secs(10));
    if let Some(cluster) = cluster {
        cluster.close().unwrap();
    }
}
