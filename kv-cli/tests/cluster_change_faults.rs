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

use common::{ONE_CLUSTER, Served, free_port_pair};
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

/// Polls `what` every 50 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One task line of `KVSTORE CHANGE`: `task:ID FROM->TO ranges:R keys:K finished:F`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskLine {
    id: u32,
    from: String,
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
            let mut finished = false;
            for w in words {
                if let Some(k) = w.strip_prefix("keys:") {
                    keys = k.parse().ok()?;
                } else if let Some(f) = w.strip_prefix("finished:") {
                    finished = f == "1";
                }
            }
            Some(TaskLine {
                id,
                from,
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
}

impl Cluster {
    /// Starts n1..n3, loads [`KEYS`] keys `load-k = k`, starts n4 with `--join` and waits
    /// until it is registered.
    fn start() -> Cluster {
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
            common::member_args(i, &self.ports, &[])
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
            .to_vec()
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
    reads: u64,
    failures: Vec<String>,
    /// Operations sent to the victim that failed (it was down, or catching up).
    victim_failures: u64,
    victim_ops: u64,
}

/// A client thread writing `live-i = i * 7` and reading a loaded key through `targets` in
/// turn, until `stop`; `victim` (an index into `addrs`) is the node the test kills: its
/// failures are counted apart, and its connection is reopened after each failure.
fn start_load(
    addrs: Vec<SocketAddr>,
    targets: Vec<usize>,
    victim: Option<usize>,
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
            let k = (i * 7919) % KEYS as u64;
            let get = c.get::<_, Option<u64>>(format!("load-{k}"));
            let ok_set = set.is_ok();
            if ok_set {
                tally.acked.push((i, i * 7));
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
                    tally.failures.push(format!("SET live-{i} via n{}: {e}", t + 1));
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

/// Reads every loaded key and every acknowledged write through node `i`.
fn read_all_through(addr: SocketAddr, acked: &[(u64, u64)], name: &str) {
    let mut c = poll(Duration::from_secs(30), "serves after the change", || {
        let mut c = connect(addr).ok()?;
        c.get::<_, Option<u64>>("load-0").ok().map(|_| c)
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
    let mut cluster = Cluster::start();
    let leader = cluster.meta(0)["leader"].clone();
    let li: usize = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    let other = (li + 1) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(
        cluster.addrs.clone(),
        vec![0, 1, 2],
        Some(li),
        Arc::clone(&stop),
    );
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let said = kvstore_add(cluster.addrs[other]);
    assert!(said.starts_with("OK change "), "{said}");
    // Killed as soon as its own task has copied something and is not finished.
    let at_kill = poll(
        Duration::from_secs(60),
        "the leader's task streams",
        || {
            let text = kvstore_at(cluster.addrs[other], "CHANGE");
            let mine: Vec<TaskLine> = tasks(&text)
                .into_iter()
                .filter(|t| t.from == leader)
                .collect();
            (text.contains("step:streaming")
                && mine.iter().any(|t| t.keys > 0)
                && mine.iter().any(|t| !t.finished))
            .then_some(mine)
        },
    );
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
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let tally = load.join().unwrap();
    eprintln!(
        "leader {leader} killed; {new_leader} elected {elected:?} after the kill; {leader}'s \
         task resumed {resumed:?} and the change finished {done:?} after its restart; total \
         {:?}; {} writes acknowledged, {} reads; {} of {} operations to the killed node failed",
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
    assert!(tally.victim_failures > 0, "the load reached the killed node");
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
