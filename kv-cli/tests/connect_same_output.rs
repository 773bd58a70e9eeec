//! `kvstore --connect` prints what the in-process REPL prints: the same script run by the
//! REPL on a fresh cluster and by `--connect` against a `kvstore serve` of a fresh cluster
//! with the same options gives the same stdout, byte for byte, the same error lines on stderr
//! and the same exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{EXIT_TIMEOUT, Served, data_dir, scripted};

/// Every command but `benchmark` (in-process only) and `compact` (its per-node lines come in
/// no fixed order, locally as over the wire): data commands, keys found and not, errors, a
/// node failure with hints handed off on recovery, repair, and a node added then removed.
const SCRIPT: &str = r#"
# a comment, and a blank line above
put user:1001 "Alice Johnson"
put user:1002 'Bob Smith'
set tag #blue
put ünï "ça va ✓"
get user:1001
get tag
get ünï
get missing
del user:1002
del user:1002
mput a 1 b 2 c "three words"
mget a b missing c
nodes
stats
ring
fail node2
put during-failure yes
get during-failure
nodes
recover node2
repair
flush
addnode node4
stats
ring
removenode node4
nodes
fail node9
recover node9
removenode node9
frobnicate
put only-a-key
get __kvstore_bench__:1
help
stats
exit
put after-exit never
"#;

/// `nodes` says how long a node has been down in whole seconds: the same state, but not
/// the same second on a slow machine.
fn normalise(out: &str) -> String {
    out.lines()
        .map(|l| match l.find("(down for ") {
            Some(at) => format!("{}(down for Ns)", &l[..at]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn connect_prints_what_the_in_process_repl_prints() {
    let (local_dir, served_dir) = (data_dir(), data_dir());
    let local = scripted(
        &[
            "--interactive",
            "--data-dir",
            local_dir.path().to_str().unwrap(),
        ],
        &[],
        SCRIPT,
    );
    let mut server = Served::start(served_dir.path(), &[]);
    let addr = server.addr.to_string();
    let remote = scripted(&["--connect", &addr], &[], SCRIPT);

    assert!(
        local.stdout.contains("✓ Node node4 removed successfully"),
        "the script did not run as expected: {local:?}"
    );
    assert_eq!(normalise(&remote.stdout), normalise(&local.stdout));
    assert_eq!(remote.stderr, local.stderr);
    // `fail node9`, ... failed: both exit non-zero.
    assert_eq!(remote.status.code(), Some(1), "{remote:?}");
    assert_eq!(local.status.code(), Some(1), "{local:?}");
    assert_eq!(
        remote.stderr.lines().count(),
        6,
        "one line per failed command: {}",
        remote.stderr
    );

    // The writes went to the server: another client reads them there.
    let mut c = server.client();
    let v: Option<String> = redis::cmd("GET").arg("ünï").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("ça va ✓"));
    let v: Option<String> = redis::cmd("GET").arg("after-exit").query(&mut c).unwrap();
    assert_eq!(v, None, "a command after exit ran");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
}

#[test]
fn a_script_without_failures_exits_0_and_sees_other_clients_writes() {
    let dir = data_dir();
    let mut server = Served::start(dir.path(), &[]);
    let mut c = server.client();
    let _: () = redis::cmd("SET")
        .arg("from-redis")
        .arg("hello there")
        .query(&mut c)
        .unwrap();
    let addr = server.addr.to_string();
    let remote = scripted(
        &["--connect", &addr],
        &[],
        "get from-redis\nput k v\ndel from-redis\nmget k from-redis\n",
    );
    assert!(remote.status.success(), "{remote:?}");
    assert_eq!(remote.stderr, "");
    let body: Vec<&str> = remote.stdout.lines().skip(3).collect();
    assert_eq!(
        body,
        [
            "✓ Retrieved: from-redis -> hello there",
            "✓ Stored: k -> v",
            "✓ Deleted: from-redis",
            "✓ Retrieved: k -> v",
            "✗ Key not found: from-redis",
        ]
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
}

#[test]
fn benchmark_over_connect_is_a_clear_error_and_compact_runs() {
    let dir = data_dir();
    let mut server = Served::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let remote = scripted(
        &["--connect", &addr],
        &[],
        "put k v\nbenchmark 1000\ncompact\nget k\n",
    );
    assert_eq!(remote.status.code(), Some(1), "{remote:?}");
    assert_eq!(
        remote.stderr,
        "✗ benchmark is not available over --connect: it measures the cluster in this process; \
         measure a server with redis-benchmark (see the README)\n"
    );
    let mut compacted: Vec<&str> = remote
        .stdout
        .lines()
        .filter(|l| l.contains("segments compacted"))
        .collect();
    compacted.sort_unstable();
    assert_eq!(
        compacted,
        ["node1", "node2", "node3"]
            .map(|n| format!(
                "  {n}: 0 segments compacted, 0 deleted, 0 records copied, 0 tombstones purged"
            ))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert!(
        remote.stdout.contains("✓ Compacted 3 nodes\n"),
        "{remote:?}"
    );
    assert!(
        remote.stdout.ends_with("✓ Retrieved: k -> v\n"),
        "{remote:?}"
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
}
