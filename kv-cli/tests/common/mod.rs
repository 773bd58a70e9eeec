//! `kvstore serve` as a child process on 127.0.0.1 with a free port, killed (SIGKILL) and
//! reaped when its guard is dropped, so a failing test never leaves a server behind.

#![allow(dead_code)] // each test binary uses part of this

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server prints, followed by its address, once it accepts connections.
pub const READY: &str = "kvstore ready to accept connections on ";

/// How long a server may take to open its cluster and say it is ready (a debug build on a
/// loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `kvstore serve`.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    /// The lines printed on stdout after the ready line.
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<String>>,
    /// What stderr said so far (see [`Served::stderr_so_far`]).
    stderr_now: Arc<Mutex<String>>,
}

/// A server that exited before it was ready.
#[derive(Debug)]
pub struct Refused {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Served {
    /// Starts `kvstore serve --port 0 --data-dir <dir> <extra>` (`--port 0` unless `extra`
    /// gives a port); panics (with its stderr) if it does not become ready.
    pub fn start(dir: &Path, extra: &[&str]) -> Served {
        match Served::try_start(dir, extra) {
            Ok(s) => s,
            Err(r) => panic!("the server exited before it was ready: {r:?}"),
        }
    }

    /// As [`Served::start`], but a server that exits before it is ready is an answer.
    pub fn try_start(dir: &Path, extra: &[&str]) -> Result<Served, Refused> {
        Served::spawn(Command::new(env!("CARGO_BIN_EXE_kvstore")), dir, extra)
    }

    /// As [`Served::start`], under an open-files limit (`ulimit -n`) of `nofile`.
    pub fn start_with_open_files_limit(dir: &Path, extra: &[&str], nofile: u64) -> Served {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_kvstore"));
        match Served::spawn(sh, dir, extra) {
            Ok(s) => s,
            Err(r) => panic!("the server exited before it was ready: {r:?}"),
        }
    }

    fn spawn(mut command: Command, dir: &Path, extra: &[&str]) -> Result<Served, Refused> {
        let mut child = command
            .arg("serve")
            .args(if extra.contains(&"--port") {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvstore serve");
        let mut err = child.stderr.take().expect("stderr");
        let stderr_now = Arc::new(Mutex::new(String::new()));
        let seen = Arc::clone(&stderr_now);
        let stderr = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                seen.lock()
                    .expect("stderr buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            seen.lock().expect("stderr buffer").clone()
        });
        let out = child.stdout.take().expect("stdout");
        let (first_tx, first_rx) = mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = first_tx.send(first);
            }
            lines.map_while(Result::ok).collect::<Vec<_>>()
        });
        let mut served = Served {
            child,
            // Replaced once the ready line gives the real address.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout: Some(stdout),
            stderr: Some(stderr),
            stderr_now,
        };
        match first_rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => {
                let addr = line
                    .strip_prefix(READY)
                    .unwrap_or_else(|| panic!("not the ready line: {line:?}"));
                served.addr = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
                Ok(served)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stdout closed without a line: the process is exiting.
                let status = served.wait_exit(EXIT_TIMEOUT);
                Err(Refused {
                    status,
                    stdout: served.stdout(),
                    stderr: served.stderr(),
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no ready line within {START_TIMEOUT:?}")
            }
        }
    }

    /// A client whose reads time out, so a missing reply fails the test instead of hanging
    /// it.
    pub fn client(&self) -> redis::Connection {
        let c = redis::Client::open(format!("redis://{}/", self.addr))
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(10))
            .expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        c.set_write_timeout(Some(Duration::from_secs(30)))
            .expect("write timeout");
        c
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) has no memory-safety preconditions. The child is not reaped yet
        // (this guard owns it and only reaps it in `wait_exit` or on drop), so its pid
        // cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn crash(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits (at most `timeout`, else panics) for the server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything printed on stdout after the ready line (waits for stdout to close: call
    /// after the server exited).
    pub fn stdout(&mut self) -> Vec<String> {
        self.stdout
            .take()
            .map(|t| t.join().expect("stdout reader"))
            .unwrap_or_default()
    }

    /// What the server printed on stderr so far, while it runs.
    pub fn stderr_so_far(&self) -> String {
        self.stderr_now.lock().expect("stderr buffer").clone()
    }

    /// Everything printed on stderr (waits for stderr to close: call after the server
    /// exited).
    pub fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch data directory.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// What a scripted run of the `kvstore` REPL printed, and how it ended.
#[derive(Debug)]
pub struct Scripted {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
}

/// Runs `kvstore <args>` with `script` on stdin (the REPL's scripted mode), without colour;
/// gives up (and kills it) after `REPL_TIMEOUT`.
pub fn scripted(args: &[&str], envs: &[(&str, &str)], script: &str) -> Scripted {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("KVSTORE_AUTH")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvstore");
    let mut stdin = child.stdin.take().expect("stdin");
    let script = script.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        // A REPL that exits early closes its stdin: not this test's failure to report.
        let _ = std::io::Write::write_all(&mut stdin, &script);
    });
    let mut out = child.stdout.take().expect("stdout");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + REPL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kvstore {args:?} still running after {REPL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Scripted {
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        status,
    }
}

/// How long a scripted REPL session may take (a debug build on a loaded machine).
pub const REPL_TIMEOUT: Duration = Duration::from_secs(120);

/// One cluster of processes at a time in a test binary (its tests run on parallel threads;
/// the machine's rule is at most five server processes at once, and cargo runs the test
/// binaries one after another).
pub static ONE_CLUSTER: Mutex<()> = Mutex::new(());

/// The `--peers` list of members `n1..` on 127.0.0.1 at `ports`.
pub fn peers_list(ports: &[u16]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("n{}@127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// The flags of member `i` (`n{i+1}`) of the cluster on `ports` (a 500 ms replica timeout,
/// short for tests), then `extra`.
pub fn member_args(i: usize, ports: &[u16], extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &ports[i].to_string(),
        "--node-id",
        &format!("n{}", i + 1),
        "--peers",
        &peers_list(ports),
        "--replica-timeout",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    args
}

/// A client port whose cluster port (+ 10000) is free too.
pub fn free_port_pair() -> u16 {
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port > 55_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of ports");
}

/// Polls `what` every 50 ms until it returns `Some`, for at most `limit` (a failed assertion
/// naming `what` after that).
pub fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `KVSTORE sub` through node `n`, as `field -> value` (repeated fields: the last one).
pub fn fields(n: &Served, sub: &str) -> std::collections::BTreeMap<String, String> {
    let mut c = n.client();
    let text: String = redis::cmd("KVSTORE").arg(sub).query(&mut c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The data directories `n1..n4` under `root` (three members and a joiner) and a free port
/// pair for each of the three members.
pub fn layout(root: &Path) -> (Vec<PathBuf>, Vec<u16>) {
    let dirs = (1..=4).map(|i| root.join(format!("n{i}"))).collect();
    let ports = (0..3).map(|_| free_port_pair()).collect();
    (dirs, ports)
}

/// Starts member `i` (`n{i+1}`) of the cluster on `ports` from `dirs[i]`, with `extra` flags
/// after [`member_args`]'s.
pub fn start_member(dirs: &[PathBuf], ports: &[u16], i: usize, extra: &[String]) -> Served {
    let args = member_args(i, ports, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Served::start(&dirs[i], &args)
}

/// Starts n4 on `dir` joining (`--join`) the cluster through n1, the first of `ports`.
pub fn start_joiner(dir: &Path, ports: &[u16]) -> Served {
    let port4 = free_port_pair();
    let seed = format!("n1@127.0.0.1:{}", ports[0]);
    let args = [
        "--port",
        &port4.to_string(),
        "--node-id",
        "n4",
        "--join",
        &seed,
        "--replica-timeout",
        "500",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Served::start(dir, &args)
}
