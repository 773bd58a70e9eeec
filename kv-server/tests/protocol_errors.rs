//! Malformed input from one client: the server answers `-ERR Protocol error: ...` as Redis
//! does and closes that connection; other clients are unaffected.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::Write;

use common::{TestServer, exchange, read_to_close};

fn error_then_close(server: &TestServer, request: &[u8], message: &str) {
    let mut s = server.raw();
    s.write_all(request).unwrap();
    let got = read_to_close(&mut s);
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("-ERR Protocol error: {message}\r\n"),
        "request {:?}",
        String::from_utf8_lossy(request)
    );
}

#[test]
fn malformed_input_gets_redis_protocol_errors() {
    let server = TestServer::start();
    // A bystander connection, open throughout.
    let mut other = server.raw();
    assert_eq!(exchange(&mut other, b"SET x 1\r\n", 5), b"+OK\r\n");

    error_then_close(&server, b"*1\r\n$-5\r\n", "invalid bulk length");
    error_then_close(&server, b"*1\r\n$999999999999\r\n", "invalid bulk length");
    error_then_close(&server, b"*abc\r\n", "invalid multibulk length");
    error_then_close(&server, b"*1000000000\r\n", "invalid multibulk length");
    error_then_close(&server, b"*1\r\n+PING\r\n", "expected '$', got '+'");
    // Commands are flat: a nested array is not a bulk string.
    error_then_close(
        &server,
        b"*1\r\n*1\r\n$4\r\nPING\r\n",
        "expected '$', got '*'",
    );
    error_then_close(
        &server,
        b"\x01\xff\x13garbage \"\r\n",
        "unbalanced quotes in request",
    );
    error_then_close(&server, b"SET \"k v\r\n", "unbalanced quotes in request");
    error_then_close(&server, &vec![b'x'; 70_000], "too big inline request");
    // Commands before the bad one are answered first.
    let mut s = server.raw();
    s.write_all(b"PING\r\n*1\r\n$x\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut s),
        b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );

    assert_eq!(exchange(&mut other, b"GET x\r\n", 7), b"$1\r\n1\r\n");
}

#[test]
fn half_a_command_then_a_disconnect_leaves_the_server_serving() {
    let server = TestServer::start();
    {
        let mut s = server.raw();
        s.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$100\r\nabc")
            .unwrap();
    }
    {
        // A claimed 30 MiB bulk that never arrives.
        let mut s = server.raw();
        s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$31457280\r\nabc")
            .unwrap();
    }
    let mut s = server.raw();
    assert_eq!(exchange(&mut s, b"GET half\r\n", 5), b"$-1\r\n");
}
