//! A cluster of processes: three `kvstore serve --node-id ... --peers ...` on 127.0.0.1,
//! driven through the `redis` crate. Every process is killed when its guard drops, also when
//! a test fails.
//!
//! - every node coordinates: a write through one is read through each other, at every
//!   consistency level (each node runs with other levels);
//! - a node killed with SIGKILL under client load: no client operation fails (RF 3, W = R =
//!   2), and once it is back and a repair ran, each acknowledged write is on all three
//!   storage nodes, read directly from their directories;
//! - a node stopped with SIGSTOP (a hang, not a crash): operations through the others
//!   succeed within the replica timeout, never stall;
//! - a partition injected in the transport (`KVSTORE FAULT`, `--enable-debug-faults`) fails
//!   no operation through the majority and heals with nothing lost on any storage node;
//! - bad peers on a node's cluster port are refused, and the node serves on; a non-member
//!   presenting the cluster id is let in (a joiner);
//! - hints a node holds for a dead peer show in its `INFO` and `KVSTORE NODES`, the peer's
//!   catch-up when it returns shows its phases (`hints`, then `repair`) and its result, and
//!   the hints drain to 0;
//! - background repair runs by default every 600 s (`--repair-interval` changes it); rounds
//!   against a hung peer neither stall clients nor hold the admin lock for long;
//! - two nodes given the members in another order connect (the handshake's id is the
//!   cluster name's) but refuse each other's metadata requests (their cluster uuids differ),
//!   with a log line naming the likely cause (neither bootstraps the metadata: clients get
//!   `TRYAGAIN`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, free_port_pair};
use redis::Commands as _;

/// Three nodes' ports and directories, and their processes while they run.
struct Nodes {
    _one: MutexGuard<'static, ()>,
    _root: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    ports: Vec<u16>,
    extra: Vec<Vec<String>>,
    running: Vec<Option<Served>>,
}

impl Nodes {
    /// Three nodes, node `i` started with `extra[i]` on top of the membership flags.
    fn start(extra: [&[&str]; 3]) -> Nodes {
        // A test that failed while holding the lock poisons it; the next one may still run.
        let one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
        let root = common::data_dir();
        let ports: Vec<u16> = (0..3).map(|_| free_port_pair()).collect();
        let mut nodes = Nodes {
            _one: one,
            dirs: (1..=3).map(|i| root.path().join(format!("n{i}"))).collect(),
            _root: root,
            ports,
            extra: extra
                .iter()
                .map(|e| e.iter().map(|s| s.to_string()).collect())
                .collect(),
            running: vec![None, None, None],
        };
        for i in 0..3 {
            nodes.restart(i);
        }
        nodes
    }

    /// Starts node `i` (again) on its directory.
    fn restart(&mut self, i: usize) {
        let args = common::member_args(i, &self.ports, &self.extra[i]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.running[i] = Some(Served::start(&self.dirs[i], &args));
    }

    fn node(&self, i: usize) -> &Served {
        self.running[i].as_ref().expect("node running")
    }

    /// Waits until a write and a read through each node succeed at the node's levels (the
    /// nodes it needs have connected: a node reconnects with backoff, so one started before
    /// its peers listened may take a few seconds).
    fn wait_connected(&self) {
        for i in 0..3 {
            let mut c = self.node(i).client();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let probe = c
                    .set::<_, _, ()>("connected?", i)
                    .and_then(|()| c.get::<_, Option<usize>>("connected?"));
                match probe {
                    Ok(_) => break,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "node {i} never connected: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    }

    /// Stops every node cleanly (SIGTERM, exit 0).
    fn stop_all(&mut self) {
        for s in self.running.iter_mut() {
            if let Some(mut s) = s.take() {
                s.signal(libc::SIGTERM);
                let status = s.wait_exit(common::EXIT_TIMEOUT);
                assert!(status.success(), "exit: {status:?}: {}", s.stderr());
            }
        }
    }

    /// Node `i`'s own storage node directory.
    fn storage(&self, i: usize) -> PathBuf {
        self.dirs[i].join(format!("n{}", i + 1))
    }
}

#[test]
fn every_node_coordinates_at_every_consistency_level() {
    let nodes = Nodes::start([
        &["--write-consistency", "all", "--read-consistency", "quorum"],
        &["--write-consistency", "quorum", "--read-consistency", "all"],
        &["--write-consistency", "one", "--read-consistency", "one"],
    ]);
    nodes.wait_connected();
    let mut c: Vec<redis::Connection> = (0..3).map(|i| nodes.node(i).client()).collect();
    // n1 wrote at ALL: its transport shows both peers up.
    let peers = kvstore(&mut c[0], &["PEERS"]).unwrap();
    assert!(peers.starts_with("=== 2 peers ==="), "{peers}");
    for id in ["n2", "n3"] {
        assert!(
            peers
                .lines()
                .any(|l| l.starts_with(&format!("- {id} ")) && l.contains(": up")),
            "{peers}"
        );
    }
    // Through n1 at ALL: every level reads it through every node.
    c[0].set::<_, _, ()>("k-all", "v1").unwrap();
    for (i, conn) in c.iter_mut().enumerate() {
        let got: Option<String> = conn.get("k-all").unwrap();
        assert_eq!(got.as_deref(), Some("v1"), "read through node {i}");
    }
    // Through n2 at QUORUM, read through n1 at QUORUM (R + W > N).
    c[1].set::<_, _, ()>("k-quorum", "v2").unwrap();
    assert_eq!(
        c[0].get::<_, Option<String>>("k-quorum")
            .unwrap()
            .as_deref(),
        Some("v2")
    );
    // Through n3 at ONE, read through n2 at ALL.
    c[2].set::<_, _, ()>("k-one", "v3").unwrap();
    assert_eq!(
        c[1].get::<_, Option<String>>("k-one").unwrap().as_deref(),
        Some("v3")
    );
    // A delete through one node is seen through another; a binary key survives the trip.
    let key = b"bin\0\r\n\xff".to_vec();
    c[0].set::<_, _, ()>(&key, b"\x00\x01".to_vec()).unwrap();
    assert_eq!(c[1].get::<_, Vec<u8>>(&key).unwrap(), b"\x00\x01");
    assert_eq!(c[0].del::<_, i64>("k-all").unwrap(), 1);
    assert_eq!(c[1].get::<_, Option<String>>("k-all").unwrap(), None);
    // A key with a TTL, written at ALL: every node counts its replica, and n1 asks the
    // others for theirs (the replica protocol's `ExpiringKeys`).
    c[0].set_ex::<_, _, ()>("k-ttl", "v4", 600).unwrap();
    let stats = kvstore(&mut c[0], &["STATS"]).unwrap();
    assert!(
        stats.contains("\nKeys with a TTL per node: n1 1, n2 1, n3 1\n"),
        "{stats}"
    );
    assert!(
        stats.contains("\nTotal keys with a TTL: 1 (3 replica records / replication factor 3;"),
        "{stats}"
    );
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c[1]).unwrap();
    assert!(info.contains("expires=1,"), "{info}");
}

/// What a client thread got `OK` for (key to value), and the operations that failed.
type Outcome = (BTreeMap<String, String>, Vec<String>);

/// Client threads writing distinct keys through the given nodes until `stop`, each keeping
/// the writes it got `OK` for; any failed operation is kept too.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Outcome>>,
}

impl Load {
    fn start(addrs: &[std::net::SocketAddr], per_thread: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = addrs
            .iter()
            .enumerate()
            .map(|(t, addr)| {
                let stop = Arc::clone(&stop);
                let addr = *addr;
                std::thread::spawn(move || {
                    let mut c = redis::Client::open(format!("redis://{addr}/"))
                        .unwrap()
                        .get_connection_with_timeout(Duration::from_secs(10))
                        .unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut acked = BTreeMap::new();
                    let mut failed = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(120);
                    for i in 0..per_thread {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        let (k, v) = (format!("t{t}-k{i}"), format!("t{t}-v{i}"));
                        match c.set::<_, _, ()>(&k, &v) {
                            Ok(()) => {
                                acked.insert(k.clone(), v);
                            }
                            Err(e) => failed.push(format!("SET {k}: {e}")),
                        }
                        // Read back an earlier write of this thread.
                        if i % 7 == 0 && i > 0 {
                            let back = format!("t{t}-k{}", i / 2);
                            if let Some(want) = acked.get(&back) {
                                match c.get::<_, Option<String>>(&back) {
                                    Ok(Some(got)) if got == *want => {}
                                    Ok(got) => failed.push(format!("GET {back}: {got:?}")),
                                    Err(e) => failed.push(format!("GET {back}: {e}")),
                                }
                            }
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Lets the load run for `d` (or until it is done), then stops it.
    fn finish_after(self, d: Duration) -> Outcome {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline && self.threads.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.finish()
    }

    fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = BTreeMap::new();
        let mut failed = Vec::new();
        for t in self.threads {
            let (a, f) = t.join().expect("client thread");
            acked.extend(a);
            failed.extend(f);
        }
        (acked, failed)
    }
}

/// Reads every key of `acked` straight from a storage node's directory.
fn missing_in_storage(dir: &Path, acked: &BTreeMap<String, String>) -> Vec<String> {
    let node = kv_node::Node::open(dir, kv_node::NodeOptions::new()).expect("open storage node");
    acked
        .iter()
        .filter(|(k, v)| {
            node.get(k.as_bytes())
                .expect("read")
                .is_none_or(|(got, _)| got.as_ref() != v.as_bytes())
        })
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn a_node_killed_under_load_fails_no_operation_and_catches_up() {
    let mut nodes = Nodes::start([&[], &[], &[]]);
    nodes.wait_connected();
    let addrs = [
        nodes.node(0).addr,
        nodes.node(1).addr,
        nodes.node(0).addr,
        nodes.node(1).addr,
    ];
    let load = Load::start(&addrs, 4_000);
    std::thread::sleep(Duration::from_millis(700));
    nodes.running[2].take().expect("n3").crash();
    std::thread::sleep(Duration::from_millis(1_500));
    nodes.restart(2);
    std::thread::sleep(Duration::from_millis(700));
    let (acked, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed operations: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(
        acked.len() > 500,
        "too little load to mean anything: {}",
        acked.len()
    );
    // Anti-entropy on demand, through the node that was down.
    repair_through(&mut nodes.node(2).client(), Instant::now());
    for (k, v) in acked.iter().step_by(37) {
        for i in 0..3 {
            let got: Option<String> = nodes.node(i).client().get(k).unwrap();
            assert_eq!(got.as_deref(), Some(v.as_str()), "{k} through node {i}");
        }
    }
    nodes.stop_all();
    for i in 0..3 {
        let missing = missing_in_storage(&nodes.storage(i), &acked);
        assert!(
            missing.is_empty(),
            "node {i} lacks {} of {} acknowledged writes, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

#[test]
fn a_hung_node_never_stalls_the_others() {
    let nodes = Nodes::start([&[], &[], &[]]);
    nodes.wait_connected();
    nodes.node(2).signal(libc::SIGSTOP);
    // SIGCONT even when an assertion fails, so the guard's SIGKILL reaps a running process.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = nodes.node(0).client();
        let mut slowest = Duration::ZERO;
        for i in 0..200 {
            let start = Instant::now();
            c.set::<_, _, ()>(format!("h{i}"), i).unwrap();
            let got: Option<i64> = c.get(format!("h{i}")).unwrap();
            assert_eq!(got, Some(i));
            slowest = slowest.max(start.elapsed());
        }
        // The replica timeout is 500 ms: a SET and a GET each wait at most that long for the
        // hung replica, plus scheduling on a loaded machine.
        assert!(
            slowest < Duration::from_secs(3),
            "an operation took {slowest:?}"
        );
    }));
    nodes.node(2).signal(libc::SIGCONT);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Runs `KVSTORE REPAIR` until it compared every range with every replica up (a repair
/// while a peer is still reconnecting skips its ranges).
fn repair_through(c: &mut redis::Connection, t0: Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = kvstore(c, &["REPAIR"]);
        eprintln!("repair after {:?}: {r:?}", t0.elapsed());
        if let Ok(text) = &r
            && !text.contains(" 0 ranges compared")
        {
            return;
        }
        assert!(Instant::now() < deadline, "no complete repair: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kvstore(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<String> {
    redis::cmd("KVSTORE").arg(args).query(c)
}

#[test]
fn a_partition_in_the_transport_heals_with_nothing_lost() {
    let faults: &[&str] = &["--enable-debug-faults"];
    let mut nodes = Nodes::start([faults, faults, faults]);
    nodes.wait_connected();
    let t0 = Instant::now();
    let mut admin: Vec<redis::Connection> = (0..3).map(|i| nodes.node(i).client()).collect();
    // n3 cut off from n1 and n2, both ways, in every node's transport.
    for (i, peers) in [(0, ["n3"].as_slice()), (1, &["n3"]), (2, &["n1", "n2"])] {
        for p in peers {
            kvstore(&mut admin[i], &["FAULT", p, "PARTITION"]).unwrap();
        }
    }
    // A read whose first replicas include n3 waits the replica timeout (500 ms) for it
    // before it asks the next: the load is slow until n3's heartbeats have stopped (3 s).
    let load = Load::start(&[nodes.node(0).addr, nodes.node(1).addr], 2_000);
    let (acked, failed) = load.finish_after(Duration::from_secs(5));
    assert!(failed.is_empty(), "{failed:?}");
    assert!(acked.len() > 50, "too little load: {}", acked.len());
    // Through the cut-off node, a quorum cannot be reached: a clear error, no hang.
    let start = Instant::now();
    let e = admin[2].set::<_, _, ()>("isolated", 1).unwrap_err();
    assert!(e.to_string().contains("replicas needed"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    for c in admin.iter_mut() {
        kvstore(c, &["FAULT", "CLEAR"]).unwrap();
    }
    repair_through(&mut admin[2], t0);
    drop(admin);
    nodes.stop_all();
    for i in 0..3 {
        let missing = missing_in_storage(&nodes.storage(i), &acked);
        assert!(
            missing.is_empty(),
            "node {i} lacks {} writes: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

#[test]
fn fault_commands_need_the_flag_and_check_their_arguments() {
    let nodes = Nodes::start([&["--enable-debug-faults"], &[], &[]]);
    let mut with = nodes.node(0).client();
    let mut without = nodes.node(1).client();
    let e = kvstore(&mut without, &["FAULT", "n1", "PARTITION"]).unwrap_err();
    assert!(e.to_string().contains("unknown subcommand 'FAULT'"), "{e}");
    for bad in [
        &["FAULT"][..],
        &["FAULT", "n2", "DROP", "2"],
        &["FAULT", "n2", "SIDEWAYS"],
    ] {
        assert!(kvstore(&mut with, bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        kvstore(&mut with, &["FAULT", "n2", "DELAY", "5"]).unwrap(),
        "OK n2 delay 5"
    );
    assert_eq!(
        kvstore(&mut with, &["FAULT", "CLEAR"]).unwrap(),
        "OK every fault cleared"
    );
}

/// What the peer sends within `wait` (or until it closes).
fn read_for(stream: &mut std::net::TcpStream, wait: Duration) -> Vec<u8> {
    use std::io::Read as _;
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads until the peer closes the connection; `Err` if it is still open after `wait`.
fn closed_within(stream: &mut std::net::TcpStream, wait: Duration) -> Result<(), String> {
    use std::io::Read as _;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(format!("still open after {wait:?}: {e}")),
        }
    }
}

#[test]
fn bad_peers_on_the_cluster_port_are_refused_and_the_node_serves_on() {
    use kv_net::{Hello, Purpose, opening_bytes, preamble};
    use std::io::Write as _;
    let nodes = Nodes::start([&[], &[], &[]]);
    nodes.wait_connected();
    let cluster_port = std::net::SocketAddr::from(([127, 0, 0, 1], nodes.ports[0] + 10_000));
    let kvstore_id = cluster_id("kvstore");
    let hello = |cluster_id, node: &str| {
        opening_bytes(&Hello {
            cluster_id,
            node_id: node.to_owned(),
            epoch: 0,
            purpose: Purpose::Rpc,
        })
        .unwrap()
        .to_vec()
    };
    let mut old_version = preamble().to_vec();
    old_version[8..12].copy_from_slice(&0u32.to_le_bytes());
    let mut huge_frame = preamble().to_vec();
    huge_frame.extend_from_slice(&u32::MAX.to_le_bytes());
    huge_frame.extend_from_slice(&[0u8; 9]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: n1\r\n\r\n".to_vec()),
        ("an old protocol version", old_version),
        ("a frame claiming 4 GiB", huge_frame),
        ("a node of another cluster", hello(1, "n2")),
    ];
    for (what, bytes) in cases {
        let mut s = std::net::TcpStream::connect(cluster_port).unwrap();
        s.write_all(&bytes).unwrap();
        closed_within(&mut s, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // A node not in the member list but presenting the cluster's id is let in (a joiner
    // connects before it is a member): its handshake is answered and the connection stays
    // open; the replica server answers it only the metadata's `Join` (kv-remote's
    // `meta_round_trip.rs` and kv-meta's `meta_v1.rs` check the refusals per request).
    // (A refusal is a Refuse frame whose reason names the refused node; an acceptance is the
    // server's hello, naming n1, and an Accept frame.)
    let mut intruder = std::net::TcpStream::connect(cluster_port).unwrap();
    intruder.write_all(&hello(kvstore_id, "intruder")).unwrap();
    let answer = read_for(&mut intruder, Duration::from_secs(1));
    assert!(contains(&answer, b"n1"), "no hello from n1: {answer:?}");
    assert!(!contains(&answer, b"intruder"), "refused: {answer:?}");
    // The same bytes from another cluster are refused with a reason (the check above bites).
    let mut stranger = std::net::TcpStream::connect(cluster_port).unwrap();
    stranger.write_all(&hello(1, "intruder")).unwrap();
    let answer = read_for(&mut stranger, Duration::from_secs(1));
    assert!(contains(&answer, b"intruder"), "not refused: {answer:?}");
    drop((intruder, stranger));
    // A connection that says nothing is dropped at the handshake deadline, too.
    let mut silent = std::net::TcpStream::connect(cluster_port).unwrap();
    closed_within(&mut silent, Duration::from_secs(15)).unwrap();
    // The node still serves its peers and its clients.
    let mut c1 = nodes.node(0).client();
    let mut c2 = nodes.node(1).client();
    c2.set::<_, _, ()>("after-bad-peers", "ok").unwrap();
    assert_eq!(
        c1.get::<_, Option<String>>("after-bad-peers")
            .unwrap()
            .as_deref(),
        Some("ok")
    );
}

/// The cluster id a node's handshake carries (`kv-cli/src/node.rs`): FNV-1a over the
/// length-prefixed cluster name alone.
fn cluster_id(name: &str) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let h = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    (name.len() as u32)
        .to_le_bytes()
        .iter()
        .chain(name.as_bytes())
        .fold(h, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

/// The value of `field:` in an `INFO` reply.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_owned)
}

fn info_cluster(c: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("cluster").query(c).unwrap()
}

/// `key=value` of a `kvstore_node_<id>:...` line's value.
fn node_attr(line: &str, key: &str) -> Option<String> {
    line.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Polls `what` every 20 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hints_and_a_catch_up_are_visible_and_drain() {
    let faults: &[&str] = &["--enable-debug-faults"];
    let mut nodes = Nodes::start([faults, &[], &[]]);
    nodes.wait_connected();
    let mut c1 = nodes.node(0).client();
    let mut c2 = nodes.node(1).client();
    // Background repair by default, every 600 s.
    let info = info_cluster(&mut c1);
    assert_eq!(
        info_field(&info, "kvstore_background_repair_interval_s").as_deref(),
        Some("600"),
        "{info}"
    );

    let crashed = Instant::now();
    nodes.running[2].take().expect("n3").crash();
    let writes = 300;
    for i in 0..writes {
        c1.set::<_, _, ()>(format!("while-down-{i}"), i).unwrap();
    }
    // n1 coordinated every write: it holds n3's copies as hints, and says so.
    let held: u64 = poll(Duration::from_secs(30), "n1 shows hints for n3", || {
        let info = info_cluster(&mut c1);
        let line = info_field(&info, "kvstore_node_n3")?;
        let hints: u64 = node_attr(&line, "hints")?.parse().ok()?;
        (hints > 0 && node_attr(&line, "health")? == "unreachable").then_some(hints)
    });
    // (Plus a hint or two from `wait_connected`'s writes, made while nodes were connecting.)
    assert!(held <= writes + 3, "{held}");
    let nodes_line = kvstore(&mut c1, &["NODES"]).unwrap();
    assert!(
        nodes_line.contains(&format!(
            "- Node: n3 (unreachable), {held} hints held for it"
        )),
        "{nodes_line}"
    );
    // Any node sees n3's health; n2 coordinated nothing, so it holds no hints.
    let line2 = poll(Duration::from_secs(30), "n2 sees n3 unreachable", || {
        let line = info_field(&info_cluster(&mut c2), "kvstore_node_n3")?;
        (node_attr(&line, "health")? == "unreachable").then_some(line)
    });
    let n2_holds: u64 = node_attr(&line2, "hints").unwrap().parse().unwrap();
    assert!(n2_holds <= 3, "{line2}");

    // n1's watcher polls every 500 ms: it must have seen n3 down before n3 returns.
    if let Some(rest) = Duration::from_millis(1_500).checked_sub(crashed.elapsed()) {
        std::thread::sleep(rest);
    }
    // n1's messages to n3 are slowed, so each phase of its catch-up lasts a second or more
    // (an import of hints, a digest pass) and is seen by polling.
    kvstore(&mut c1, &["FAULT", "n3", "DELAY", "1000"]).unwrap();
    nodes.restart(2);
    let mut seen = Vec::new();
    poll(Duration::from_secs(90), "n1 catches n3 up", || {
        let text = kvstore(&mut c1, &["NODES"]).ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("- Node: n3"))?
            .to_owned();
        for phase in ["hints", "repair"] {
            if line.contains(&format!("(catching up: {phase})")) && !seen.contains(&phase) {
                seen.push(phase);
            }
        }
        // n1 caught n3 up once already when the cluster started: that earlier result shows
        // until this catch-up runs, so the wait ends only after both phases were seen.
        (seen.len() == 2 && line.contains("last catch-up") && !line.contains("(catching up"))
            .then_some(())
    });
    kvstore(&mut c1, &["FAULT", "CLEAR"]).unwrap();
    assert_eq!(seen, ["hints", "repair"], "the phases seen, in order");
    let info = info_cluster(&mut c1);
    let line = info_field(&info, "kvstore_node_n3").unwrap();
    assert_eq!(node_attr(&line, "hints").as_deref(), Some("0"), "{line}");
    assert_eq!(
        node_attr(&line, "catching_up").as_deref(),
        Some("no"),
        "{line}"
    );
    assert_eq!(
        node_attr(&line, "last_catch_up_ok").as_deref(),
        Some("1"),
        "{line}"
    );
    let handed: u64 = node_attr(&line, "last_catch_up_hints")
        .unwrap()
        .parse()
        .unwrap();
    // Counted are the hints that changed n3: the repairs n3 and n2 run when n3 returns may
    // have brought it those writes first (n1's messages to n3 are slow).
    assert!(handed <= held, "{handed} of {held}: {line}");
    assert!(node_attr(&line, "last_catch_up_time").is_some(), "{line}");
    assert_eq!(
        info_field(&info, "kvstore_hints_pending").as_deref(),
        Some("0")
    );
    // And n3's own storage has every write it missed.
    drop((c1, c2));
    nodes.stop_all();
    let acked: BTreeMap<String, String> = (0..writes)
        .map(|i| (format!("while-down-{i}"), i.to_string()))
        .collect();
    let missing = missing_in_storage(&nodes.storage(2), &acked);
    assert!(missing.is_empty(), "n3 lacks {missing:?}");
}

#[test]
fn background_repair_against_a_hung_peer_stalls_nothing() {
    let every: &[&str] = &["--repair-interval", "1"];
    let nodes = Nodes::start([every, every, every]);
    nodes.wait_connected();
    let mut c1 = nodes.node(0).client();
    let rounds = |c: &mut redis::Connection| -> u64 {
        info_field(&info_cluster(c), "kvstore_background_repair_rounds")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    // Rounds run, and every node shows its own.
    for i in 0..3 {
        let mut c = nodes.node(i).client();
        poll(Duration::from_secs(60), "a repair round", || {
            (rounds(&mut c) >= 1).then_some(())
        });
        let info = info_cluster(&mut c);
        assert_eq!(
            info_field(&info, "kvstore_background_repair_interval_s").as_deref(),
            Some("1")
        );
        assert!(
            info_field(&info, "kvstore_background_repair_last_time").is_some_and(|t| t != "-1"),
            "{info}"
        );
        assert!(
            info_field(&info, "kvstore_background_repair_last_keys_repaired").is_some(),
            "{info}"
        );
    }
    nodes.node(2).signal(libc::SIGSTOP);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let before = rounds(&mut c1);
        let mut slowest = Duration::ZERO;
        let mut i = 0;
        // Client traffic through n1 while its rounds meet the hung n3: two more rounds end
        // (a round is never stuck for good) and no operation waits on them.
        poll(Duration::from_secs(90), "two rounds with n3 hung", || {
            let start = Instant::now();
            c1.set::<_, _, ()>(format!("r{i}"), i).unwrap();
            let got: Option<i64> = c1.get(format!("r{i}")).unwrap();
            assert_eq!(got, Some(i));
            slowest = slowest.max(start.elapsed());
            i += 1;
            (rounds(&mut c1) >= before + 2).then_some(())
        });
        let info = info_cluster(&mut c1);
        eprintln!(
            "{i} SET+GET pairs during the rounds, slowest {slowest:?}; last round's error: {:?}",
            info_field(&info, "kvstore_background_repair_last_error")
        );
        assert!(
            slowest < Duration::from_secs(3),
            "an operation took {slowest:?}"
        );
        // The admin lock is free again soon: an on-demand repair (which takes it) answers.
        let start = Instant::now();
        let r = kvstore(&mut c1, &["REPAIR"]).unwrap();
        assert!(r.starts_with("✓ Repair complete"), "{r}");
        eprintln!("KVSTORE REPAIR with n3 hung: {:?}: {r}", start.elapsed());
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "KVSTORE REPAIR waited {:?}",
            start.elapsed()
        );
    }));
    nodes.node(2).signal(libc::SIGCONT);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn members_listed_in_another_order_refuse_each_other() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let root = common::data_dir();
    let (p1, p2) = (free_port_pair(), free_port_pair());
    let a = format!("n1@127.0.0.1:{p1}");
    let b = format!("n2@127.0.0.1:{p2}");
    let start = |id: &str, port: u16, peers: String| {
        let port = port.to_string();
        let dir = root.path().join(id);
        let args = [
            "--port",
            &port,
            "--node-id",
            id,
            "--peers",
            &peers,
            "--replica-timeout",
            "500",
        ];
        Served::start(&dir, &args)
    };
    let n1 = start("n1", p1, format!("{a},{b}"));
    let n2 = start("n2", p2, format!("{b},{a}"));
    for n in [&n1, &n2] {
        let said = poll(Duration::from_secs(30), "the refusal is logged", || {
            let err = n.stderr_so_far();
            err.lines()
                .find(|l| l.contains("belongs to cluster"))
                .map(str::to_owned)
        });
        assert!(
            said.contains("--peers list") && said.contains("same order"),
            "{said}"
        );
    }
    // Neither can bootstrap the metadata with the other: clients get a clear error, no hang.
    let e = n1.client().set::<_, _, ()>("k", 1).unwrap_err();
    assert!(e.to_string().contains("metadata catching up"), "{e}");
}
