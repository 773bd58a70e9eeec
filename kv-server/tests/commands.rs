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
        (b"COMMAND COUNT\r\n", b":35\r\n"),
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
        (b"CONFIG GET save\r\n", b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        (
            b"CONFIG GET appendonly nothing\r\n",
            b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        (b"CONFIG GET nothing\r\n", b"*0\r\n"),
        (
            b"CONFIG GET\r\n",
            b"-ERR wrong number of arguments for 'config|get' command\r\n",
        ),
        (
            b"CONFIG SET save x\r\n",
            b"-ERR CONFIG SET is not supported by kvstore\r\n",
        ),
        (
            b"CONFIG FOO\r\n",
            b"-ERR unknown subcommand 'FOO'. Try CONFIG HELP.\r\n",
        ),
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

#[test]
fn unlink_getdel_strlen_dbsize_and_set_get() {
    let server = TestServer::start();
    let mut c = server.client();
    let _: () = c.mset(&[("a", "1"), ("b", "22"), ("c", "333")]).unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("STRLEN").arg("c").query(&mut c).unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("STRLEN").arg("nope").query(&mut c).unwrap();
    assert_eq!(n, 0);
    let v: Option<String> = redis::cmd("GETDEL").arg("b").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("22"));
    let v: Option<String> = redis::cmd("GETDEL").arg("b").query(&mut c).unwrap();
    assert_eq!(v, None);
    let n: i64 = redis::cmd("UNLINK")
        .arg("a")
        .arg("a")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 1);
    let old: Option<String> = redis::cmd("SET")
        .arg("c")
        .arg("4")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("333"));
    let old: Option<String> = redis::cmd("SET")
        .arg("new")
        .arg("5")
        .arg("get")
        .query(&mut c)
        .unwrap();
    assert_eq!(old, None);
    let v: String = c.get("new").unwrap();
    assert_eq!(v, "5");
    let mut s = server.raw();
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"SET k v GET NX\r\n",
            b"-ERR SET option 'NX' is not supported by kvstore\r\n",
        ),
        (b"SET k v GET\r\n", b"$-1\r\n"),
        (b"STRLEN k\r\n", b":1\r\n"),
        (
            b"DBSIZE x\r\n",
            b"-ERR wrong number of arguments for 'dbsize' command\r\n",
        ),
        (
            b"GETDEL\r\n",
            b"-ERR wrong number of arguments for 'getdel' command\r\n",
        ),
    ];
    for (request, reply) in cases {
        let got = exchange(&mut s, request, reply.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply)
        );
    }
}

#[test]
fn client_subcommands_and_reset() {
    let server = TestServer::start();
    let mut c = server.client();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, None);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-1")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("SETINFO")
        .arg("LIB-NAME")
        .arg("mylib")
        .query(&mut c)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "worker-1");
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(
        info.starts_with(&format!("id={id} addr=127.0.0.1:")),
        "{info}"
    );
    assert!(info.contains(" name=worker-1 "), "{info}");
    assert!(info.contains(" lib-name=mylib "), "{info}");
    assert!(info.ends_with('\n'));
    let mut other = server.client();
    let other_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut other).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(&format!("id={other_id} ")), "{list}");
    // `cmd=` is each client's last command (the caller's is this one), `idle=` the seconds
    // since its last command.
    let mine = list
        .lines()
        .find(|l| l.starts_with(&format!("id={id} ")))
        .unwrap();
    assert!(
        mine.contains(" idle=0 ") && mine.contains(" cmd=client|list "),
        "{mine}"
    );
    let theirs = list
        .lines()
        .find(|l| l.starts_with(&format!("id={other_id} ")))
        .unwrap();
    assert!(theirs.contains(" cmd=client|id "), "{theirs}");
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut other).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let theirs = list
        .lines()
        .find(|l| l.starts_with(&format!("id={other_id} ")))
        .unwrap();
    assert!(
        theirs.contains(" idle=1 ") && theirs.contains(" cmd=get "),
        "{theirs}"
    );
    drop(other);

    let mut s = server.raw();
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"CLIENT SETNAME \"a b\"\r\n",
            b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
        ),
        (
            b"CLIENT SETNAME\r\n",
            b"-ERR wrong number of arguments for 'client|setname' command\r\n",
        ),
        (
            b"CLIENT FOO\r\n",
            b"-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n",
        ),
        (
            b"CLIENT SETINFO foo x\r\n",
            b"-ERR Unrecognized option 'foo'\r\n",
        ),
        (b"CLIENT SETNAME n1\r\n", b"+OK\r\n"),
        (b"CLIENT GETNAME\r\n", b"$2\r\nn1\r\n"),
        (b"RESET\r\n", b"+RESET\r\n"),
        (b"CLIENT GETNAME\r\n", b"$-1\r\n"),
    ];
    for (request, reply) in cases {
        let got = exchange(&mut s, request, reply.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply)
        );
    }
}

#[test]
fn command_docs_describe_the_supported_arguments_for_redis_cli_hints() {
    let server = TestServer::start();
    let client = redis::Client::open(format!("{}?protocol=resp3", server.url())).unwrap();
    let mut c = client.get_connection().unwrap();
    let docs: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("set")
        .arg("CLIENT|SETNAME")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    let Value::Map(entries) = docs else {
        panic!("not a map: {docs:?}")
    };
    let names: Vec<String> = entries
        .iter()
        .map(|(k, _)| redis::from_redis_value(k.clone()).unwrap())
        .collect();
    assert_eq!(names, ["set", "client|setname"]);
    let text = format!("{:?}", entries[0].1);
    // SET's hint is `key value [GET] [EX|PX|EXAT|PXAT|KEEPTTL]`: no NX or XX.
    for part in [
        "\"key\"",
        "\"value\"",
        "\"pure-token\"",
        "\"GET\"",
        "optional",
    ] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
    assert!(!text.contains("NX"), "{text}");
    let all: Value = redis::cmd("COMMAND").arg("DOCS").query(&mut c).unwrap();
    let Value::Map(all) = all else { panic!() };
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert_eq!(all.len() as i64, count, "every command is documented");
}

#[test]
fn command_info_gives_arity_and_key_positions() {
    let server = TestServer::start();
    let mut c = server.client();
    let all: Vec<Value> = redis::cmd("COMMAND").query(&mut c).unwrap();
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert_eq!(all.len() as i64, count);
    let info: Vec<Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("MSET")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    assert_eq!(info[1], Value::Nil);
    let Value::Array(mset) = &info[0] else {
        panic!("{info:?}")
    };
    assert_eq!(mset.len(), 10);
    let name: String = redis::from_redis_value(mset[0].clone()).unwrap();
    assert_eq!(name, "mset");
    let positions: Vec<i64> = mset[1..]
        .iter()
        .filter_map(|v| match v {
            Value::Int(n) => Some(*n),
            _ => None,
        })
        .collect();
    // Arity -3; keys from 1 to the last, every second argument.
    assert_eq!(positions, [-3, 1, -1, 2]);
}

/// `DBSIZE` comes from the nodes' live-key counters: each key once (not once per replica),
/// overwrites not counted again, deletes subtracted; with one of three nodes down the two
/// others (each holding every key) still give the exact count.
#[test]
fn dbsize_counts_each_live_key_once_after_overwrites_deletes_and_a_failed_node() {
    let server = TestServer::start();
    let mut c = server.client();
    let pairs: Vec<(String, String)> = (0..500).map(|i| (format!("k{i}"), "v".into())).collect();
    let _: () = c.mset(&pairs).unwrap();
    let _: () = c.mset(&pairs[..100]).unwrap();
    let doomed: Vec<&String> = pairs[..50].iter().map(|(k, _)| k).collect();
    let n: i64 = c.del(&doomed).unwrap();
    assert_eq!(n, 50);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 450);
    let _: () = redis::cmd("KVSTORE")
        .arg("FAIL")
        .arg("node2")
        .query(&mut c)
        .unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 450);
}
