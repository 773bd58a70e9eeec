//! `kvstore --connect` when things go wrong: nothing listening, a password missing or wrong,
//! a server that never answers, a server killed in the middle of a session (and started
//! again). Each is one clear error line, never a panic or a hang; a failure at start is exit
//! code 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{EXIT_TIMEOUT, Served, data_dir, scripted};

/// How long one command of an interactive session may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn nothing_listening_is_one_error_line_and_exit_1() {
    // A port nothing listens on: bound, then released.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let run = scripted(&["--connect", &addr], &[], "put k v\n");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(run.stdout, "", "no banner before a connection");
    assert!(
        run.stderr
            .starts_with(&format!("kvstore: cannot connect to {addr}: ")),
        "{run:?}"
    );
    assert!(run.stderr.contains("refused"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");

    let run = scripted(&["--connect", "no-such-host.invalid:7379"], &[], "");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr
            .starts_with("kvstore: cannot connect to no-such-host.invalid:7379: "),
        "{run:?}"
    );
    let run = scripted(&["--connect", "127.0.0.1"], &[], "");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr
            .starts_with("kvstore: cannot connect to 127.0.0.1: "),
        "{run:?}"
    );
}

#[test]
fn a_server_that_never_answers_is_given_up_on_after_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accepts (the kernel does, into the backlog) and never answers.
    let started = Instant::now();
    let run = scripted(&["--connect", &addr, "--timeout", "1"], &[], "get k\n");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "kvstore: no answer from {addr} within 1 s (the connection is dropped; --timeout \
             sets the limit)\n"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    drop(listener);
}

#[test]
fn a_password_is_asked_for_checked_and_taken_from_the_flag_or_the_environment() {
    let dir = data_dir();
    let mut server = Served::start(dir.path(), &["--requirepass", "s3cret"]);
    let addr = server.addr.to_string();

    let missing = scripted(&["--connect", &addr], &[], "put k v\n");
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert_eq!(missing.stdout, "");
    assert_eq!(
        missing.stderr,
        format!(
            "kvstore: {addr} requires a password: give it with --password or in the \
             KVSTORE_AUTH environment variable (NOAUTH Authentication required.)\n"
        )
    );

    let wrong = scripted(
        &["--connect", &addr, "--password", "guess"],
        &[],
        "put k v\n",
    );
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    assert_eq!(wrong.stdout, "");
    assert!(
        wrong
            .stderr
            .starts_with(&format!("kvstore: {addr} refused the password: WRONGPASS")),
        "{wrong:?}"
    );
    assert_eq!(wrong.stderr.lines().count(), 1, "{wrong:?}");

    let wrong_env = scripted(&["--connect", &addr], &[("KVSTORE_AUTH", "guess")], "");
    assert_eq!(wrong_env.status.code(), Some(1), "{wrong_env:?}");

    let flag = scripted(
        &["--connect", &addr, "--password", "s3cret"],
        &[],
        "put k v\n",
    );
    assert!(flag.status.success(), "{flag:?}");
    assert!(flag.stdout.ends_with("✓ Stored: k -> v\n"), "{flag:?}");

    let env = scripted(
        &["--connect", &addr],
        &[("KVSTORE_AUTH", "s3cret")],
        "get k\n",
    );
    assert!(env.status.success(), "{env:?}");
    assert!(env.stdout.ends_with("✓ Retrieved: k -> v\n"), "{env:?}");

    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
}

/// A `kvstore --connect` driven a command at a time.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Client {
    fn start(addr: &str) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvstore"))
            .args(["--connect", addr])
            .env("NO_COLOR", "1")
            .env_remove("KVSTORE_AUTH")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Client {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn out(&self) -> String {
        self.stdout
            .recv_timeout(ANSWER_TIMEOUT)
            .expect("a line on stdout")
    }

    fn err(&self) -> String {
        self.stderr
            .recv_timeout(ANSWER_TIMEOUT)
            .expect("a line on stderr")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_server_killed_mid_session_fails_each_command_once_until_it_is_back() {
    let dir = data_dir();
    let server = Served::start(dir.path(), &[]);
    let addr = server.addr.to_string();
    let mut client = Client::start(&addr);
    for _ in 0..3 {
        client.out(); // the banner
    }
    client.send("put a 1");
    assert_eq!(client.out(), "✓ Stored: a -> 1");

    server.crash();
    client.send("get a");
    let lost = client.err();
    assert!(
        lost == format!("✗ get a: connection closed by the server at {addr}")
            || lost.starts_with(&format!("✗ get a: connection to {addr} lost: ")),
        "{lost}"
    );
    client.send("put b 2");
    let refused = client.err();
    assert!(
        refused.starts_with(&format!("✗ put b: cannot connect to {addr}: ")),
        "{refused}"
    );

    // The same port again: the next command connects anew, and the write acknowledged
    // before the crash is there.
    let port = server_port(&addr);
    let mut again = Served::start(dir.path(), &["--port", &port]);
    client.send("get a");
    assert_eq!(client.out(), "✓ Retrieved: a -> 1");
    client.send("exit");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(s) = client.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the client did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Two commands failed.
    assert_eq!(status.code(), Some(1));
    assert!(client.stderr.try_recv().is_err(), "one line per failure");
    again.signal(libc::SIGTERM);
    assert!(again.wait_exit(EXIT_TIMEOUT).success());
}

fn server_port(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().to_owned()
}
