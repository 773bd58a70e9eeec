//! Deaths during a membership change between processes (issue 23, membership.md §3.6), under
//! client load: a fourth process joins a three-process cluster holding [`KEYS`] keys and
//! `KVSTORE ADDNODE n4` runs while a client thread writes and reads through the members; one
//! participant is SIGKILLed while the tasks stream and restarted with its data directory.
//! At most four server processes run at once; every one is killed when its guard drops, also
//! when a test fails.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, free_port_pair, poll};
use redis::Commands as _;

/// Keys loaded before the change (debug build: each test stays near a minute).
const KEYS: usize = 20_000;

/// `KVSTORE sub` through `addr`, as `field -> value` (repeated fields: the last one).
fn fields_at(addr: SocketAddr, sub: &str) -> BTreeMap<String, String> {
    let text = kvstore_at(addr, sub);
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `KVSTORE sub` through `addr`, as text ("" if the node does not answer).
fn kvstore_at(addr: SocketAddr, sub: &str) -> String {
    let Ok(mut c) = connect(addr) else {
        return String::new();
    };
    redis::cmd("KVSTORE")
        .arg(sub)
        .query::<String>(&mut c)
        .unwrap_or_default()
}

/// A client of `addr` whose operations time out (a missing reply fails, never hangs).
fn connect(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(format!("redis://{addr}/"))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(20)))?;
    c.set_write_timeout(Some(Duration::from_secs(20)))?;
    Ok(c)
}

/// One task line of `KVSTORE CHANGE`: `task:ID FROM->TO ranges:R keys:K finished:F`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskLine {
    id: u32,
    from: String,
    ranges: u64,
    keys: u64,
    finished: bool,
}

fn tasks(change: &str) -> Vec<TaskLine> {
    change
        .lines()
        .filter_map(|l| l.strip_prefix("task:"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let id = words.next()?.parse().ok()?;
            let from = words.next()?.split_once("->")?.0.to_owned();
            let mut keys = 0;
            let mut ranges = 0;
            let mut finished = false;
            for w in words {
                if let Some(r) = w.strip_prefix("ranges:") {
                    ranges = r.parse().ok()?;
                } else if let Some(k) = w.strip_prefix("keys:") {
                    keys = k.parse().ok()?;
                } else if let Some(f) = w.strip_prefix("finished:") {
                    finished = f == "1";
                }
            }
            Some(TaskLine {
                id,
                from,
                ranges,
                keys,
                finished,
            })
        })
        .collect()
}

/// The cluster of a test: n1..n3 listed, n4 joining, each restartable with its data
/// directory and ports.
struct Cluster {
    _root: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    ports: Vec<u16>,
    port4: u16,
    /// n1..n4; `None` while one is down.
    nodes: Vec<Option<Served>>,
    /// Client addresses of n1..n4 (fixed: restarts keep their ports).
    addrs: Vec<SocketAddr>,
    /// Flags every node is started with.
    extra: Vec<String>,
}

impl Cluster {
    /// Starts n1..n3, loads [`KEYS`] keys `load-k = k`, starts n4 with `--join` and waits
    /// until it is registered; every node with the flags `extra`.
    fn start(extra: &[&str]) -> Cluster {
        let root = common::data_dir();
        let dirs: Vec<PathBuf> = (1..=4).map(|i| root.path().join(format!("n{i}"))).collect();
        let ports: Vec<u16> = (0..3).map(|_| free_port_pair()).collect();
        let port4 = free_port_pair();
        let mut cluster = Cluster {
            _root: root,
            dirs,
            ports,
            port4,
            nodes: Vec::new(),
            addrs: Vec::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for i in 0..3 {
            let n = cluster.spawn(i);
            cluster.addrs.push(n.addr);
            cluster.nodes.push(Some(n));
        }
        let mut c1 = poll(Duration::from_secs(30), "n1 serves clients", || {
            let mut c = connect(cluster.addrs[0]).ok()?;
            c.set::<_, _, ()>("probe", 1).ok().map(|()| c)
        });
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.set(format!("load-{k}"), k).ignore();
            }
            pipe.query::<()>(&mut c1).unwrap();
        }
        let n4 = cluster.spawn(3);
        cluster.addrs.push(n4.addr);
        cluster.nodes.push(Some(n4));
        poll(Duration::from_secs(20), "n4 registered", || {
            cluster.meta(0)["members"]
                .contains("n4=registered")
                .then_some(())
        });
        cluster
    }

    /// Starts node `i` (0-based) with its data directory and ports.
    fn spawn(&self, i: usize) -> Served {
        let args = if i < 3 {
            common::member_args(i, &self.ports, &self.extra)
        } else {
            let seed = format!("n1@127.0.0.1:{}", self.ports[0]);
            [
                "--port",
                &self.port4.to_string(),
                "--node-id",
                "n4",
                "--join",
                &seed,
                "--replica-timeout",
                "500",
            ]
            .map(str::to_owned)
            .into_iter()
            .chain(self.extra.iter().cloned())
            .collect()
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Served::start(&self.dirs[i], &args)
    }

    fn meta(&self, i: usize) -> BTreeMap<String, String> {
        fields_at(self.addrs[i], "META")
    }

    /// SIGKILLs node `i`; returns what it printed on stderr.
    fn kill(&mut self, i: usize) -> String {
        let n = self.nodes[i].take().unwrap();
        let said = n.stderr_so_far();
        n.crash();
        said
    }

    fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none());
        self.nodes[i] = Some(self.spawn(i));
    }

    /// Every node's stderr so far, for a failure's message.
    fn stderr(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.as_ref()
                    .map(|n| format!("--- n{} stderr:\n{}", i + 1, n.stderr_so_far()))
            })
            .collect()
    }
}

/// What the client load saw: acknowledged writes (index, value), reads that returned the
/// loaded value, and failures, split by whether the operation went to the node the test
/// kills.
#[derive(Default, Debug)]
struct Tally {
    acked: Vec<(u64, u64)>,
    /// When each acknowledged write was acknowledged.
    acked_at: Vec<Instant>,
    reads: u64,
    failures: Vec<String>,
    /// Operations sent to the victim that failed (it was down, or catching up).
    victim_failures: u64,
    victim_ops: u64,
}

/// A client thread writing `live-i = i * 7` and reading one of the first `read_span` loaded
/// keys through `targets` in turn, until `stop`; `victim` (an index into `addrs`) is the node
/// the test kills: its failures are counted apart, and its connection is reopened after each
/// failure.
fn start_load(
    addrs: Vec<SocketAddr>,
    targets: Vec<usize>,
    victim: Option<usize>,
    read_span: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let mut tally = Tally::default();
        let mut conns: Vec<Option<redis::Connection>> = addrs.iter().map(|_| None).collect();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let t = targets[usize::try_from(i).unwrap() % targets.len()];
            let to_victim = Some(t) == victim;
            if conns[t].is_none() {
                match connect(addrs[t]) {
                    Ok(c) => conns[t] = Some(c),
                    Err(e) => {
                        if to_victim {
                            tally.victim_ops += 1;
                            tally.victim_failures += 1;
                            // Not a busy loop against a dead port.
                            std::thread::sleep(Duration::from_millis(20));
                        } else {
                            tally.failures.push(format!("connect n{}: {e}", t + 1));
                        }
                        i += 1;
                        continue;
                    }
                }
            }
            let c = conns[t].as_mut().unwrap();
            let set = c.set::<_, _, ()>(format!("live-{i}"), i * 7);
            let k = (i * 7919) % read_span;
            let get = c.get::<_, Option<u64>>(format!("load-{k}"));
            let ok_set = set.is_ok();
            if ok_set {
                tally.acked.push((i, i * 7));
                tally.acked_at.push(Instant::now());
            }
            let ok_get = matches!(get, Ok(Some(v)) if v == k);
            if ok_get {
                tally.reads += 1;
            }
            if to_victim {
                tally.victim_ops += 2;
                let failed = u64::from(!ok_set) + u64::from(!ok_get);
                tally.victim_failures += failed;
                if failed > 0 {
                    conns[t] = None;
                }
            } else {
                if let Err(e) = set {
                    tally
                        .failures
                        .push(format!("SET live-{i} via n{}: {e}", t + 1));
                }
                if !ok_get {
                    tally
                        .failures
                        .push(format!("GET load-{k} via n{}: {get:?}", t + 1));
                }
            }
            i += 1;
        }
        tally
    })
}

/// Reads every loaded key and every acknowledged write through the node at `addr`.
fn read_all_through(addr: SocketAddr, acked: &[(u64, u64)], name: &str) {
    // A node just restarted answers once it reaches its peers: wait for a whole batch.
    let mut c = poll(Duration::from_secs(30), "serves after the change", || {
        let mut c = connect(addr).ok()?;
        let mut pipe = redis::pipe();
        for k in 0..1000 {
            pipe.get(format!("load-{k}"));
        }
        pipe.query::<Vec<Option<u64>>>(&mut c).ok().map(|_| c)
    });
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.get(format!("load-{k}"));
        }
        let got: Vec<Option<usize>> = pipe.query(&mut c).unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(v, Some(*k), "load-{k} through {name}");
        }
    }
    for chunk in acked.chunks(1000) {
        let mut pipe = redis::pipe();
        for (i, _) in chunk {
            pipe.get(format!("live-{i}"));
        }
        let got: Vec<Option<u64>> = pipe.query(&mut c).unwrap();
        for ((i, v), got) in chunk.iter().zip(got) {
            assert_eq!(got, Some(*v), "live-{i} through {name}");
        }
    }
}

/// The metadata leader, the source of a task, is SIGKILLed while its task streams, with
/// client load through every member (the operations sent to the killed node counted apart):
/// a new leader is elected by the two left, the killed node is restarted with its data
/// directory, and its task resumes at once (regression: it used to start copying only
/// ~75 s after the restart) and the change finishes; no operation through the others failed
/// and every acknowledged write is read back through every node.
#[test]
fn the_leader_killed_mid_stream_under_load_resumes_promptly_after_its_restart() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start(&[]);
    let leader = cluster.meta(0)["leader"].clone();
    let li: usize = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    let other = (li + 1) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(
        cluster.addrs.clone(),
        vec![0, 1, 2],
        Some(li),
        KEYS as u64,
        Arc::clone(&stop),
    );
    std::thread::sleep(Duration::from_millis(300));

    let applied_before = applied_index(cluster.addrs[other]);
    let started = Instant::now();
    let said = kvstore_add(cluster.addrs[other]);
    assert!(said.starts_with("OK change "), "{said}");
    // Killed as soon as its own task has copied something and is not finished.
    let (at_kill, ranges) = poll(Duration::from_secs(60), "the leader's task streams", || {
        let text = kvstore_at(cluster.addrs[other], "CHANGE");
        let all = tasks(&text);
        let ranges: u64 = all.iter().map(|t| t.ranges).sum();
        let mine: Vec<TaskLine> = all.into_iter().filter(|t| t.from == leader).collect();
        (text.contains("step:streaming")
            && mine.iter().any(|t| t.keys > 0)
            && mine.iter().any(|t| !t.finished))
        .then_some((mine, ranges))
    });
    let victim_log = cluster.kill(li);
    let killed = Instant::now();
    eprintln!(
        "{:?}: killed {leader} (its tasks {at_kill:?})",
        started.elapsed()
    );
    let new_leader = poll(Duration::from_secs(30), "a new leader", || {
        let view = cluster.meta(other);
        let l = view.get("leader")?;
        (!l.is_empty() && *l != leader).then(|| l.clone())
    });
    let elected = killed.elapsed();
    assert_ne!(
        fields_at(cluster.addrs[other], "CHANGE")["change"],
        "none",
        "the killed node's task waits for it"
    );
    std::thread::sleep(Duration::from_secs(2));
    cluster.restart(li);
    let restarted = Instant::now();
    eprintln!("{:?}: restarted {leader}", started.elapsed());
    // Its task moves again: more keys than at the kill, or finished.
    let mut resumed = None;
    poll(
        Duration::from_secs(120),
        "the change finishes after the restart",
        || {
            let text = kvstore_at(cluster.addrs[other], "CHANGE");
            if resumed.is_none() {
                let now: Vec<TaskLine> = tasks(&text)
                    .into_iter()
                    .filter(|t| t.from == leader)
                    .collect();
                let moved = now.iter().any(|t| {
                    at_kill
                        .iter()
                        .find(|k| k.id == t.id)
                        .is_some_and(|k| !k.finished && (t.finished || t.keys > k.keys))
                });
                if moved {
                    resumed = Some(restarted.elapsed());
                    eprintln!("{:?}: {leader}'s task resumed", started.elapsed());
                }
            }
            text.starts_with("change:none").then_some(())
        },
    );
    let done = restarted.elapsed();
    let entries = applied_index(cluster.addrs[other]) - applied_before;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let tally = load.join().unwrap();
    eprintln!(
        "leader {leader} killed; {new_leader} elected {elected:?} after the kill; {leader}'s \
         task resumed {resumed:?} and the change finished {done:?} after its restart; total \
         {:?}; {entries} metadata entries for {ranges} ranges; {} writes acknowledged, {} reads; \
         {} of {} operations to the killed node failed",
        started.elapsed(),
        tally.acked.len(),
        tally.reads,
        tally.victim_failures,
        tally.victim_ops
    );
    assert!(
        tally.failures.is_empty(),
        "{:?}\n{}",
        &tally.failures[..tally.failures.len().min(5)],
        cluster.stderr()
    );
    assert!(tally.acked.len() > 50, "the load ran through the change");
    assert!(
        tally.victim_failures > 0,
        "the load reached the killed node"
    );
    // One `Progress` entry per range end, the acknowledgements and the steps, and at most
    // one task's ranges reported twice (the killed source's last stream, then its resume):
    // streams sent again must not fill the metadata log.
    assert!(
        entries <= 2 * ranges + 100,
        "{entries} metadata entries for a change of {ranges} ranges"
    );
    // Regression: a source streamed a task again every tick until its progress was
    // committed, each stream queueing one more report per range on the destination, so the
    // restarted source's reports waited behind thousands of duplicates (~75 s; 24 to 47 s
    // after the restart in this test before the fix).
    assert!(
        done < Duration::from_secs(30),
        "the change finished {done:?} after the restart (resumed after {resumed:?})\n\
         --- victim before the kill:\n{victim_log}\n{}",
        cluster.stderr()
    );
    for (i, addr) in cluster.addrs.clone().into_iter().enumerate() {
        assert!(fields_at(addr, "META")["members"].contains("n4=normal"));
        read_all_through(addr, &tally.acked, &format!("n{}", i + 1));
    }
}

/// The metadata raft's applied index on the node at `addr`.
fn applied_index(addr: SocketAddr) -> u64 {
    fields_at(addr, "META")["applied_index"].parse().unwrap()
}

/// `KVSTORE ADDNODE n4` through `addr`: its answer, or the error's text.
fn kvstore_add(addr: SocketAddr) -> String {
    let mut c = connect(addr).unwrap();
    match redis::cmd("KVSTORE")
        .arg("ADDNODE")
        .arg("n4")
        .query::<String>(&mut c)
    {
        Ok(s) => s,
        Err(e) => e.to_string(),
    }
}

/// The joiner n4, the destination of every task, is SIGKILLed while the tasks stream, under
/// client load through n1..n3, and restarted with its data directory: the change completes,
/// no operation through n1..n3 failed, and, read from each node's own storage once every
/// process stopped, every loaded key is on every replica of its key in the final ring (the
/// ring from the metadata a node stored, not one the test computes) and every write
/// acknowledged during the change on at least the `W` = 2 its quorum promised; then, every
/// process restarted, every acknowledged write is read back through every node, n4 included.
#[test]
fn the_joiner_killed_mid_stream_under_load_completes_with_the_loaded_keys_on_every_replica() {
    joiner_killed_mid_stream(Strict::LoadedKeys);
}

/// As above, and every write acknowledged *during* the change on every replica of its key
/// too: issue 23's claim. Before the write path followed a write up after `W` answered, in
/// seven runs (debug build) 1, 0, 652, 0, 191, 0 and 2 (key, replica) pairs were missing:
/// all on n4 and acknowledged in the seconds after its restart, except the last run's 2, on
/// n1, acknowledged as the change finished; none of them in any node's hint store (the
/// answers still outstanding once `W` answered were abandoned, and a joiner's catch-up
/// repairs nothing: it held no range). Now a replica that fails or stays silent after `W`
/// was met gets a hint (kv-cluster `follow_up.rs`), handed off when it is back. A failure
/// lists each missing pair with when it was acknowledged and which hint stores hold it.
#[test]
fn the_joiner_killed_mid_stream_under_load_leaves_every_acknowledged_write_on_every_replica() {
    joiner_killed_mid_stream(Strict::EveryWrite);
}

/// Which acknowledged writes [`joiner_killed_mid_stream`] requires on every replica (the
/// others on at least two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strict {
    LoadedKeys,
    EveryWrite,
}

fn joiner_killed_mid_stream(strict: Strict) {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start(&[]);
    let via = 0;
    let stop = Arc::new(AtomicBool::new(false));
    // Reads touch only the first 100 loaded keys: a quorum read repairs a stale replica it
    // meets, and the check below is of what the change itself left on each replica.
    let load = start_load(
        cluster.addrs.clone(),
        vec![0, 1, 2],
        None,
        100,
        Arc::clone(&stop),
    );
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let said = kvstore_add(cluster.addrs[via]);
    assert!(said.starts_with("OK change "), "{said}");
    let at_kill = poll(Duration::from_secs(60), "the tasks stream", || {
        let text = kvstore_at(cluster.addrs[via], "CHANGE");
        let all = tasks(&text);
        (text.contains("step:streaming")
            && all.iter().any(|t| t.keys > 0)
            && all.iter().any(|t| !t.finished))
        .then_some(all)
    });
    let victim_log = cluster.kill(3);
    let killed = Instant::now();
    eprintln!("{:?}: killed n4 (tasks {at_kill:?})", started.elapsed());
    // The change waits for n4: its tasks cannot finish without it.
    std::thread::sleep(Duration::from_secs(3));
    let view = kvstore_at(cluster.addrs[via], "CHANGE");
    assert!(view.contains("step:streaming"), "{view}");
    cluster.restart(3);
    let restarted = Instant::now();
    eprintln!("{:?}: restarted n4", started.elapsed());
    poll(
        Duration::from_secs(120),
        "the change finishes after n4's restart",
        || {
            kvstore_at(cluster.addrs[via], "CHANGE")
                .starts_with("change:none")
                .then_some(())
        },
    );
    let done = restarted.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let tally = load.join().unwrap();
    eprintln!(
        "n4 killed {:?} after ADDNODE, down {:?}; the change finished {done:?} after its \
         restart; total {:?}; {} writes acknowledged, {} reads, {} failures",
        killed - started,
        restarted - killed,
        started.elapsed(),
        tally.acked.len(),
        tally.reads,
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{:?}\n--- n4 before the kill:\n{victim_log}\n{}",
        &tally.failures[..tally.failures.len().min(5)],
        cluster.stderr()
    );
    assert!(tally.acked.len() > 50, "the load ran through the change");
    for addr in &cluster.addrs {
        assert!(fields_at(*addr, "META")["members"].contains("n4=normal"));
    }

    // Every process stops (SIGTERM: each closes its storage), then each node's storage is
    // read directly: every key on each replica of the final ring. Before any read through
    // the nodes, whose read repair could fill a replica the change left short.
    for n in cluster.nodes.iter_mut().flatten() {
        n.signal(libc::SIGTERM);
        n.wait_exit(common::EXIT_TIMEOUT);
    }
    let meta = stored_meta(&cluster.dirs[0], 1, "n1");
    assert!(meta.change.is_none(), "n1 stored the finished change");
    let ring = meta.ring().unwrap();
    let rf = meta.replication_factor as usize;
    let stores: BTreeMap<String, kv_node::Node> = (1..=4)
        .map(|i| {
            let id = format!("n{i}");
            let dir = cluster.dirs[i - 1].join(&id);
            let node = kv_node::Node::open(&dir, kv_node::NodeOptions::new())
                .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()));
            (id, node)
        })
        .collect();
    let expected = (0..KEYS as u64)
        .map(|k| (format!("load-{k}"), k))
        .chain(tally.acked.iter().map(|&(i, v)| (format!("live-{i}"), v)));
    // Hints each node kept for another (`<data-dir>/<holder>/hints/<target>/`), to say where a
    // write missing on a replica went.
    let hints: Vec<(String, String, kv_node::Node)> = (1..=4)
        .flat_map(|h| (1..=4).map(move |t| (format!("n{h}"), format!("n{t}"))))
        .filter_map(|(holder, target)| {
            let h: usize = holder[1..].parse().ok()?;
            let dir = cluster.dirs[h - 1]
                .join(&holder)
                .join("hints")
                .join(&target);
            // Only the stores that exist: opening creates one.
            dir.exists().then_some(())?;
            let node = kv_node::Node::open(&dir, kv_node::NodeOptions::new()).unwrap();
            Some((holder, target, node))
        })
        .collect();
    let (mut checked, mut on_n4, mut short) = (0u64, 0u64, 0u64);
    let mut missing: Vec<String> = Vec::new();
    let when: BTreeMap<String, Instant> = tally
        .acked
        .iter()
        .zip(&tally.acked_at)
        .map(|((i, _), at)| (format!("live-{i}"), *at))
        .collect();
    for (key, value) in expected {
        let replicas = ring.replicas_for_key(key.as_bytes(), rf).unwrap();
        assert_eq!(replicas.len(), 3);
        let on = |node: &kv_ring::NodeId| {
            let got = stores[node.as_str()].get(key.as_bytes()).unwrap();
            got.map(|(v, _)| v) == Some(bytes::Bytes::from(value.to_string()))
        };
        let held = replicas.iter().filter(|n| on(n)).count();
        assert!(
            held >= 2,
            "{key} on {held} of its replicas {:?}",
            replicas.to_vec()
        );
        let every = key.starts_with("load-") || strict == Strict::EveryWrite;
        if !every {
            short += u64::from(held < 3);
            checked += 3;
            on_n4 += u64::from(replicas.contains("n4"));
            continue;
        }
        for node in replicas.iter() {
            if !on(node) {
                let at = when.get(&key).map(|t| {
                    let (t, s, k, r) = (*t, started, killed, restarted);
                    format!(
                        "acked {:?} after ADDNODE (kill at {:?}, restart at {:?})",
                        t - s,
                        k - s,
                        r - s
                    )
                });
                let hinted: Vec<&str> = hints
                    .iter()
                    .filter(|(_, t, h)| {
                        t == node.as_str() && h.get(key.as_bytes()).ok().flatten().is_some()
                    })
                    .map(|(holder, _, _)| holder.as_str())
                    .collect();
                missing.push(format!(
                    "{key} on {node}: {at:?}, in the hints of {hinted:?}"
                ));
            }
            checked += 1;
            on_n4 += u64::from(node.as_str() == "n4");
        }
    }
    assert!(
        missing.is_empty(),
        "{} (key, replica) pairs missing of {checked}, e.g. {:?} .. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)],
        &missing[missing.len().saturating_sub(5)..]
    );
    eprintln!(
        "{checked} (key, replica) pairs read from the nodes' storage, {on_n4} of them on n4; \
         {short} writes of the change on 2 of their 3 replicas"
    );
    // n4 is a replica of 3/4 of the keys: a quarter of the pairs (more than a fifth).
    assert!(on_n4 * 5 > checked, "{on_n4} of {checked} pairs on n4");
    drop(stores);

    // Restarted, every node serves every acknowledged write, n4 included.
    for i in 0..4 {
        drop(cluster.nodes[i].take());
        cluster.restart(i);
    }
    for (i, addr) in cluster.addrs.clone().into_iter().enumerate() {
        read_all_through(addr, &tally.acked, &format!("n{}", i + 1));
    }
}

/// A transport that reaches no one: the stored metadata of a stopped node is read without
/// its peers.
struct NoPeers;

impl kv_meta::MetaTransport for NoPeers {
    fn call(
        &self,
        to: &kv_meta::MetaPeer,
        _body: bytes::Bytes,
        _timeout: Duration,
    ) -> kv_meta::BoxFuture<Result<bytes::Bytes, kv_meta::TransportError>> {
        let peer = to.id.clone();
        Box::pin(async move {
            Err(kv_meta::TransportError::Unreachable {
                peer,
                reason: "the test reads stored metadata".to_owned(),
            })
        })
    }
}

/// The metadata node `id` (raft id `raft_id`) stored in `dir`, replayed offline.
fn stored_meta(dir: &std::path::Path, raft_id: u64, id: &str) -> kv_meta::ClusterMeta {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let raft = kv_meta::MetaRaft::open(
            dir,
            raft_id,
            id,
            kv_meta::meta_config("kvstore"),
            Arc::new(NoPeers),
        )
        .await
        .unwrap();
        let meta = raft.watch().borrow().meta.clone();
        let _ = raft.shutdown().await;
        meta
    })
}
