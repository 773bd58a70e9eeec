//! `INFO`: sections, counters that follow what clients did, Redis's text format.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::TestServer;
use kv_server::ServerOptions;
use redis::Commands;

fn field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {info}"))
}

#[test]
fn info_reports_sections_and_counts_commands() {
    let server = TestServer::with_options(
        ServerOptions::new().sync_policy(Some(kv_wal::SyncPolicy::Always)),
    );
    let mut c = server.client();
    let _: () = c.set("a", "1").unwrap();
    let _: () = c.set("b", "2").unwrap();
    let _: Option<String> = c.get("a").unwrap();
    let _: Option<String> = c.get("missing").unwrap();
    let _: Vec<Option<String>> = c.mget(&["a", "b", "nope"]).unwrap();
    assert!(redis::cmd("GET").query::<String>(&mut c).is_err()); // wrong arity: rejected
    assert!(
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .arg("NX")
            .query::<String>(&mut c)
            .is_err()
    ); // failed
    // A pipelined run of GETs is counted too.
    let mut pipe = redis::pipe();
    for _ in 0..10 {
        pipe.get("a");
    }
    let _: Vec<String> = pipe.query(&mut c).unwrap();

    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for header in [
        "# Server",
        "# Clients",
        "# Persistence",
        "# Stats",
        "# Cluster",
        "# Keyspace",
    ] {
        assert!(info.contains(&format!("{header}\r\n")), "{header}: {info}");
    }
    assert!(!info.contains("# Commandstats"), "not a default section");
    assert_eq!(field(&info, "redis_mode"), "standalone");
    assert_eq!(field(&info, "tcp_port"), server.addr.port().to_string());
    assert_eq!(field(&info, "connected_clients"), "1");
    assert_eq!(field(&info, "db0"), "keys=2,expires=0,avg_ttl=0");
    assert_eq!(field(&info, "keyspace_hits"), "13");
    assert_eq!(field(&info, "keyspace_misses"), "2");
    assert_eq!(field(&info, "kvstore_sync_policy"), "always");
    assert_eq!(field(&info, "cluster_enabled"), "0");
    assert_eq!(field(&info, "kvstore_members"), "3");
    assert_eq!(field(&info, "kvstore_members_up"), "3");
    assert_eq!(field(&info, "kvstore_change_in_progress"), "none");
    assert_eq!(
        field(&info, "kvstore_node_node2"),
        "state=member,health=up,tokens=2000,hints=0,catching_up=no"
    );
    assert_eq!(field(&info, "kvstore_hints_pending"), "0");
    assert_eq!(field(&info, "kvstore_background_repair_interval_s"), "0");
    assert_eq!(
        info.lines()
            .filter(|l| l.starts_with("kvstore_node_node"))
            .count(),
        3
    );

    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    assert!(stats.starts_with("# Commandstats\r\n"), "{stats}");
    let get = field(&stats, "cmdstat_get");
    assert!(get.starts_with("calls=12,usec="), "{get}");
    assert!(get.ends_with(",rejected_calls=1,failed_calls=0"), "{get}");
    let set = field(&stats, "cmdstat_set");
    assert!(set.starts_with("calls=3,"), "{set}");
    assert!(set.ends_with(",rejected_calls=0,failed_calls=1"), "{set}");
    assert!(field(&stats, "cmdstat_info").starts_with("calls=1,"));
    let latency: String = redis::cmd("INFO")
        .arg("latencystats")
        .query(&mut c)
        .unwrap();
    assert!(latency.starts_with("# Latencystats\r\n"), "{latency}");
    let get = field(&latency, "latency_percentiles_usec_get");
    let p: Vec<f64> = get
        .split(',')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    assert!(get.starts_with("p50=") && get.contains(",p99=") && get.contains(",p99.9="));
    assert!(p[0] > 0.0 && p[0] <= p[1] && p[1] <= p[2], "{get}");
    assert!(
        !latency.contains("latency_percentiles_usec_dbsize"),
        "a command never called has no line"
    );
    let everything: String = redis::cmd("INFO").arg("everything").query(&mut c).unwrap();
    assert!(everything.contains("# Commandstats\r\n") && everything.contains("# Latencystats\r\n"));
    // Sections by name, case-insensitively; an unknown one is empty.
    let one: String = redis::cmd("INFO").arg("CLIENTS").query(&mut c).unwrap();
    assert!(one.starts_with("# Clients\r\n") && !one.contains("# Server"));
    let none: String = redis::cmd("INFO").arg("nosuch").query(&mut c).unwrap();
    assert_eq!(none, "");
    let total: u64 = field(
        &redis::cmd("INFO")
            .arg("stats")
            .query::<String>(&mut c)
            .unwrap(),
        "total_commands_processed",
    )
    .parse()
    .unwrap();
    // 2 SET + 2 GET + MGET + the failed SET + 10 GET + 4 INFO (rejected GET not counted).
    assert!(total >= 20, "{total}");
}

#[test]
fn instantaneous_ops_per_sec_follows_the_load() {
    let server = TestServer::start();
    let mut c = server.client();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("PING").arg(i);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let _: Vec<String> = pipe.query(&mut c).unwrap();
    }
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    let ops: u64 = field(&info, "instantaneous_ops_per_sec").parse().unwrap();
    assert!(ops > 0, "{info}");
}

#[test]
fn info_persistence_reports_the_last_flush() {
    let server = TestServer::start();
    let mut c = server.client();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let _: () = c.set("a", "1").unwrap();
    let _: String = redis::cmd("KVSTORE").arg("FLUSH").query(&mut c).unwrap();
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    let at: u64 = field(&info, "kvstore_last_flush_time").parse().unwrap();
    assert!(at >= start && at <= start + 60, "{info}");
    let ago: i64 = field(&info, "kvstore_last_flush_ago_ms").parse().unwrap();
    assert!((0..60_000).contains(&ago), "{info}");
}

/// `expires=` counts the keys with an expiry, as Redis's: set by `SET .. EX|PX`, `SETEX` and
/// `EXPIRE`, gone with `PERSIST`, a plain `SET` over it, or `DEL` (it was always 0 before).
#[test]
fn info_keyspace_counts_the_keys_with_an_expiry() {
    let server = TestServer::start();
    let mut c = server.client();
    let db0 = |c: &mut redis::Connection| {
        let info: String = redis::cmd("INFO").arg("keyspace").query(c).unwrap();
        field(&info, "db0").to_owned()
    };
    let _: () = c.set("plain", "v").unwrap();
    let _: () = c.set("later", "v").unwrap();
    assert_eq!(db0(&mut c), "keys=2,expires=0,avg_ttl=0");
    let _: () = redis::cmd("SET")
        .arg("ex")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let _: () = c.set_ex("setex", "v", 100).unwrap();
    let _: () = redis::cmd("SET")
        .arg("px")
        .arg("v")
        .arg("PX")
        .arg(100_000)
        .query(&mut c)
        .unwrap();
    let _: bool = c.expire("later", 100).unwrap();
    assert_eq!(db0(&mut c), "keys=5,expires=4,avg_ttl=0");
    let _: bool = c.persist("px").unwrap();
    let _: () = c.set("setex", "no ttl now").unwrap();
    let _: u32 = c.del("ex").unwrap();
    assert_eq!(db0(&mut c), "keys=4,expires=1,avg_ttl=0");
}
