//! Async handlers (`Handler::handle_async`): answered by tasks on the server's runtime, beside
//! the blocking pool and the inline path, each answer reaching the request it answers.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kv_net::{
    BoxFuture, Error, Handler, Identity, PeerInfo, Peers, PeersOptions, Server, ServerOptions,
};
use serde::{Deserialize, Serialize};

const CLUSTER: u128 = 0xA5;
const LONG: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Req {
    /// Blocking: held on the blocking pool until the gate opens, answered with the tag.
    Block(u64),
    /// Async: answered with `tag * 10` after `ms` milliseconds of (async) sleep.
    Async { ms: u64, tag: u64 },
    /// Async: the future panics when polled.
    AsyncPanic,
    /// Async: never answers; counts its future's drop.
    Forever,
}

/// A gate the blocking requests wait at (bounded, so a failing test cannot hang).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn wait(&self) {
        let guard = self.open.lock().unwrap();
        let _unused = self
            .changed
            .wait_timeout_while(guard, LONG, |open| !*open)
            .unwrap();
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

#[derive(Default)]
struct State {
    gate: Gate,
    /// Blocking requests started.
    blocking_started: AtomicU64,
    /// `Forever` futures dropped.
    forever_dropped: AtomicU64,
}

struct Mixed(Arc<State>);

/// Counts a drop: proves the server drops a future whose connection closed.
struct DropCounter(Arc<State>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.forever_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Handler<Req, u64> for Mixed {
    fn handle(&self, _: &PeerInfo, req: Req) -> u64 {
        match req {
            Req::Block(tag) => {
                self.0.blocking_started.fetch_add(1, Ordering::SeqCst);
                self.0.gate.wait();
                tag
            }
            other => panic!("{other:?} is answered asynchronously"),
        }
    }

    fn handle_async(&self, _: &PeerInfo, req: &Req) -> Option<BoxFuture<'static, u64>> {
        match *req {
            Req::Block(_) => None,
            Req::Async { ms, tag } => Some(Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                tag * 10
            })),
            Req::AsyncPanic => Some(Box::pin(async {
                tokio::task::yield_now().await;
                panic!("the async test handler panics on purpose")
            })),
            Req::Forever => {
                let guard = DropCounter(Arc::clone(&self.0));
                Some(Box::pin(async move {
                    let _guard = guard;
                    std::future::pending::<u64>().await
                }))
            }
        }
    }
}

/// A server with one blocking thread and one worker, and a client connected to it.
fn setup() -> (Arc<State>, Server, Peers<Req, u64>) {
    let state = Arc::new(State::default());
    let options = ServerOptions::new()
        .worker_threads(1)
        .max_blocking_threads(1);
    let server = Server::start(
        Identity::new(CLUSTER, "server"),
        options,
        Mixed(Arc::clone(&state)),
    )
    .unwrap();
    let peers = Peers::start(Identity::new(CLUSTER, "client"), PeersOptions::new()).unwrap();
    peers.add_peer("server", server.local_addr()).unwrap();
    assert!(peers.wait_connected("server", LONG), "{:?}", peers.status());
    (state, server, peers)
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn async_requests_are_answered_while_the_blocking_pool_is_held() {
    let (state, _server, peers) = setup();
    let (tx, rx) = mpsc::channel();
    // The only blocking thread is held by the first; the second waits for it.
    let block1 = peers.send("server", &Req::Block(1), LONG, &tx);
    let block2 = peers.send("server", &Req::Block(2), LONG, &tx);
    assert!(wait_until(LONG, || state
        .blocking_started
        .load(Ordering::SeqCst)
        == 1));

    // Pipelined async requests, the first sent sleeping longest: they finish in reverse.
    let n = 50u64;
    let mut tags = HashMap::new();
    for i in 0..n {
        let id = peers.send(
            "server",
            &Req::Async {
                ms: (n - i) * 4,
                tag: i,
            },
            LONG,
            &tx,
        );
        tags.insert(id, i);
    }
    let mut order = Vec::new();
    for _ in 0..n {
        let reply = rx.recv_timeout(LONG).expect("an async answer in time");
        assert_ne!(reply.request, block1, "a blocking request answered early");
        assert_ne!(reply.request, block2, "a blocking request answered early");
        let tag = tags[&reply.request];
        // Each answer is the one for the request of its id.
        assert_eq!(reply.result.unwrap(), tag * 10);
        order.push(tag);
    }
    order.dedup();
    assert_eq!(order.len(), n as usize);
    assert!(
        order[0] > order[order.len() - 1],
        "in send order: {order:?}"
    );
    // The blocking ones are still held: one running, one queued behind it.
    assert_eq!(state.blocking_started.load(Ordering::SeqCst), 1);
    assert!(rx.try_recv().is_err());

    state.gate.open();
    let mut blocked: Vec<(u64, u64)> = (0..2)
        .map(|_| {
            let reply = rx.recv_timeout(LONG).expect("a blocking answer");
            (reply.request, reply.result.unwrap())
        })
        .collect();
    blocked.sort_unstable();
    assert_eq!(blocked, [(block1, 1), (block2, 2)]);
}

#[test]
fn an_async_handler_that_panics_fails_its_request_and_the_server_goes_on() {
    let (_state, _server, peers) = setup();
    match peers.call_blocking("server", &Req::AsyncPanic, LONG) {
        Err(Error::Remote { message, .. }) => assert!(message.contains("panicked"), "{message}"),
        other => panic!("expected a remote failure, got {other:?}"),
    }
    let answer = peers.call_blocking("server", &Req::Async { ms: 1, tag: 4 }, LONG);
    assert_eq!(answer.unwrap(), 40);
}

#[test]
fn a_pending_async_request_is_dropped_with_its_connection() {
    let (state, server, peers) = setup();
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        peers.send("server", &Req::Forever, LONG, &tx);
    }
    // Answered requests after them show the three reached the server.
    assert_eq!(
        peers
            .call_blocking("server", &Req::Async { ms: 0, tag: 1 }, LONG)
            .unwrap(),
        10
    );
    assert_eq!(state.forever_dropped.load(Ordering::SeqCst), 0);
    drop(peers);
    // Their callers got a reply (shutdown), and the server dropped the futures with the
    // connection instead of keeping them forever.
    for _ in 0..3 {
        let reply = rx.recv_timeout(LONG).unwrap();
        assert!(matches!(reply.result, Err(Error::Shutdown)), "{reply:?}");
    }
    assert!(
        wait_until(LONG, || state.forever_dropped.load(Ordering::SeqCst) == 3),
        "dropped: {}",
        state.forever_dropped.load(Ordering::SeqCst)
    );
    drop(server);
}
