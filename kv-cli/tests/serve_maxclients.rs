//! `--maxclients` past the open-files limit is lowered to what fits, with a warning, so the
//! client over the cap is refused with Redis's error instead of never being accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{EXIT_TIMEOUT, Served, data_dir};

const REFUSAL: &[u8] = b"-ERR max number of clients reached\r\n";

/// Connections opened: more than the limit leaves room for.
const CLIENTS: usize = 160;

/// What has arrived on a connection without sending anything (`None`: nothing yet).
fn pending(stream: &TcpStream) -> Option<Vec<u8>> {
    let mut buf = [0; 64];
    match stream.peek(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(e) if e.kind() == ErrorKind::WouldBlock => None,
        Err(e) => panic!("peek: {e}"),
    }
}

#[test]
fn maxclients_past_the_open_files_limit_is_lowered_and_the_extra_clients_refused() {
    let dir = data_dir();
    let mut server =
        Served::start_with_open_files_limit(dir.path(), &["--maxclients", "1000"], CLIENTS as u64);
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let s = TcpStream::connect(server.addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // The server refuses the clients over its cap as it accepts them: wait until the count
    // of refused connections stops growing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    let mut stable_since = Instant::now();
    loop {
        let now = clients.iter().filter(|c| pending(c).is_some()).count();
        if now != refused {
            refused = now;
            stable_since = Instant::now();
        }
        if refused > 0 && stable_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(Instant::now() < deadline, "{refused} refused so far");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answered: Vec<bool> = clients.iter().map(|c| pending(c).is_some()).collect();
    let mut accepted = 0;
    for (mut c, answered) in clients.iter().zip(answered) {
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        if answered {
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got, REFUSAL, "{}", String::from_utf8_lossy(&got));
        } else {
            c.write_all(b"PING\r\n").unwrap();
            let mut got = [0; 7];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"+PONG\r\n");
            accepted += 1;
        }
    }
    drop(clients);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
    let stderr = server.stderr();
    let lowered: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("warning: --maxclients 1000 lowered to "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(lowered > 0 && lowered < CLIENTS, "{stderr}");
    assert_eq!(accepted, lowered, "{stderr}");
    assert_eq!(accepted + refused, CLIENTS);
}
