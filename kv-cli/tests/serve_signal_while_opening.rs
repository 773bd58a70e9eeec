//! A SIGTERM or SIGINT that arrives while `kvstore serve` is still opening its cluster (before the ready
//! line) shuts it down cleanly: the cluster is closed and the process exits 0, instead of the
//! signal's default action killing it half-open.
//!
//! The window is made deterministic with a named pipe: the data directory's `cluster.json` is
//! a FIFO, so opening the cluster blocks reading it; the test's open of the FIFO for writing
//! succeeds only once the server has opened it for reading, i.e. once the server is inside
//! the open. The signal is sent then; only afterwards is the real `cluster.json` put back and
//! the FIFO fed, so the open completes with the signal already delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{EXIT_TIMEOUT, START_TIMEOUT, Served, data_dir};

/// A child process killed and reaped on drop, so a failing test leaves nothing behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

#[test]
fn sigterm_while_the_cluster_opens_closes_it_and_exits_0() {
    signal_while_opening(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_while_the_cluster_opens_closes_it_and_exits_0() {
    signal_while_opening(libc::SIGINT, "SIGINT");
}

fn signal_while_opening(signal: libc::c_int, name: &str) {
    let dir = data_dir();
    // A cluster with one acknowledged write in it.
    {
        let mut server = Served::start(dir.path(), &[]);
        let mut c = server.client();
        let ok: String = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
        assert_eq!(ok, "OK");
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit(EXIT_TIMEOUT).success());
    }
    let json = dir.path().join("cluster.json");
    let real = dir.path().join("cluster.json.real");
    std::fs::rename(&json, &real).unwrap();
    mkfifo(&json);

    let child = Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard(child);

    // Opens for writing once the server has the FIFO open for reading (ENXIO until then).
    let deadline = Instant::now() + START_TIMEOUT;
    let probe = loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&json)
        {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                assert!(
                    child.0.try_wait().unwrap().is_none(),
                    "the server exited before reading cluster.json"
                );
                assert!(
                    Instant::now() < deadline,
                    "the server never read cluster.json"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open the FIFO: {e}"),
        }
    };
    // The same, blocking (a reader is there, so this does not wait), for a write of more than
    // the pipe holds.
    let mut fifo = OpenOptions::new().write(true).open(&json).unwrap();
    drop(probe);
    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet (the
    // guard owns it), so its pid is not reused.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);

    // Put the real file back under the name, then let the blocked read finish with its bytes.
    std::fs::rename(&real, &json).unwrap();
    let text = std::fs::read(&json).unwrap();
    // A server killed by the signal is gone: the write may fail (EPIPE), which the exit
    // status below reports.
    let _ = fifo.write_all(&text);
    drop(fifo);

    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {EXIT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.signal(),
        None,
        "killed by a signal instead of closing cleanly: {status:?} {stderr}"
    );
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains(&format!("{name} received")), "{stderr}");

    // Closed cleanly: the next server opens the directory (its lock released) with the write.
    let mut server = Served::start(dir.path(), &[]);
    let mut c = server.client();
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
}
