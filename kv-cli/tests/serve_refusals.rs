//! What `kvstore serve` refuses, each with one clear line on stderr and a non-zero exit: a data
//! directory another server holds, an address other than loopback without a password
//! (protected mode), a password it cannot check yet, a port already taken.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Refused, Served, data_dir};

fn refused(dir: &std::path::Path, extra: &[&str]) -> Refused {
    match Served::try_start(dir, extra) {
        Ok(s) => panic!("served on {} with {extra:?}", s.addr),
        Err(r) => r,
    }
}

/// A failure of the program (exit 1), not of its command line (clap's 2), told in one line.
fn one_line_failure(r: &Refused) -> &str {
    assert_eq!(r.status.code(), Some(1), "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    r.stderr.trim_end()
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = data_dir();
    let first = Served::start(dir.path(), &[]);
    let mut c = first.client();
    let ok: String = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    assert_eq!(ok, "OK");

    let second = refused(dir.path(), &[]);
    let line = one_line_failure(&second);
    assert!(
        line.starts_with("kvstore: open the cluster in ")
            && line.ends_with("is in use by another process"),
        "{line}"
    );
    // The first server is unaffected.
    let got: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(got.as_deref(), Some("v"));
}

#[test]
fn a_non_loopback_address_without_a_password_is_refused() {
    for bind in ["0.0.0.0", "::"] {
        let dir = data_dir();
        let r = refused(dir.path(), &["--bind", bind]);
        let line = one_line_failure(&r);
        assert!(
            line.starts_with(&format!(
                "kvstore: refusing to listen on {bind} without a password (protected mode"
            )),
            "{line}"
        );
        // Refused before the cluster is opened.
        assert!(!dir.path().join("cluster.json").exists());
    }
}

#[test]
fn an_empty_password_is_refused() {
    let dir = data_dir();
    let r = refused(dir.path(), &["--requirepass", ""]);
    let line = one_line_failure(&r);
    assert!(
        line.starts_with("kvstore: --requirepass must not be empty"),
        "{line}"
    );
}

#[test]
fn a_port_in_use_is_refused_and_releases_the_data_dir() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = data_dir();
    let r = refused(dir.path(), &["--port", &port]);
    let line = one_line_failure(&r);
    assert!(
        line.starts_with(&format!("kvstore: cannot listen on 127.0.0.1:{port}: ")),
        "{line}"
    );
    // The cluster was closed: another server can open it.
    let again = Served::start(dir.path(), &[]);
    let pong: String = redis::cmd("PING").query(&mut again.client()).unwrap();
    assert_eq!(pong, "PONG");
}
