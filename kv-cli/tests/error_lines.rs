//! What an error line says: the failure and its causes, each once, with every replica that
//! failed named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;

/// Runs a scripted REPL session; returns (stdout, stderr).
fn session(dir: &std::path::Path, input: &str) -> (String, String) {
    let mut child = Command::cargo_bin("kvstore")
        .unwrap()
        .env("NO_COLOR", "1")
        .args(["--interactive", "--data-dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_refused_write_names_every_replica_that_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_, err) = session(
        dir.path(),
        "fail node2\nfail node3\nput k v\nget k\ndel k\nmput a 1 b 2\nmget a b\n",
    );
    let lines: Vec<&str> = err.lines().collect();
    // rf 3 on 3 nodes: every key has node2 and node3 among its replicas, in the order of its
    // preference list.
    let why = |first: &str, then: &str| {
        format!(
            "only 1 of the 2 replicas needed answered (also: node {then} is down): \
             node {first} is down"
        )
    };
    let (either, or) = (why("node2", "node3"), why("node3", "node2"));
    let commands = ["put k", "get k", "del k", "mput", "mget"];
    assert_eq!(lines.len(), commands.len(), "{err}");
    for (line, command) in lines.iter().zip(commands) {
        assert!(
            *line == format!("✗ {command}: {either}") || *line == format!("✗ {command}: {or}"),
            "{line}"
        );
    }
}

#[test]
fn a_startup_error_gives_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.json"), "{ not json").unwrap();
    let out = Command::cargo_bin("kvstore")
        .unwrap()
        .args(["--interactive", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("kvstore: parse "), "{err}");
    assert!(err.contains("cluster.json: key must be a string"), "{err}");
}

#[test]
fn a_node_that_cannot_open_is_one_line_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // Where node1's directory should be, a file: the node cannot create its log directory.
    std::fs::write(dir.path().join("node1"), "not a directory").unwrap();
    let out = Command::cargo_bin("kvstore")
        .unwrap()
        .args(["--interactive", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("kvstore: open the cluster in "), "{err}");
    assert!(err.contains(": node node1: "), "{err}");
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}
