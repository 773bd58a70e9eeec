//! `KVSTORE` administration over the wire: the REPL's texts, and a long `ADDNODE` that
//! leaves the other clients served and shows its progress in `INFO` and `KVSTORE STATS`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use kv_cluster::{ClusterOptions, RateLimit};
use kv_server::ServerOptions;

fn kvstore(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<String> {
    redis::cmd("KVSTORE").arg(args).query(c)
}

#[test]
fn admin_subcommands_answer_the_repl_texts() {
    let server = TestServer::start();
    let mut c = server.client();
    let _: () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2", "c", "3"])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        kvstore(&mut c, &["NODES"]).unwrap(),
        "Cluster has 3 nodes:\n- Node: node1\n- Node: node2\n- Node: node3"
    );
    let ring = kvstore(&mut c, &["ring"]).unwrap();
    assert!(
        ring.starts_with("=== Ring (epoch ")
            && ring.contains(", replication factor 3) ===\nNode node1: 2000 tokens, primary for "),
        "{ring}"
    );
    let stats = kvstore(&mut c, &["STATS"]).unwrap();
    assert!(
        stats.starts_with("=== Data Distribution Statistics ===\n"),
        "{stats}"
    );
    assert!(stats.contains("\nTotal keys in cluster: 3"), "{stats}");
    assert_eq!(
        kvstore(&mut c, &["FAIL", "node2"]).unwrap(),
        "✓ Node node2 is down: writes for it are kept as hints"
    );
    assert!(
        kvstore(&mut c, &["NODES"])
            .unwrap()
            .contains("- Node: node2 (down for ")
    );
    let _: () = redis::cmd("SET").arg("d").arg("4").query(&mut c).unwrap();
    // The write node2 missed is held for it, in KVSTORE NODES and INFO.
    let nodes = kvstore(&mut c, &["NODES"]).unwrap();
    assert!(nodes.contains(", 1 hints held for it"), "{nodes}");
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
    assert!(info.contains("\r\nkvstore_hints_pending:1\r\n"), "{info}");
    assert!(info.contains(",health=down,tokens="), "{info}");
    let recovered = kvstore(&mut c, &["RECOVER", "node2"]).unwrap();
    assert!(
        recovered.starts_with("✓ Node node2 recovered: 1 hinted writes handed off"),
        "{recovered}"
    );
    assert!(
        kvstore(&mut c, &["REPAIR"])
            .unwrap()
            .starts_with("✓ Repair complete: ")
    );
    assert!(
        kvstore(&mut c, &["COMPACT"])
            .unwrap()
            .ends_with("✓ Compacted 3 nodes")
    );
    assert_eq!(
        kvstore(&mut c, &["FLUSH"]).unwrap(),
        "✓ Flushed: every acknowledged write is on disk"
    );
    // The cluster's refusal, named by subcommand and node.
    let err = kvstore(&mut c, &["REMOVENODE", "node3"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("removenode node3: removing a node would leave 2 nodes"),
        "{err}"
    );
    let added = kvstore(&mut c, &["ADDNODE", "node4"]).unwrap();
    assert!(added.ends_with("✓ Node node4 added successfully with minimal redistribution"));
    let removed = kvstore(&mut c, &["REMOVENODE", "node3"]).unwrap();
    assert!(
        removed.starts_with(
            "=== Removing Node: node3 ===\nPerforming smart redistribution before removal...\n"
        ),
        "{removed}"
    );
    assert!(
        removed.ends_with("✓ Node node3 removed successfully"),
        "{removed}"
    );
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&["a", "b", "c", "d"])
        .query(&mut c)
        .unwrap();
    assert_eq!(got.iter().flatten().count(), 4, "no key lost: {got:?}");

    // Errors name the subcommand and the node; wrong arity and unknown subcommands as Redis.
    let err = kvstore(&mut c, &["RECOVER", "nosuch"]).unwrap_err();
    assert!(err.to_string().contains("recover nosuch:"), "{err}");
    let err = kvstore(&mut c, &["ADDNODE"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("wrong number of arguments for 'kvstore|addnode' command"),
        "{err}"
    );
    let err = kvstore(&mut c, &["BOGUS"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown subcommand 'BOGUS'. Try KVSTORE HELP."),
        "{err}"
    );
}

#[test]
fn a_long_addnode_leaves_other_clients_served_and_reports_progress() {
    // 6000 keys streamed at 3000 keys/s: the change takes about two seconds.
    let cluster = ClusterOptions::new()
        .rate_limit(Some(RateLimit::KeysPerSec(3000)))
        .transfer_batch(100);
    let server =
        TestServer::with_cluster(tempfile::tempdir().unwrap(), ServerOptions::new(), cluster);
    let mut c = server.client();
    for chunk in 0..6 {
        let mut cmd = redis::cmd("MSET");
        for i in 0..1000 {
            cmd.arg(format!("key{}", chunk * 1000 + i)).arg("v");
        }
        let _: () = cmd.query(&mut c).unwrap();
    }
    let url = server.url();
    let adder = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let started = Instant::now();
        let report: String = redis::cmd("KVSTORE")
            .arg("ADDNODE")
            .arg("node4")
            .query(&mut c)
            .unwrap();
        (report, started.elapsed())
    });
    let mut saw_progress = false;
    let mut saw_stats = false;
    let mut refused_second = false;
    let mut pings_during = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !adder.is_finished() && Instant::now() < deadline {
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        let v: String = redis::cmd("GET").arg("key42").query(&mut c).unwrap();
        assert_eq!(v, "v");
        pings_during += 1;
        let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
        if info.contains("kvstore_admin_job:ADDNODE node4\r\nkvstore_admin_job_status:running")
            && info.contains("kvstore_change_keys_moved:")
        {
            saw_progress = true;
        }
        // KVSTORE STATS counts every key (slow in a debug build): now and then.
        if pings_during % 10 != 1 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let stats: String = redis::cmd("KVSTORE").arg("STATS").query(&mut c).unwrap();
        if stats.contains("Change in progress: ADDNODE node4 (") {
            saw_stats = true;
        }
        // A second change is refused while one runs (a node that does not exist: should the
        // first change have just finished, this one fails without changing anything).
        if stats.contains("Change in progress") {
            let err = kvstore(&mut c, &["REMOVENODE", "nosuch"]).unwrap_err();
            refused_second |= err
                .to_string()
                .contains("removenode nosuch: another change is running (ADDNODE node4)");
        }
    }
    let (report, took) = adder.join().unwrap();
    assert!(
        took > Duration::from_millis(500),
        "{took:?}: too fast to observe"
    );
    assert!(pings_during > 20, "others served meanwhile: {pings_during}");
    assert!(saw_progress, "INFO cluster showed the change's progress");
    assert!(saw_stats, "KVSTORE STATS showed the change in progress");
    assert!(
        refused_second,
        "a second change was refused while the first ran"
    );
    assert!(
        report.starts_with(
            "=== Adding Node: node4 ===\nPerforming smart redistribution for new node...\n"
        ),
        "{report}"
    );
    assert!(
        report.ends_with("✓ Node node4 added successfully with minimal redistribution"),
        "{report}"
    );
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
    assert!(info.contains("kvstore_members:4\r\n"), "{info}");
    assert!(info.contains("kvstore_admin_job_status:done\r\n"), "{info}");
}

/// An embedder's subcommand, answered by its extension; the built-in ones and unknown ones
/// are unchanged.
#[derive(Debug)]
struct Echo;

impl kv_server::KvstoreExtension for Echo {
    fn handles(&self, sub: &str) -> bool {
        sub == "echo"
    }

    fn call(&self, args: &[bytes::Bytes]) -> Result<Vec<String>, String> {
        match args.len() {
            3 => Ok(vec![
                "echoed".to_owned(),
                String::from_utf8_lossy(&args[2]).into_owned(),
            ]),
            _ => Err("usage: KVSTORE ECHO word".to_owned()),
        }
    }
}

#[test]
fn an_extension_answers_its_own_subcommands_only() {
    let ext: std::sync::Arc<dyn kv_server::KvstoreExtension> = std::sync::Arc::new(Echo);
    let server = TestServer::with_options(ServerOptions::new().kvstore_extension(Some(ext)));
    let mut c = server.client();
    assert_eq!(kvstore(&mut c, &["echo", "hi"]).unwrap(), "echoed\nhi");
    let e = kvstore(&mut c, &["ECHO"]).unwrap_err();
    assert_eq!(e.to_string(), "ResponseError: usage: KVSTORE ECHO word");
    let e = kvstore(&mut c, &["nosuch"]).unwrap_err();
    assert!(e.to_string().contains("unknown subcommand 'nosuch'"), "{e}");
    assert!(
        kvstore(&mut c, &["NODES"])
            .unwrap()
            .starts_with("Cluster has 3 nodes")
    );
}

#[test]
fn without_an_extension_its_subcommand_is_unknown() {
    let server = TestServer::start();
    let mut c = server.client();
    let e = kvstore(&mut c, &["echo", "hi"]).unwrap_err();
    assert!(e.to_string().contains("unknown subcommand 'echo'"), "{e}");
}

/// An extension that refuses clients while a flag is down, and adds `INFO cluster` lines.
#[derive(Debug)]
struct Gate(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl kv_server::KvstoreExtension for Gate {
    fn handles(&self, _: &str) -> bool {
        false
    }

    fn call(&self, _: &[bytes::Bytes]) -> Result<Vec<String>, String> {
        Err("none".to_owned())
    }

    fn refusal(&self) -> Option<String> {
        (!self.0.load(std::sync::atomic::Ordering::Acquire))
            .then(|| "TRYAGAIN not ready".to_owned())
    }

    fn info_cluster(&self) -> Vec<String> {
        vec!["embedder_ready:no".to_owned()]
    }
}

#[test]
fn a_refusing_extension_refuses_data_commands_but_not_the_connections_own() {
    use redis::Commands as _;
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ext: std::sync::Arc<dyn kv_server::KvstoreExtension> =
        std::sync::Arc::new(Gate(std::sync::Arc::clone(&open)));
    let server = TestServer::with_options(ServerOptions::new().kvstore_extension(Some(ext)));
    let mut c = server.client();
    // Plain GET/SET runs and any other data command are refused with the extension's line.
    for e in [
        c.set::<_, _, ()>("k", "v").unwrap_err(),
        c.get::<_, Option<String>>("k").unwrap_err(),
        c.del::<_, u64>("k").unwrap_err(),
    ] {
        assert_eq!(e.code(), Some("TRYAGAIN"), "{e}");
        assert!(e.to_string().contains("not ready"), "{e}");
    }
    // The connection's own commands are answered, INFO with the extension's lines.
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
    assert!(info.contains("\r\nembedder_ready:no\r\n"), "{info}");
    assert!(
        kvstore(&mut c, &["NODES"])
            .unwrap()
            .starts_with("Cluster has 3 nodes")
    );
    // Open: served, and nothing was written while refused.
    open.store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
    c.set::<_, _, ()>("k", "v").unwrap();
    assert_eq!(
        c.get::<_, Option<String>>("k").unwrap().as_deref(),
        Some("v")
    );
}
