//! End-to-end tests of the built `kvstore` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;

fn kvstore() -> Command {
    let mut c = Command::cargo_bin("kvstore").unwrap();
    c.env("NO_COLOR", "1");
    c
}

/// Runs a scripted REPL session; returns (stdout, stderr, success).
fn session(
    dir: &std::path::Path,
    input: impl AsRef<[u8]>,
    extra: &[&str],
) -> (String, String, bool) {
    let mut child = kvstore()
        .arg("--interactive")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.as_ref().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Asserts that `lines` appear in `out` in this order.
#[track_caller]
fn assert_lines_in_order(out: &str, lines: &[&str]) {
    let mut rest = out.lines();
    for want in lines {
        assert!(
            rest.any(|l| l.trim_end() == *want),
            "missing (in order) {want:?} in:\n{out}"
        );
    }
}

#[test]
fn the_seed_session_works_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err, ok) = session(
        dir.path(),
        "put user:1001 \"Alice Johnson\"\nput user:1002 \"Bob Smith\"\nget user:1001\nnodes\nstats\naddnode node4\nstats\nbenchmark 1000\nexit\n",
        &[],
    );
    assert!(ok, "{err}");
    assert_lines_in_order(
        &out,
        &[
            "=== INTERACTIVE DEMO MODE ===",
            "✓ Stored: user:1001 -> Alice Johnson",
            "✓ Stored: user:1002 -> Bob Smith",
            "✓ Retrieved: user:1001 -> Alice Johnson",
            "Cluster has 3 nodes:",
            "- Node: node1",
            "- Node: node2",
            "- Node: node3",
            "=== Data Distribution Statistics ===",
            "Total keys in cluster: 2",
            "=== Adding Node: node4 ===",
            "Performing smart redistribution for new node...",
            "✓ Node node4 added successfully with minimal redistribution",
            "=== Data Distribution Statistics ===",
            "Total keys in cluster: 2",
            "Running benchmark...",
        ],
    );
    // Primary counts add up to the total; every node line has its replicas.
    let stats: Vec<&str> = out.lines().filter(|l| l.starts_with("Node node")).collect();
    assert_eq!(stats.len(), 3 + 4);
    let primaries: u64 = stats[3..]
        .iter()
        .map(|l| {
            l.split(": ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(primaries, 2);
    assert!(stats.iter().all(|l| l.ends_with(" replicas")), "{stats:?}");
    assert!(out.contains("✓ Redistribution complete: "));
    for prefix in [
        "Write operations: 1000 in ",
        "Write throughput: ",
        "Read operations: 1000 in ",
        "Read throughput: ",
        "Read latency: p50 ",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(prefix)),
            "{prefix} in {out}"
        );
    }
    // The benchmark left no keys behind.
    let (out, _, _) = session(dir.path(), "stats\n", &[]);
    assert!(out.contains("Total keys in cluster: 2"), "{out}");
}

#[test]
fn data_persists_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err, ok) = session(
        dir.path(),
        "put k1 v1\nmput k2 v2 k3 \"v 3\"\ndel k1\naddnode node4\ncompact\nflush\n",
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("✓ Compacted 4 nodes"), "{out}");
    assert!(out.contains("✓ Flushed"), "{out}");
    // Contradicting flags are ignored with a warning: the stored cluster wins.
    let (out, err, ok) = session(
        dir.path(),
        "get k1\nmget k2 k3\nnodes\n",
        &["--replication", "2"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("warning: --replication 2 ignored"), "{err}");
    assert_lines_in_order(
        &out,
        &[
            "✗ Key not found: k1",
            "✓ Retrieved: k2 -> v2",
            "✓ Retrieved: k3 -> v 3",
            "Cluster has 4 nodes:",
            "- Node: node4",
        ],
    );
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = kvstore()
        .args(["--interactive", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for i in 0..50 {
        writeln!(stdin, "put key{i} value{i}").unwrap();
        stdin.flush().unwrap();
        // Wait for the acknowledgement of this very write before killing.
        loop {
            let line = lines.next().expect("the REPL ended early").unwrap();
            if line == format!("✓ Stored: key{i} -> value{i}") {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, stdin still open
    child.wait().unwrap();
    let input: String = (0..50).map(|i| format!("get key{i}\n")).collect();
    let (out, err, ok) = session(dir.path(), &input, &[]);
    assert!(ok, "{err}");
    for i in 0..50 {
        assert!(
            out.contains(&format!("✓ Retrieved: key{i} -> value{i}\n")),
            "key{i}: {out}"
        );
    }
}

#[test]
fn bad_input_gets_one_clear_error_and_the_repl_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let big_key = "k".repeat(64 * 1024 + 1);
    let max_key = "k".repeat(64 * 1024);
    let big_value = "v".repeat(16 * 1024 * 1024 + 1);
    let max_value = "v".repeat(16 * 1024 * 1024);
    let bad = [
        "frobnicate".to_owned(),
        "put onlykey".to_owned(),
        "get a b".to_owned(),
        "put k \"unbalanced".to_owned(),
        format!("put {big_key} v"),
        format!("put big {big_value}"),
        "removenode nosuchnode".to_owned(),
        "addnode node1".to_owned(),
        "addnode bad/id".to_owned(),
        "removenode node1".to_owned(), // 3 nodes, rf 3
        "benchmark --threads".to_owned(),
    ];
    let mut input = String::new();
    for b in &bad {
        input.push_str(b);
        input.push('\n');
    }
    input.push_str(&format!(
        "put {max_key} ok\nput maxvalue {max_value}\nget missing\nput after ok\nget after\n"
    ));
    let (out, err, ok) = session(dir.path(), &input, &[]);
    assert!(!ok, "a failed command makes the exit code non-zero");
    let errors: Vec<&str> = err.lines().collect();
    assert_eq!(
        errors.len(),
        bad.len(),
        "one error line per bad command:\n{err}"
    );
    assert!(errors.iter().all(|l| l.starts_with("✗ ")), "{err}");
    assert!(errors[0].contains("unknown command"));
    assert!(errors[3].contains("unbalanced quote"));
    assert!(errors[4].contains("key"), "{}", errors[4]);
    assert!(errors[5].contains("value"), "{}", errors[5]);
    assert!(errors[9].contains("replication factor"), "{}", errors[9]);
    // Not found is an answer, not an error; the session went on.
    assert!(out.contains("✗ Key not found: missing"));
    assert!(out.contains("✓ Stored: maxvalue -> "));
    assert!(out.contains("✓ Retrieved: after -> ok"));
    assert!(
        out.lines().any(|l| l.starts_with("✓ Stored: kkkk")),
        "the 64 KiB key is accepted"
    );
}

#[test]
fn invalid_flags_exit_non_zero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--replication", "0"],
        vec!["--replication", "5"],
        vec!["--sync", "sometimes"],
        vec!["--read-consistency", "most"],
        vec!["--nodes", "0"],
    ] {
        let out = kvstore()
            .arg("--interactive")
            .arg("--data-dir")
            .arg(dir.path().join("x"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?}: no message");
    }
    let help = kvstore().arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--interactive"));
    let version = kvstore().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("kvstore "));
}

#[test]
fn the_demo_runs_to_completion() {
    let out = kvstore().arg("--quick").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Step 1: Cluster initialisation",
        "Step 4: Smart redistribution: adding a node",
        "Naive hash % N placement",
        "  Moving ",
        "✓ Redistribution complete: ",
        "Write latency: p50 ",
        "Every acknowledged write reads back its latest value: nothing lost",
        "Step 7: Node failure: hinted handoff and repair",
        "✓ Node node2 is down: writes for it are kept as hints",
        "200 writes and 200 reads at quorum while node2 was down: 0 failed; ",
        " writes kept as hints for node2",
        "✓ Node node2 recovered: ",
        " hinted writes handed off, 0 keys repaired",
        "✓ All 200 writes made while node2 was down are on all 3 replicas",
        "✓ Repair complete: ",
        "Step 8: Crash recovery",
        "Running benchmark...",
        "Demo complete",
    ] {
        assert!(stdout.contains(want), "{want}\n{stdout}");
    }
}

#[test]
fn a_line_that_is_not_utf8_is_one_error_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr, ok) = session(dir.path(), b"put a \xff\xfe\nput a ok\nget a\n", &[]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("line 1 is not valid UTF-8"), "{stderr}");
    assert!(stdout.contains("✓ Retrieved: a -> ok"), "{stdout}");
}

#[test]
fn the_demo_runs_twice_on_a_bigger_existing_cluster() {
    let dir = tempfile::tempdir().unwrap();
    for run in 0..2 {
        let out = kvstore()
            .args(["--quick", "--nodes", "5", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run {run}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_node_fails_and_recovers_with_hints_and_repair() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err, ok) = session(
        dir.path(),
        "put a 1\nput b 2\nfail node2\nnodes\nput c 3\ndel a\nget c\nstats\n\
         fail node3 --crash\nput d 4\nrecover node3\nrecover node2\nnodes\nget a\nget c\nrepair\n\
         fail node9\nrecover node1\nfail\nexit\n",
        &[],
    );
    assert!(!ok, "the bad commands at the end fail the run");
    assert_lines_in_order(
        &out,
        &[
            "✓ Stored: a -> 1",
            "✓ Node node2 is down: writes for it are kept as hints",
            "Cluster has 3 nodes:",
            "- Node: node1",
            "✓ Stored: c -> 3",
            "✓ Deleted: a",
            "✓ Retrieved: c -> 3",
            "Node node2: down",
            "Hinted writes waiting for down nodes: 2",
            "✓ Node node3 is down (crashed): writes for it are kept as hints",
            "✓ Node node3 recovered: 0 hinted writes handed off, 0 keys repaired (32 bytes of hashes compared)",
            "✓ Node node2 recovered: 2 hinted writes handed off, 0 keys repaired (64 bytes of hashes compared)",
            "Cluster has 3 nodes:",
            "- Node: node1",
            "- Node: node2",
            "- Node: node3",
            "✗ Key not found: a",
            "✓ Retrieved: c -> 3",
            "✓ Repair complete: 1 ranges compared, 64 bytes of hashes exchanged, 0 differing leaves, 0 keys repaired",
        ],
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("- Node: node2 (down for ")),
        "{out}"
    );
    // Two of three replicas down: a quorum write is refused at once, with one clear line.
    assert!(
        err.contains("✗ put d: only 1 of the 2 replicas needed answered"),
        "{err}"
    );
    for bad in [
        "✗ fail node9: node node9 is not a member of the cluster",
        "✗ recover node1: node node1 is not down",
        "✗ usage: fail <id> [--crash]",
    ] {
        assert!(err.contains(bad), "missing {bad:?} in:\n{err}");
    }
}

#[test]
fn the_demo_ends_quietly_when_its_output_is_closed() {
    let mut child = kvstore()
        .arg("--quick")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines
            .next()
            .unwrap()
            .unwrap()
            .contains("kvstore guided demo")
    );
    drop(lines); // like `kvstore | head -1`
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn sloppy_quorum_and_background_repair_flags() {
    let dir = tempfile::tempdir().unwrap();
    // 4 nodes, 2 down: every key keeps a live replica, and the 4th node can stand in for a
    // down one, so with a sloppy quorum every write is acknowledged.
    let puts: String = (0..20).map(|i| format!("put k{i} v{i}\n")).collect();
    let gets: String = (0..20).map(|i| format!("get k{i}\n")).collect();
    let script =
        format!("fail node1\nfail node2\n{puts}stats\nrecover node1\nrecover node2\n{gets}exit\n");
    let (out, err, ok) = session(
        dir.path(),
        &script,
        &[
            "--nodes",
            "4",
            "--sloppy-quorum",
            "--repair-interval",
            "3600",
        ],
    );
    assert!(ok, "{out}\n{err}");
    for i in 0..20 {
        assert!(
            out.contains(&format!("✓ Stored: k{i} -> v{i}")),
            "{out}\n{err}"
        );
        assert!(
            out.contains(&format!("✓ Retrieved: k{i} -> v{i}")),
            "{out}\n{err}"
        );
    }
    assert!(
        out.contains("Background repair every 3600 s: 0 rounds, no round yet"),
        "{out}"
    );

    // Without the flag, the same schedule refuses some writes (two of a key's three
    // replicas down).
    let dir = tempfile::tempdir().unwrap();
    let (out, err, ok) = session(dir.path(), &script, &["--nodes", "4"]);
    assert!(!ok);
    assert!(err.contains("replicas needed answered"), "{out}\n{err}");
}

/// The milliseconds of a `✓ TTL of <key>: <human> (<ms> ms)` line in `out`.
fn ttl_millis(out: &str, key: &str) -> u64 {
    let prefix = format!("✓ TTL of {key}: ");
    let line = out
        .lines()
        .find(|l| l.starts_with(&prefix) && l.ends_with(" ms)"))
        .unwrap_or_else(|| panic!("no TTL line for {key} in:\n{out}"));
    let ms = line.rsplit_once(" (").unwrap().1.trim_end_matches(" ms)");
    ms.parse().unwrap()
}

#[test]
fn keys_expire_on_request_and_their_ttl_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err, ok) = session(
        dir.path(),
        "put session:abc active --ttl 1h\nput plain v\nput later x --ttl=2h\nttl session:abc\n\
         ttl plain\nttl missing\nstats\npersist later\npersist later\npersist missing\nttl later\n\
         stats\nget session:abc\n",
        &[],
    );
    assert!(ok, "{err}");
    assert_lines_in_order(
        &out,
        &[
            "✓ Stored: session:abc -> active (expires in 1h)",
            "✓ Stored: plain -> v",
            "✓ Stored: later -> x (expires in 2h)",
            "✓ TTL of plain: no expiry",
            "✗ Key not found: missing",
            "=== Data Distribution Statistics ===",
            "Total keys in cluster: 3",
            // Each key is on all three nodes (replication factor 3).
            "Keys with a TTL per node: node1 2, node2 2, node3 2",
            "Total keys with a TTL: 2 (6 replica records / replication factor 3; an expired key \
             counts until compaction or active expiry removes it)",
            "✓ Persisted: later (its expiry is removed: it no longer expires)",
            "✓ Persisted: later (it had no expiry: nothing changed)",
            "✗ Key not found: missing",
            "✓ TTL of later: no expiry",
            "Keys with a TTL per node: node1 1, node2 1, node3 1",
            "✓ Retrieved: session:abc -> active",
        ],
    );
    let left = ttl_millis(&out, "session:abc");
    assert!((3_540_000..=3_600_000).contains(&left), "{left}");
    // Read in the same millisecond as written, or later.
    assert!(
        out.contains("✓ TTL of session:abc: 59m") || left == 3_600_000,
        "a human form: {out}"
    );

    // The expiry is stored with the value: the next run still counts it down.
    let (out, err, ok) = session(dir.path(), "ttl session:abc\nttl later\nstats\n", &[]);
    assert!(ok, "{err}");
    let after = ttl_millis(&out, "session:abc");
    assert!(after <= left && after > 3_500_000, "{left} then {after}");
    assert_lines_in_order(
        &out,
        &[
            "✓ TTL of later: no expiry",
            "Keys with a TTL per node: node1 1, node2 1, node3 1",
        ],
    );
}

#[test]
fn bad_ttls_and_misplaced_flags_get_one_clear_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err, ok) = session(
        dir.path(),
        "put k v --ttl 0\nput k v --ttl -5s\nput k v --ttl soon\n\
         put k v --ttl 99999999999999999999d\nput k v --ttl\nput --ttl 5m k v\n\
         put k v --tll 5m\nttl\npersist a b\nget k\nput k v --ttl 5m\n",
        &[],
    );
    assert!(!ok);
    let usage = "put <key> <value> [--ttl <duration>]";
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "✗ put: TTL must be more than zero: 0".to_owned(),
            "✗ put: TTL must be more than zero: -5s".to_owned(),
            "✗ put: not a duration: \"soon\" (use a whole number with ms, s, m, h or d, e.g. \
             500ms, 30s, 5m, 2h, 1d)"
                .to_owned(),
            "✗ put: TTL too long: 99999999999999999999d (at most 36500d, 100 years)".to_owned(),
            "✗ put: --ttl needs a duration (e.g. 500ms, 30s, 5m, 2h, 1d)".to_owned(),
            format!("✗ put: --ttl goes after the key and the value ({usage})"),
            format!("✗ put: unknown flag --tll ({usage})"),
            "✗ usage: ttl <key>".to_owned(),
            "✗ usage: persist <key>".to_owned(),
        ]
    );
    // Nothing was stored by the refused lines; the session went on.
    assert_lines_in_order(
        &out,
        &["✗ Key not found: k", "✓ Stored: k -> v (expires in 5m)"],
    );
}

/// Kills the REPL however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_key_is_gone_once_its_ttl_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Killed(
        kvstore()
            .args(["--interactive", "--data-dir"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut wait_for = |want: &str| {
        for line in lines.by_ref() {
            if line.unwrap() == want {
                return;
            }
        }
        panic!("the REPL ended before {want:?}");
    };
    writeln!(stdin, "put short gone --ttl 200ms\nput stays here").unwrap();
    stdin.flush().unwrap();
    wait_for("✓ Stored: short -> gone (expires in 200ms)");
    // The write is acknowledged: its expiry, 200 ms from then at most, has passed after this.
    std::thread::sleep(std::time::Duration::from_millis(400));
    writeln!(
        stdin,
        "get short\nttl short\npersist short\nget stays\nexit"
    )
    .unwrap();
    stdin.flush().unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(
        rest,
        [
            "✓ Stored: stays -> here",
            "✗ Key not found: short",
            "✗ Key not found: short",
            "✗ Key not found: short",
            "✓ Retrieved: stays -> here",
        ]
    );
}
