//! The REPL's output going away (`kvstore --interactive < cmds | head -1`): it stops quietly,
//! without a panic message, and exits cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;

fn repl(dir: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("kvstore").unwrap();
    c.env("NO_COLOR", "1")
        .arg("--interactive")
        .arg("--data-dir")
        .arg(dir);
    c
}

/// Feeds `input` to the child's stdin from a thread (the child may stop reading early).
fn feed(child: &mut std::process::Child, input: String) -> std::thread::JoinHandle<()> {
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    })
}

#[test]
fn the_repl_stops_quietly_when_its_reader_closes_after_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = repl(dir.path())
        .stdin(Stdio::piped())
        .stdout(writer.try_clone().unwrap())
        // Errors share the pipe, as with `2>&1 | head -1`.
        .stderr(writer)
        .spawn()
        .unwrap();
    // Drop our copies of the write end, or the reader never sees the end.
    let mut lines = BufReader::new(reader).lines();
    // Many lines of output, some of them errors, far more than a pipe buffers.
    let input: String = (0..20_000)
        .map(|i| format!("put k{i} v{i}\nget k{i}\nget missing{i} extra\n"))
        .collect();
    let writer = feed(&mut child, input);
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "=== INTERACTIVE DEMO MODE ===");
    drop(lines); // like `head -1`
    let status = child.wait().unwrap();
    writer.join().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_repl_ends_without_a_panic_message_when_stdout_is_already_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // the reader is gone before the REPL writes its first line
    let mut child = repl(dir.path())
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = feed(&mut child, "put k v\nget k\nfrobnicate\n".repeat(100));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.is_empty(),
        "nothing to say about a closed pipe: {stderr}"
    );
    assert!(out.status.success(), "{:?}: {stderr}", out.status);

    // It stopped at its first failed write: no command ran after the output was gone.
    let mut child = repl(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = feed(&mut child, "get k\n".into());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("✗ Key not found: k"), "{stdout}");
}
