//! `INFO [section ...]`: Redis 7's text format (`# Section` headers, `field:value` lines,
//! CRLF line ends, a blank line between sections), with kvstore's own fields prefixed
//! `kvstore_`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kv_cluster::{Cluster, Health, NodeState};
use kv_wal::SyncPolicy;

use crate::commands::COMMANDS;
use crate::session::Session;

/// The Redis version reported: the semantics served are Redis 7's, and clients (such as
/// `redis-cli`'s hints) compare this with the version a command appeared in.
pub(crate) const REDIS_VERSION: &str = "7.2.0";

/// Sections in the order `INFO` prints them; `true` for those in the default set.
const SECTIONS: &[(&str, bool)] = &[
    ("server", true),
    ("clients", true),
    ("persistence", true),
    ("stats", true),
    ("cluster", true),
    ("keyspace", true),
    ("commandstats", false),
    ("latencystats", false),
];

/// `INFO [section ...]`: a bulk string (verbatim text in RESP3), as Redis.
pub(crate) fn info(cluster: &Cluster, session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let asked: Vec<Vec<u8>> = args[1..].iter().map(|a| a.to_ascii_lowercase()).collect();
    let all = asked.iter().any(|a| a == b"all" || a == b"everything");
    let default = asked.is_empty() || asked.iter().any(|a| a == b"default");
    let mut text = String::new();
    for &(name, in_default) in SECTIONS {
        let wanted = all || (default && in_default) || asked.iter().any(|a| a == name.as_bytes());
        if !wanted {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        section(cluster, session, name, &mut text);
    }
    session.encoder().verbatim(out, *b"txt", text.as_bytes());
}

fn section(cluster: &Cluster, session: &Session, name: &str, t: &mut String) {
    let shared = &session.shared;
    let stats = &shared.stats;
    // Writing to a String cannot fail.
    let _ = match name {
        "server" => {
            let uptime = stats.started.elapsed().as_secs();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            write!(
                t,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nkvstore_version:{}\r\n\
                 redis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\n\
                 tcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{uptime}\r\n\
                 uptime_in_days:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH,
                usize::BITS,
                std::process::id(),
                shared.addr.port(),
                now.as_micros(),
                uptime / 86_400,
            )
        }
        "clients" => write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n",
            shared.clients.len(),
            shared.options.get_max_clients(),
        ),
        "persistence" => {
            let policy = match shared.options.get_sync_policy() {
                Some(SyncPolicy::Always) => "always".to_string(),
                Some(SyncPolicy::Periodic(every)) => format!("periodic {}ms", every.as_millis()),
                Some(SyncPolicy::Never) => "never".to_string(),
                Some(other) => format!("{other:?}"),
                None => "unknown".to_string(),
            };
            // As Redis's `rdb_last_save_time`: Unix seconds, -1 for never.
            let (at, ago) = match cluster.last_flush() {
                Some(at) => (
                    at.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs().cast_signed()),
                    std::time::SystemTime::now()
                        .duration_since(at)
                        .map_or(0, |d| d.as_millis().try_into().unwrap_or(i64::MAX)),
                ),
                None => (-1, -1),
            };
            write!(
                t,
                "# Persistence\r\nloading:0\r\nkvstore_sync_policy:{policy}\r\n\
                 kvstore_data_dir:{}\r\nkvstore_last_flush_time:{at}\r\n\
                 kvstore_last_flush_ago_ms:{ago}\r\n",
                cluster.data_dir().display()
            )
        }
        "stats" => write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             instantaneous_ops_per_sec:{}\r\nrejected_connections:{}\r\n\
             keyspace_hits:{}\r\nkeyspace_misses:{}\r\n",
            stats
                .connections_received
                .load(std::sync::atomic::Ordering::Relaxed),
            stats.total_commands(),
            stats.ops_per_sec(),
            stats
                .rejected_connections
                .load(std::sync::atomic::Ordering::Relaxed),
            stats.keyspace_hits(),
            stats.keyspace_misses(),
        ),
        "cluster" => cluster_section(cluster, session, t),
        "keyspace" => {
            t.push_str("# Keyspace\r\n");
            // As Redis, an empty database is not listed. The counts come from the nodes'
            // counters (one call per node), as DBSIZE's: exact in a settled cluster.
            // `expires` counts the keys with an expiry, as Redis's; an expired key counts
            // until it is reclaimed, and a node whose count is not known here (another
            // process's) is left out, so it is then a lower bound.
            match cluster.key_count() {
                Ok(c) if c.keys > 0 => {
                    let expires = cluster.expiring_key_count().keys;
                    write!(t, "db0:keys={},expires={expires},avg_ttl=0\r\n", c.keys)
                }
                Ok(_) => Ok(()),
                Err(e) => write!(t, "kvstore_keyspace_error:{}\r\n", one_line(&e.to_string())),
            }
        }
        "latencystats" => {
            t.push_str("# Latencystats\r\n");
            for (i, (name, _)) in COMMANDS.iter().enumerate() {
                if let Some(p) = stats.percentiles(i, &[50.0, 99.0, 99.9]) {
                    let _ = write!(
                        t,
                        "latency_percentiles_usec_{name}:p50={:.3},p99={:.3},p99.9={:.3}\r\n",
                        p[0], p[1], p[2]
                    );
                }
            }
            Ok(())
        }
        // `commandstats`
        _ => {
            t.push_str("# Commandstats\r\n");
            for (i, (name, _)) in COMMANDS.iter().enumerate() {
                let Some(c) = stats.command(i) else { continue };
                if c.calls == 0 && c.rejected == 0 && c.failed == 0 {
                    continue;
                }
                let per_call = if c.calls == 0 {
                    0.0
                } else {
                    c.usec as f64 / c.calls as f64
                };
                let _ = write!(
                    t,
                    "cmdstat_{name}:calls={},usec={},usec_per_call={per_call:.2},\
                     rejected_calls={},failed_calls={}\r\n",
                    c.calls, c.usec, c.rejected, c.failed
                );
            }
            Ok(())
        }
    };
}

/// `# Cluster`: Redis's `cluster_enabled:0` (kvstore is not a Redis Cluster), then the
/// kvstore cluster's members, health, ring and the change in progress.
fn cluster_section(cluster: &Cluster, session: &Session, t: &mut String) -> std::fmt::Result {
    t.push_str("# Cluster\r\ncluster_enabled:0\r\n");
    let ring = cluster.ring();
    let nodes = cluster.nodes();
    let up = nodes.iter().filter(|n| n.health.is_up()).count();
    write!(
        t,
        "kvstore_ring_epoch:{}\r\nkvstore_replication_factor:{}\r\nkvstore_members:{}\r\n\
         kvstore_members_up:{up}\r\n",
        ring.epoch(),
        cluster.replication_factor(),
        nodes.len(),
    )?;
    for n in &nodes {
        let state = match n.state {
            NodeState::Member => "member",
            NodeState::Joining => "joining",
            NodeState::Leaving => "leaving",
            _ => "unknown",
        };
        let health = match n.health {
            Health::Up => "up",
            Health::Unreachable => "unreachable",
            _ => "down",
        };
        let catching_up = n.catch_up.running.map_or("no", |p| p.as_str());
        write!(
            t,
            "kvstore_node_{}:state={state},health={health},tokens={},hints={},\
             catching_up={catching_up}",
            n.id, n.tokens, n.hints
        )?;
        if let Some(last) = &n.catch_up.last {
            write!(
                t,
                ",last_catch_up_time={},last_catch_up_hints={},last_catch_up_keys_repaired={},\
                 last_catch_up_ok={}",
                unix_secs(last.finished),
                last.hints_applied,
                last.keys_repaired,
                u8::from(last.error.is_none())
            )?;
        }
        t.push_str("\r\n");
    }
    write!(
        t,
        "kvstore_hints_pending:{}\r\n",
        nodes.iter().map(|n| n.hints).sum::<u64>()
    )?;
    let extension_lines = session
        .shared
        .options
        .get_kvstore_extension()
        .map(|ext| ext.info_cluster())
        .unwrap_or_default();
    // An embedder that runs changes itself (a node process: through its metadata raft, not
    // this cluster's in-process change) reports the change in its own lines.
    let change_is_the_extensions = extension_lines
        .iter()
        .any(|l| l.starts_with("kvstore_change_in_progress:"));
    match cluster.pending_change() {
        _ if change_is_the_extensions => {}
        Some((kind, node)) => write!(t, "kvstore_change_in_progress:{kind} {node}\r\n")?,
        None => t.push_str("kvstore_change_in_progress:none\r\n"),
    }
    if let Some(job) = session.shared.admin.job() {
        write!(t, "kvstore_admin_job:{}\r\n", job.what)?;
        let status = match &job.outcome {
            None => "running",
            Some(Ok(_)) => "done",
            Some(Err(_)) => "failed",
        };
        write!(
            t,
            "kvstore_admin_job_status:{status}\r\nkvstore_admin_job_elapsed_ms:{}\r\n",
            job.started.elapsed().as_millis()
        )?;
        if let Some(p) = &job.progress {
            write!(
                t,
                "kvstore_change_keys_moved:{}\r\nkvstore_change_keys_estimated:{}\r\n\
                 kvstore_change_bytes_moved:{}\r\nkvstore_change_pairs_done:{}\r\n\
                 kvstore_change_pairs_total:{}\r\n",
                p.keys, p.estimated_keys, p.bytes, p.pairs_done, p.pairs_total
            )?;
        }
    }
    match cluster.background_repair() {
        Some(r) => {
            write!(
                t,
                "kvstore_background_repair_interval_s:{}\r\nkvstore_background_repair_rounds:{}\r\n\
                 kvstore_background_repair_last_time:{}\r\n",
                r.interval.as_secs(),
                r.rounds,
                r.last_finished.map_or(-1, unix_secs)
            )?;
            if let Some(last) = &r.last {
                write!(
                    t,
                    "kvstore_background_repair_last_ranges_compared:{}\r\n\
                     kvstore_background_repair_last_keys_repaired:{}\r\n",
                    last.ranges_compared, last.keys_repaired
                )?;
            }
            if let Some(e) = &r.last_error {
                write!(
                    t,
                    "kvstore_background_repair_last_error:{}\r\n",
                    one_line(e)
                )?;
            }
        }
        None => t.push_str("kvstore_background_repair_interval_s:0\r\n"),
    }
    for line in extension_lines {
        write!(t, "{}\r\n", one_line(&line))?;
    }
    Ok(())
}

/// Unix seconds, as Redis's `*_time` fields.
fn unix_secs(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().cast_signed())
}

/// An error text on one INFO line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}
