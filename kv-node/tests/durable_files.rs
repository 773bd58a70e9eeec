//! Every directory a node creates, and every file it renames into place, is made durable by
//! an `fsync` of the directory it is in: otherwise a power cut can lose a node's whole log
//! directory, or a hint file, even though every byte in them was flushed.
//!
//! A power cut cannot be simulated here, so the test watches the system calls instead: the
//! child, this test binary re-executed with `KV_NODE_DURABLE_CHILD` set, opens a node in a
//! fresh directory, writes enough to seal segments and writes their hint files, under
//! `strace`. The parent then checks in the trace that each `mkdir` and `rename` under the
//! node's directory is followed by an `fsync` of a descriptor opened on the parent directory.
//! What it proves: the calls are made, in that order. What it does not: that the filesystem
//! honours them. Skipped, with a message, where `strace` cannot run.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kv_node::{Node, NodeOptions};
use kv_wal::{SyncPolicy, WalOptions};

const ENV_DIR: &str = "KV_NODE_DURABLE_CHILD";

#[test]
fn child_creates_a_node() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let opts = NodeOptions::new()
        .wal(
            WalOptions::new()
                .segment_size(8 << 10)
                .sync(SyncPolicy::Never),
        )
        .background(false);
    let node = Node::open(&dir, opts).unwrap();
    for k in 0..200u32 {
        node.put(&k.to_le_bytes(), &[7; 100]).unwrap();
    }
    assert!(node.write_hints().unwrap() > 0);
    node.close().unwrap();
}

/// One system call of the trace: `(name, arguments, result)`.
fn parse_line(line: &str) -> Option<(&str, &str, &str)> {
    // `1234  openat(AT_FDCWD, "/x", O_RDONLY|O_CLOEXEC) = 5`
    let call = line.split_once(' ')?.1.trim_start();
    let (name, rest) = call.split_once('(')?;
    let (args, result) = rest.rsplit_once(" = ")?;
    let args = args.trim_end().strip_suffix(')')?;
    Some((name, args, result.split_whitespace().next()?))
}

/// The quoted strings among a call's arguments.
fn quoted(args: &str) -> Vec<PathBuf> {
    args.split('"')
        .skip(1)
        .step_by(2)
        .map(PathBuf::from)
        .collect()
}

#[test]
fn a_new_node_syncs_every_directory_entry_it_creates() {
    if std::env::var(ENV_DIR).is_ok() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let node_dir = root.path().join("node1");
    let trace = root.path().join("trace");
    let run = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=mkdir,mkdirat,open,openat,rename,renameat,renameat2,fsync,fdatasync",
            "-o",
        ])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_creates_a_node",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, &node_dir)
        .output();
    let ran = match run {
        Ok(out) if out.status.success() && trace.exists() => true,
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !err.contains("panicked"),
                "the child failed under strace:\n{err}"
            );
            eprintln!("skipped: strace cannot trace here: {err}");
            false
        }
        Err(e) => {
            eprintln!("skipped: strace is not available: {e}");
            false
        }
    };
    if !ran {
        return;
    }
    let text = std::fs::read_to_string(&trace).unwrap();
    // Directory entries created under the node's directory, each waiting for an fsync of
    // its parent: (entry, parent).
    let mut pending: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut created = 0;
    // What each descriptor was opened on (descriptors are shared by the threads).
    let mut fds: HashMap<String, PathBuf> = HashMap::new();
    let under = |p: &Path| p.starts_with(&node_dir);
    for line in text.lines() {
        let Some((name, args, result)) = parse_line(line) else {
            continue;
        };
        if result.starts_with('-') {
            continue; // failed: changed nothing
        }
        let paths = quoted(args);
        match name {
            "open" | "openat" => {
                if let Some(p) = paths.first() {
                    fds.insert(result.to_owned(), p.clone());
                }
            }
            "mkdir" | "mkdirat" | "rename" | "renameat" | "renameat2" => {
                let Some(entry) = paths.last() else { continue };
                assert!(entry.is_absolute(), "relative path in the trace: {line}");
                if under(entry) || entry == &node_dir {
                    pending.push((entry.clone(), entry.parent().unwrap().to_owned()));
                    created += 1;
                }
            }
            "fsync" | "fdatasync" => {
                let fd = args.trim();
                if let Some(dir) = fds.get(fd) {
                    pending.retain(|(_, parent)| parent != dir);
                }
            }
            _ => {}
        }
    }
    // `node1`, `node1/wal`, the first two segments and a hint file at least.
    assert!(created >= 5, "{created} entries created:\n{text}");
    assert!(
        pending.is_empty(),
        "created but their directory never synced after: {pending:?}"
    );
}
