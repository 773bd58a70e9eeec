//! Every command through a real client (the `redis` crate) and, where the exact bytes matter,
//! through a raw socket, compared with Redis 7's replies.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{TestServer, exchange, read_to_close};
use redis::{Commands, Value};

#[test]
fn ping_echo_get_set_through_a_client() {
    let server = TestServer::start();
    let mut c = server.client();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let hi: String = redis::cmd("PING").arg("hi").query(&mut c).unwrap();
    assert_eq!(hi, "hi");
    let echoed: Vec<u8> = redis::cmd("ECHO").arg(b"a\0b").query(&mut c).unwrap();
    assert_eq!(echoed, b"a\0b");
    let missing: Option<Vec<u8>> = c.get("nope").unwrap();
    assert_eq!(missing, None);
    let _: () = c.set("k", "v").unwrap();
    let v: String = c.get("k").unwrap();
    assert_eq!(v, "v");
}

#[test]
fn binary_keys_and_values_round_trip() {
    let server = TestServer::start();
    let mut c = server.client();
    let key: &[u8] = b"k\0\r\n\xff";
    let value: &[u8] = b"\r\n\0\xfe\xff$-1\r\n";
    let _: () = c.set(key, value).unwrap();
    let got: Vec<u8> = c.get(key).unwrap();
    assert_eq!(got, value);
}

#[test]
fn multi_key_commands() {
    let server = TestServer::start();
    let mut c = server.client();
    let _: () = c.mset(&[("a", "1"), ("b", "2"), ("c", "3")]).unwrap();
    let got: Vec<Option<String>> = c.mget(&["a", "x", "c"]).unwrap();
    assert_eq!(got, vec![Some("1".into()), None, Some("3".into())]);
    let n: i64 = redis::cmd("EXISTS")
        .arg("a")
        .arg("a")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2, "a key named twice counts twice");
    let n: i64 = redis::cmd("DEL")
        .arg("a")
        .arg("a")
        .arg("b")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2, "a key named twice is deleted once");
    let got: Vec<Option<String>> = c.mget(&["a", "b", "c"]).unwrap();
    assert_eq!(got, vec![None, None, Some("3".into())]);
}

#[test]
fn exact_replies_match_redis() {
    let server = TestServer::start();
    let mut s = server.raw();
    let cases: &[(&[u8], &[u8])] = &[
        (b"PING\r\n", b"+PONG\r\n"),
        (b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n", b"$2\r\nhi\r\n"),
        (
            b"ping a b\r\n",
            b"-ERR wrong number of arguments for 'ping' command\r\n",
        ),
        (
            b"GET\r\n",
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            b"get a b\r\n",
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            b"SET k\r\n",
            b"-ERR wrong number of arguments for 'set' command\r\n",
        ),
        (
            b"MSET a 1 b\r\n",
            b"-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (
            b"foo a b\r\n",
            b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n",
        ),
        (
            b"foo\r\n",
            b"-ERR unknown command 'foo', with args beginning with: \r\n",
        ),
        (b"GET missing\r\n", b"$-1\r\n"),
        (b"SET k v\r\n", b"+OK\r\n"),
        (b"GET k\r\n", b"$1\r\nv\r\n"),
        (b"MGET k missing\r\n", b"*2\r\n$1\r\nv\r\n$-1\r\n"),
        (b"EXISTS k missing k\r\n", b":2\r\n"),
        (b"SELECT 0\r\n", b"+OK\r\n"),
        (b"SELECT 1\r\n", b"-ERR DB index is out of range\r\n"),
        (
            b"SELECT x\r\n",
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (
            b"ECHO\r\n",
            b"-ERR wrong number of arguments for 'echo' command\r\n",
        ),
        (b"COMMAND COUNT\r\n", b":12\r\n"),
        (
            b"COMMAND COUNT x\r\n",
            b"-ERR wrong number of arguments for 'command|count' command\r\n",
        ),
        (
            b"COMMAND FOO\r\n",
            b"-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n",
        ),
        (b"HELLO 4\r\n", b"-NOPROTO unsupported protocol version\r\n"),
        (
            b"HELLO x\r\n",
            b"-ERR Protocol version is not an integer or out of range\r\n",
        ),
        (b"DEL k k\r\n", b":1\r\n"),
    ];
    for (request, reply) in cases {
        let got = exchange(&mut s, request, reply.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply),
            "request {:?}",
            String::from_utf8_lossy(request)
        );
    }
}

#[test]
fn inline_commands_with_quotes_as_typed_into_telnet() {
    let server = TestServer::start();
    let mut s = server.raw();
    assert_eq!(
        exchange(&mut s, b"SET \"a key\" 'a \\'quoted\\' value'\r\n", 5),
        b"+OK\r\n"
    );
    assert_eq!(
        exchange(&mut s, b"set bin \"\\x00\\xff\\r\\n\"\n", 5),
        b"+OK\r\n"
    );
    let mut c = server.client();
    let v: String = c.get("a key").unwrap();
    assert_eq!(v, "a 'quoted' value");
    let v: Vec<u8> = c.get("bin").unwrap();
    assert_eq!(v, b"\x00\xff\r\n");
}

#[test]
fn unsupported_set_options_are_refused_by_name() {
    let server = TestServer::start();
    let mut s = server.raw();
    let reply: &[u8] = b"-ERR SET option 'NX' is not supported by kvstore\r\n";
    assert_eq!(exchange(&mut s, b"SET lock me nx\r\n", reply.len()), reply);
    let reply: &[u8] = b"-ERR syntax error\r\n";
    assert_eq!(exchange(&mut s, b"SET k v bogus\r\n", reply.len()), reply);
    // Nothing was stored by either.
    assert_eq!(exchange(&mut s, b"GET lock\r\n", 5), b"$-1\r\n");
}

#[test]
fn hello_3_switches_to_resp3() {
    let server = TestServer::start();
    let mut s = server.raw();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    use std::io::{Read, Write};
    s.write_all(b"HELLO 3\r\n").unwrap();
    let mut buf = vec![0; 512];
    let n = s.read(&mut buf).unwrap();
    let hello = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(hello.starts_with("%7\r\n$6\r\nserver\r\n"), "{hello}");
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    assert_eq!(exchange(&mut s, b"GET missing\r\n", 3), b"_\r\n");
    assert_eq!(exchange(&mut s, b"MGET missing\r\n", 7), b"*1\r\n_\r\n");
    // And back.
    s.write_all(b"HELLO 2\r\n").unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"*14\r\n"));
    assert_eq!(exchange(&mut s, b"GET missing\r\n", 5), b"$-1\r\n");
}

#[test]
fn resp3_through_the_client() {
    let server = TestServer::start();
    let client = redis::Client::open(format!("{}?protocol=resp3", server.url())).unwrap();
    let mut c = client.get_connection().unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let _: () = c.set("k", "v").unwrap();
    let v: Value = c.get("missing").unwrap();
    assert_eq!(v, Value::Nil);
    let v: String = c.get("k").unwrap();
    assert_eq!(v, "v");
}

#[test]
fn quit_answers_ok_and_closes() {
    let server = TestServer::start();
    let mut s = server.raw();
    use std::io::Write;
    s.write_all(b"PING\r\nQUIT\r\nPING\r\n").unwrap();
    assert_eq!(read_to_close(&mut s), b"+PONG\r\n+OK\r\n");
}

#[test]
fn a_value_of_16_mib_is_accepted_and_one_byte_more_refused() {
    let server = TestServer::start();
    let mut c = server.client();
    let max = vec![7u8; 16 << 20];
    let _: () = c.set("big", &max).unwrap();
    let got: Vec<u8> = c.get("big").unwrap();
    assert!(got == max);
    let over = vec![7u8; (16 << 20) + 1];
    let err = c.set::<_, _, ()>("big", &over).unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
    // The connection stays usable and the old value stays.
    let got: Vec<u8> = c.get("big").unwrap();
    assert_eq!(got.len(), max.len());
}
