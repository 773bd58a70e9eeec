//! `kvstore serve` answers a real Redis client: the ready line, a SET/GET/DEL round trip, and
//! keys and values that are not text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{EXIT_TIMEOUT, Served, data_dir};

#[test]
fn the_ready_line_gives_the_loopback_address_and_the_port_chosen() {
    let dir = data_dir();
    let mut server = Served::start(dir.path(), &[]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_ne!(server.addr.port(), 0);
    let pong: String = redis::cmd("PING").query(&mut server.client()).unwrap();
    assert_eq!(pong, "PONG");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
    // One line on stdout, the ready line, and nothing after it.
    assert_eq!(server.stdout(), Vec::<String>::new());
}

#[test]
fn set_get_del_round_trip() {
    let dir = data_dir();
    let server = Served::start(dir.path(), &[]);
    let mut c = server.client();
    let ok: String = redis::cmd("SET").arg("k").arg("v1").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let got: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(got.as_deref(), Some("v1"));
    let ok: String = redis::cmd("SET").arg("k").arg("v2").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let got: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(got.as_deref(), Some("v2"));
    let deleted: i64 = redis::cmd("DEL").arg("k").query(&mut c).unwrap();
    assert_eq!(deleted, 1);
    let got: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(got, None);
    let deleted: i64 = redis::cmd("DEL").arg("k").query(&mut c).unwrap();
    assert_eq!(deleted, 0);
}

#[test]
fn binary_keys_and_values_round_trip() {
    let dir = data_dir();
    let server = Served::start(dir.path(), &[]);
    let mut c = server.client();
    let pairs: [(&[u8], &[u8]); 4] = [
        (b"nul\0key", b"nul\0value\0"),
        (b"crlf\r\nkey\r\n", b"*1\r\n$4\r\nPING\r\n"),
        (b"\xff\xfe not utf-8 \xc3\x28", b"\x80\x81\xfe\xff\xc0\xaf"),
        (b"\0", b"\r\n$-1\r\n\0"),
    ];
    for (k, v) in pairs {
        let ok: String = redis::cmd("SET").arg(k).arg(v).query(&mut c).unwrap();
        assert_eq!(ok, "OK");
    }
    for (k, v) in pairs {
        let got: Option<Vec<u8>> = redis::cmd("GET").arg(k).query(&mut c).unwrap();
        assert_eq!(got.as_deref(), Some(v), "{k:?}");
    }
    let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| *k).collect();
    let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
    let want: Vec<Option<Vec<u8>>> = pairs.iter().map(|(_, v)| Some(v.to_vec())).collect();
    assert_eq!(got, want);
    let deleted: i64 = redis::cmd("DEL").arg(&keys).query(&mut c).unwrap();
    assert_eq!(deleted, 4);
    let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
    assert_eq!(got, vec![None; 4]);
}

/// The README's Rust client example, against a server on a free port.
#[test]
fn the_readme_rust_client_example_works() {
    use redis::Commands as _;

    let dir = data_dir();
    let server = Served::start(dir.path(), &[]);
    let run = || -> redis::RedisResult<()> {
        let mut con = redis::Client::open(format!("redis://{}/", server.addr))?.get_connection()?;
        let () = con.set("user:1001", "Alice Johnson")?;
        let name: Option<String> = con.get("user:1001")?;
        assert_eq!(name.as_deref(), Some("Alice Johnson"));
        let deleted: u64 = con.del("user:1001")?;
        assert_eq!(deleted, 1);
        Ok(())
    };
    run().unwrap();
}

#[test]
fn requirepass_refuses_commands_until_auth() {
    let dir = data_dir();
    let server = Served::start(dir.path(), &["--requirepass", "s3cret"]);
    let mut c = server.client();
    let err = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut c)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    let err = redis::cmd("AUTH")
        .arg("wrong")
        .query::<String>(&mut c)
        .unwrap_err();
    assert_eq!(err.code(), Some("WRONGPASS"), "{err}");
    let ok: String = redis::cmd("AUTH").arg("s3cret").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let ok: String = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
}

#[test]
fn scan_returns_every_key_through_the_served_cluster() {
    let dir = data_dir();
    let server = Served::start(dir.path(), &[]);
    let mut c = server.client();
    let mut written: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    for k in &written {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut c).unwrap();
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    for _ in 0..10_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(50)
            .query(&mut c)
            .unwrap();
        seen.extend(keys);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "the scan ended");
    seen.sort();
    seen.dedup();
    written.sort();
    assert_eq!(seen, written);
}
