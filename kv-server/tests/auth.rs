//! `requirepass`: commands before `AUTH` refused with Redis's texts, `AUTH`, `HELLO ... AUTH`,
//! `RESET` dropping the authentication, and Redis's argument limits for unauthenticated
//! clients.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::Write;

use common::{TestServer, exchange, read_to_close};
use kv_server::ServerOptions;

fn protected() -> TestServer {
    TestServer::with_options(ServerOptions::new().requirepass(Some("s3cret".to_string())))
}

#[test]
fn commands_before_auth_are_refused_with_noauth() {
    let server = protected();
    let mut s = server.raw();
    let noauth: &[u8] = b"-NOAUTH Authentication required.\r\n";
    for request in [
        &b"PING\r\n"[..],
        b"GET k\r\n",
        b"SET k v\r\n",
        b"CLIENT ID\r\n",
    ] {
        assert_eq!(exchange(&mut s, request, noauth.len()), noauth);
    }
    // Unknown commands and wrong arity are reported first, as in Redis.
    let reply: &[u8] = b"-ERR wrong number of arguments for 'get' command\r\n";
    assert_eq!(exchange(&mut s, b"GET\r\n", reply.len()), reply);
    let reply: &[u8] = b"-ERR unknown command 'foo', with args beginning with: \r\n";
    assert_eq!(exchange(&mut s, b"foo\r\n", reply.len()), reply);
    let reply: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    assert_eq!(exchange(&mut s, b"AUTH nope\r\n", reply.len()), reply);
    assert_eq!(
        exchange(&mut s, b"AUTH other s3cret\r\n", reply.len()),
        reply
    );
    let reply: &[u8] = b"-ERR syntax error\r\n";
    assert_eq!(exchange(&mut s, b"AUTH a b c\r\n", reply.len()), reply);
    let reply: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";
    assert_eq!(exchange(&mut s, b"HELLO 3\r\n", reply.len()), reply);
    // Nothing was written by the refused SET.
    assert_eq!(exchange(&mut s, b"AUTH s3cret\r\n", 5), b"+OK\r\n");
    assert_eq!(exchange(&mut s, b"GET k\r\n", 5), b"$-1\r\n");
    assert_eq!(exchange(&mut s, b"AUTH default s3cret\r\n", 5), b"+OK\r\n");
    // RESET drops the authentication.
    assert_eq!(exchange(&mut s, b"RESET\r\n", 8), b"+RESET\r\n");
    assert_eq!(exchange(&mut s, b"PING\r\n", noauth.len()), noauth);
    // QUIT is allowed.
    s.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_close(&mut s), b"+OK\r\n");
}

#[test]
fn a_client_library_authenticates_with_the_password_in_its_url() {
    let server = protected();
    let url = format!("redis://:s3cret@{}/", server.addr);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v");
    // Without the password: refused.
    let mut c = server.client();
    let err = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut c)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    let bad = format!("redis://:wrong@{}/", server.addr);
    assert!(redis::Client::open(bad).unwrap().get_connection().is_err());
}

#[test]
fn hello_authenticates_names_and_switches_protocol_at_once() {
    let server = protected();
    let url = format!("redis://default:s3cret@{}/?protocol=resp3", server.addr);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let v: redis::Value = redis::cmd("GET").arg("missing").query(&mut c).unwrap();
    assert_eq!(v, redis::Value::Nil);

    let mut s = server.raw();
    let reply: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    assert_eq!(
        exchange(&mut s, b"HELLO 3 AUTH default bad\r\n", reply.len()),
        reply
    );
    s.write_all(b"HELLO 3 AUTH default s3cret SETNAME app1\r\n")
        .unwrap();
    let mut buf = vec![0; 512];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    assert!(buf[..n].starts_with(b"%7\r\n"), "{:?}", &buf[..n]);
    assert_eq!(
        exchange(&mut s, b"CLIENT GETNAME\r\n", 10),
        b"$4\r\napp1\r\n"
    );
    assert_eq!(exchange(&mut s, b"GET missing\r\n", 3), b"_\r\n");
}

#[test]
fn auth_without_a_configured_password() {
    let server = TestServer::start();
    let mut s = server.raw();
    let reply: &[u8] = b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n";
    assert_eq!(exchange(&mut s, b"AUTH x\r\n", reply.len()), reply);
    // The default user has no password: any password is accepted, other users are not.
    assert_eq!(exchange(&mut s, b"AUTH default x\r\n", 5), b"+OK\r\n");
    let reply: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    assert_eq!(exchange(&mut s, b"AUTH bob x\r\n", reply.len()), reply);
    assert_eq!(exchange(&mut s, b"PING\r\n", 7), b"+PONG\r\n");
}

#[test]
fn unauthenticated_clients_get_redis_argument_limits() {
    let server = protected();
    let mut s = server.raw();
    // 11 arguments: refused and closed.
    let mut req = b"*11\r\n".to_vec();
    for _ in 0..11 {
        req.extend_from_slice(b"$1\r\nx\r\n");
    }
    s.write_all(&req).unwrap();
    assert_eq!(
        read_to_close(&mut s),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    let mut s = server.raw();
    s.write_all(b"*2\r\n$4\r\nECHO\r\n$16385\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut s),
        b"-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    // A large command pipelined right after AUTH gets the authenticated limits.
    let mut s = server.raw();
    let value = vec![b'v'; 100_000];
    let mut req = b"AUTH s3cret\r\n".to_vec();
    req.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).as_bytes());
    req.extend_from_slice(&value);
    req.extend_from_slice(b"\r\n");
    assert_eq!(exchange(&mut s, &req, 10), b"+OK\r\n+OK\r\n");
}
