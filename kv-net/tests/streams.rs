//! Bulk streams: many MiB arrive intact and in order while small requests keep flowing on the
//! request connection; refusals and sink errors reach the sender.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kv_net::{Error, Identity, PeerInfo, Server, ServerOptions, StreamHandler, StreamSink};

/// What the receiving side saw of each stream.
#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<Finished>>>);

/// A finished stream: sender, header, bytes, FNV-1a hash of the bytes.
type Finished = (String, Vec<u8>, u64, u64);

struct Sink {
    from: String,
    header: Vec<u8>,
    bytes: u64,
    hash: u64,
    next_expected: u8,
    fail_after: Option<u64>,
    out: Received,
}

impl StreamSink for Sink {
    fn chunk(&mut self, data: Bytes) -> Result<(), String> {
        // The sender writes byte i of the stream as (i mod 251): a lost, repeated or
        // reordered chunk breaks the sequence.
        for &b in data.iter() {
            if b != self.next_expected {
                return Err(format!(
                    "byte {} is {b}, expected {}",
                    self.bytes, self.next_expected
                ));
            }
            self.next_expected = ((u16::from(self.next_expected) + 1) % 251) as u8;
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            self.bytes += 1;
        }
        if self.fail_after.is_some_and(|n| self.bytes >= n) {
            return Err(String::from("disk full"));
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), String> {
        self.out
            .0
            .lock()
            .unwrap()
            .push((self.from, self.header, self.bytes, self.hash));
        Ok(())
    }
}

struct Streams {
    out: Received,
    fail_after: Option<u64>,
}

impl StreamHandler for Streams {
    fn open(&self, from: &PeerInfo, header: Bytes) -> Result<Box<dyn StreamSink>, String> {
        if &header[..] == b"refuse me" {
            return Err(String::from("no room for that"));
        }
        Ok(Box::new(Sink {
            from: from.node_id.clone(),
            header: header.to_vec(),
            bytes: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            next_expected: 0,
            fail_after: self.fail_after,
            out: self.out.clone(),
        }))
    }
}

fn stream_server(fail_after: Option<u64>) -> (Server, Received) {
    let out = Received::default();
    let server = Server::start_with_streams(
        Identity::new(CLUSTER, "server"),
        ServerOptions::new(),
        handler(Counts::default()),
        Streams {
            out: out.clone(),
            fail_after,
        },
    )
    .unwrap();
    (server, out)
}

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

#[test]
fn a_stream_of_many_mib_arrives_in_order_while_requests_keep_flowing() {
    const MIB: usize = 1024 * 1024;
    const TOTAL: usize = 48 * MIB;
    const CHUNK: usize = 256 * 1024;
    let (server, received) = stream_server(None);
    let peers = Arc::new(client(server.local_addr(), fast_options()));

    // Small requests on the request connection, timed, for as long as the stream runs.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (peers, done) = (Arc::clone(&peers), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut n = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let start = Instant::now();
                assert_eq!(
                    peers.call_blocking("server", &Req::Echo(n), LONG).unwrap(),
                    Resp::Num(n)
                );
                worst = worst.max(start.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            (n, worst)
        })
    };

    let mut expected_hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut stream = peers.open_stream("server", b"range (0, 100]").unwrap();
    let mut offset = 0u64;
    while (offset as usize) < TOTAL {
        let chunk = pattern(offset, CHUNK);
        for &b in &chunk {
            expected_hash = (expected_hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        stream.send(&chunk).unwrap();
        offset += CHUNK as u64;
    }
    assert_eq!(stream.chunks_sent(), (TOTAL / CHUNK) as u64);
    stream.finish(Duration::from_secs(30)).unwrap();
    done.store(true, std::sync::atomic::Ordering::Release);
    let (requests, worst) = prober.join().unwrap();

    let got = received.0.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![(
            "client".to_string(),
            b"range (0, 100]".to_vec(),
            TOTAL as u64,
            expected_hash
        )]
    );
    assert!(requests >= 5, "only {requests} requests during the stream");
    // A generous bound for a debug build on a shared 2-core box: what matters is that no
    // request waited behind the stream's megabytes.
    assert!(
        worst < Duration::from_secs(1),
        "a request took {worst:?} during the stream"
    );
}

#[test]
fn a_refused_stream_and_a_failing_sink_reach_the_sender() {
    let (server, received) = stream_server(Some(100_000));
    let peers = client(server.local_addr(), fast_options());

    let stream = peers.open_stream("server", b"refuse me").unwrap();
    let err = stream.finish(LONG).unwrap_err();
    assert!(
        matches!(&err, Error::Stream { reason, .. } if reason == "no room for that"),
        "{err}"
    );

    let mut stream = peers.open_stream("server", b"ok").unwrap();
    let mut result = Ok(());
    for i in 0..64u64 {
        result = stream.send(&pattern(i * 65536, 65536));
        if result.is_err() {
            break;
        }
    }
    let err = match result {
        Err(e) => e,
        Ok(()) => stream.finish(LONG).unwrap_err(),
    };
    assert!(
        matches!(&err, Error::Stream { reason, .. } if reason == "disk full"),
        "{err}"
    );
    assert!(received.0.lock().unwrap().is_empty());
    // The request connection is unaffected.
    assert_eq!(
        peers.call_blocking("server", &Req::Echo(1), LONG).unwrap(),
        Resp::Num(1)
    );
}

#[test]
fn a_server_without_a_stream_handler_refuses_streams() {
    let server = server(Counts::default());
    let peers = client(server.local_addr(), fast_options());
    let stream = peers.open_stream("server", b"x").unwrap();
    let err = stream.finish(LONG).unwrap_err();
    assert!(
        matches!(&err, Error::Stream { reason, .. } if reason.contains("accepts no bulk streams")),
        "{err}"
    );
}

#[test]
fn a_stream_dropped_unfinished_is_not_finished_by_the_receiver() {
    let (server, received) = stream_server(None);
    let peers = client(server.local_addr(), fast_options());
    for _ in 0..5 {
        let mut stream = peers.open_stream("server", b"abandoned").unwrap();
        stream.send(&pattern(0, 1000)).unwrap();
        // Dropped at once or after its bytes left: either way the sink is never finished.
        drop(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(received.0.lock().unwrap().is_empty());
    // The receiver is fine: a finished stream still goes through.
    let mut stream = peers.open_stream("server", b"kept").unwrap();
    stream.send(&pattern(0, 1000)).unwrap();
    stream.finish(LONG).unwrap();
    assert_eq!(received.0.lock().unwrap().len(), 1);
    assert_eq!(received.0.lock().unwrap()[0].1, b"kept".to_vec());
}

#[test]
fn a_stream_outliving_its_transport_fails_without_panicking() {
    let (server, _received) = stream_server(None);
    let peers = client(server.local_addr(), fast_options());
    let mut stream = peers.open_stream("server", b"orphan").unwrap();
    stream.send(&pattern(0, 100)).unwrap();
    drop(peers);
    let err = match stream.send(&pattern(100, 100)) {
        Err(e) => e,
        Ok(()) => stream.finish(LONG).unwrap_err(),
    };
    assert!(matches!(err, Error::Stream { .. }), "{err}");
}
