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
