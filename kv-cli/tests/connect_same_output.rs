//! `kvstore --connect` prints what the in-process REPL prints: the same script run by the
//! REPL on a fresh cluster and by `--connect` against a `kvstore serve` of a fresh cluster
//! with the same options gives the same stdout, byte for byte, the same error lines on stderr
//! and the same exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{EXIT_TIMEOUT, Served, data_dir, scripted};

/// Every command but `benchmark` (in-process only), `compact` (its per-node lines come in
/// no fixed order, locally as over the wire) and `ttl` of a key that expires (the
/// milliseconds left differ from run to run: see the test below): data commands, keys with
/// and without a TTL, keys found and not, errors, a
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
put session:abc active --ttl 1h
put later x --ttl=2h
ttl user:1001
ttl missing
persist later
persist later
persist missing
ttl later
put k v --ttl 0
put --ttl 5m k v
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
    // The keys with a TTL are counted on both sides (the server answers its own count).
    assert!(
        local
            .stdout
            .contains("Keys with a TTL per node: node1 1, node2 1, node3 1\n"),
        "{local:?}"
    );
    assert_eq!(normalise(&remote.stdout), normalise(&local.stdout));
    assert_eq!(remote.stderr, local.stderr);
    // `fail node9`, ... failed: both exit non-zero.
    assert_eq!(remote.status.code(), Some(1), "{remote:?}");
    assert_eq!(local.status.code(), Some(1), "{local:?}");
    assert_eq!(
        remote.stderr.lines().count(),
        8,
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

/// The milliseconds of a `✓ TTL of <key>: <human> (<ms> ms)` line, and its human part.
fn ttl_line(out: &str, key: &str) -> (String, u64) {
    let prefix = format!("✓ TTL of {key}: ");
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no TTL line for {key} in:\n{out}"));
    let (human, ms) = line.rsplit_once(" (").unwrap();
    (
        human.to_owned(),
        ms.trim_end_matches(" ms)").parse().unwrap(),
    )
}

#[test]
fn ttl_over_connect_reads_as_in_process_and_sees_redis_clients_expiries() {
    let (local_dir, served_dir) = (data_dir(), data_dir());
    let script = "put s v --ttl 1h\nttl s\n";
    let local = scripted(
        &[
            "--interactive",
            "--data-dir",
            local_dir.path().to_str().unwrap(),
        ],
        &[],
        script,
    );
    let mut server = Served::start(served_dir.path(), &[]);
    let mut c = server.client();
    // A TTL set by another client (`SET ... EX`) is the one `ttl` shows.
    let _: () = redis::cmd("SET")
        .arg("from-redis")
        .arg("v")
        .arg("EX")
        .arg(120)
        .query(&mut c)
        .unwrap();
    let addr = server.addr.to_string();
    let remote = scripted(
        &["--connect", &addr],
        &[],
        &format!("{script}ttl from-redis\npersist from-redis\nttl from-redis\n"),
    );
    assert!(
        local.status.success() && remote.status.success(),
        "{remote:?}"
    );
    for out in [&local.stdout, &remote.stdout] {
        assert!(out.contains("✓ Stored: s -> v (expires in 1h)\n"), "{out}");
        let (human, ms) = ttl_line(out, "s");
        assert!((3_540_000..=3_600_000).contains(&ms), "{out}");
        // Read in the same millisecond as written, or later.
        assert!(human == "1h" || human.starts_with("59m"), "{out}");
    }
    let (_, ms) = ttl_line(&remote.stdout, "from-redis");
    assert!((60_000..=120_000).contains(&ms), "{remote:?}");
    assert!(
        remote.stdout.ends_with(
            "✓ Persisted: from-redis (its expiry is removed: it no longer expires)\n\
                        ✓ TTL of from-redis: no expiry\n"
        ),
        "{remote:?}"
    );
    // The write with --ttl went to the server with its expiry.
    let pttl: i64 = redis::cmd("PTTL").arg("s").query(&mut c).unwrap();
    assert!((3_000_000..=3_600_000).contains(&pttl), "{pttl}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
}
