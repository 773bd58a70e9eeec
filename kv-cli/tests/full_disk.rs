//! A data directory on a file system that fills up: the REPL's error line for the write
//! that no longer fits says why (the I/O error), once.
//!
//! Runs on a size-limited tmpfs the test mounts (it needs root, or `CAP_SYS_ADMIN`); where
//! it cannot be mounted the test says so and passes without checking anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;

/// Room for the three nodes' first segments (preallocated at open) and a little more.
const FS_SIZE: &str = "200m";
const VALUE_LEN: usize = 1 << 20;
/// Far more than fits: the file system is full long before.
const MAX_PUTS: usize = 1_000;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_write_to_a_full_disk_is_one_error_line_naming_the_io_error() {
    let fs = match Tmpfs::mount(FS_SIZE) {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("skipped: a small file system cannot be mounted here ({reason})");
            return;
        }
    };
    let data: PathBuf = fs.path().join("data");
    // stdout and stderr into one pipe, so the outcome of each command comes in order.
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = Command::cargo_bin("kvstore")
        .unwrap()
        .env("NO_COLOR", "1")
        .args(["--interactive", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(reader).lines();
    let value = "v".repeat(VALUE_LEN);
    let mut failure = None;
    let mut stored = 0;
    'puts: for i in 0..MAX_PUTS {
        writeln!(stdin, "put big{i} {value}").unwrap();
        stdin.flush().unwrap();
        loop {
            let line = lines.next().expect("the REPL ended early").unwrap();
            if line.starts_with(&format!("✓ Stored: big{i} ")) {
                stored += 1;
                break;
            }
            if line.starts_with("✗ ") {
                failure = Some(line);
                break 'puts;
            }
        }
    }
    writeln!(stdin, "put small ok\nexit").unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    child.wait().unwrap();
    let failure = failure.unwrap_or_else(|| panic!("{MAX_PUTS} puts of {VALUE_LEN} bytes fit"));
    assert!(stored > 0, "the first write failed already: {failure}");
    assert!(
        failure.starts_with("✗ put big"),
        "one error line for the put: {failure}"
    );
    // Every replica that failed is named with its cause, once (the three nodes share the
    // full disk, so one to three of them fail).
    let io = "No space left on device";
    let failed: Vec<&str> = ["node1", "node2", "node3"]
        .into_iter()
        .filter(|n| failure.contains(&format!("node {n}: ")))
        .collect();
    assert!(!failed.is_empty(), "no replica named: {failure}");
    assert_eq!(
        failure.matches(io).count(),
        failed.len(),
        "the I/O error once per replica that failed ({failed:?}): {failure}"
    );
    for n in &failed {
        assert_eq!(
            failure.matches(&format!("node {n}")).count(),
            1,
            "{failure}"
        );
    }
    // The next line is the next command's: the failure took one line, and the session
    // went on.
    let next = rest.first().map(String::as_str).unwrap_or_default();
    assert!(
        next == "✓ Stored: small -> ok" || next.starts_with("✗ put small: "),
        "{rest:?}"
    );
    assert!(rest.iter().all(|l| !l.contains("panicked")), "{rest:?}");
}
