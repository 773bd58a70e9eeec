//! The cluster described in lines of text, as the `kvstore` REPL prints them and the server's
//! `KVSTORE` command answers them: one place for the texts, so both stay the same.
//!
//! Each function returns the lines without a heading or styling; the caller adds those.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use kv_ring::NodeId;

use crate::{Cluster, ClusterStats, Health, NodeInfo, NodeState, Result};

/// `Cluster has N nodes:`, then `- Node: <id>` per member, with ` (joining)`, ` (leaving)`,
/// ` (down for <s>s)` or ` (unreachable)`, ` (catching up: hints|repair)`, `, <n> hints held
/// for it` and `, last catch-up <s>s ago: ...` where they apply (so a healthy cluster's lines
/// are just the ids).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let cluster = kv_cluster::Cluster::open(dir.path(), kv_cluster::ClusterOptions::new())?;
/// let lines = kv_cluster::report::nodes(&cluster.nodes());
/// assert_eq!(lines, ["Cluster has 3 nodes:", "- Node: node1", "- Node: node2", "- Node: node3"]);
/// cluster.fail_node("node2")?;
/// cluster.put(b"k", b"v")?;
/// let lines = kv_cluster::report::nodes(&cluster.nodes());
/// assert!(lines[2].starts_with("- Node: node2 (down for "), "{lines:?}");
/// assert!(lines[2].ends_with(", 1 hints held for it"), "{lines:?}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn nodes(nodes: &[NodeInfo]) -> Vec<String> {
    let mut out = vec![format!("Cluster has {} nodes:", nodes.len())];
    for n in nodes {
        let state = match n.state {
            NodeState::Member => "",
            NodeState::Joining => " (joining)",
            NodeState::Leaving => " (leaving)",
        };
        let health = match n.health {
            Health::Up => String::new(),
            Health::Down { since } => format!(" (down for {}s)", ago(since)),
            Health::Unreachable => " (unreachable)".to_string(),
        };
        let mut line = format!("- Node: {}{state}{health}", n.id);
        if let Some(phase) = n.catch_up.running {
            let _ = write!(line, " (catching up: {})", phase.as_str());
        }
        if n.hints > 0 {
            let _ = write!(line, ", {} hints held for it", n.hints);
        }
        if let Some(last) = &n.catch_up.last {
            let _ = write!(line, ", last catch-up {}s ago: ", ago(last.finished));
            match &last.error {
                Some(e) => {
                    let _ = write!(line, "failed ({e})");
                }
                None => {
                    let _ = write!(
                        line,
                        "{} hints handed off, {} keys repaired in {:.1}s",
                        last.hints_applied,
                        last.keys_repaired,
                        last.elapsed.as_secs_f64()
                    );
                }
            }
        }
        out.push(line);
    }
    out
}

/// Whole seconds since `t` (0 if the clock went back).
fn ago(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs())
}

/// The keys per node (as primary, and every replica held), the total, hints waiting and the
/// background repair's status.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let cluster = kv_cluster::Cluster::open(dir.path(), kv_cluster::ClusterOptions::new())?;
/// cluster.put(b"k", b"v")?;
/// let lines = kv_cluster::report::stats(&cluster.stats()?);
/// assert_eq!(lines.last().map(String::as_str), Some("Total keys in cluster: 1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stats(st: &ClusterStats) -> Vec<String> {
    let mut out = Vec::with_capacity(st.nodes.len() + 3);
    for n in &st.nodes {
        if !n.up {
            out.push(format!("Node {}: down", n.id));
            continue;
        }
        out.push(format!(
            "Node {}: {} keys ({:.1}%), {} replicas",
            n.id,
            n.primary_keys,
            n.share * 100.0,
            n.replica_keys
        ));
    }
    out.push(format!("Total keys in cluster: {}", st.total_keys));
    if st.hints > 0 {
        out.push(format!(
            "Hinted writes waiting for down nodes: {}",
            st.hints
        ));
    }
    if let Some(r) = &st.background_repair {
        let last = match (&r.last_error, &r.last) {
            (Some(e), _) => format!("last round failed: {e}"),
            (None, Some(l)) => format!(
                "last round: {} ranges compared, {} keys repaired",
                l.ranges_compared, l.keys_repaired
            ),
            (None, None) => "no round yet".to_string(),
        };
        let when = r
            .last_finished
            .map_or_else(String::new, |t| format!(", finished {}s ago", ago(t)));
        out.push(format!(
            "Background repair every {} s: {} rounds, {last}{when}",
            r.interval.as_secs(),
            r.rounds
        ));
    }
    out
}

/// The keys with a TTL (an expiry) per node and in total, for [`stats`]'s lines: `counts`
/// holds each node's own count (`kv_node::NodeStats::expiring_keys`), for the nodes whose
/// count is known to the caller (a storage node of another process is not).
///
/// A node counts the keys it holds as any replica, so the total is the sum divided by the
/// replication factor (exact when the replicas are in sync), or a lower bound (`at least`)
/// when a node is down or not counted. A key counts from its write with an expiry until
/// compaction or active expiry removes it: an expired key not yet reclaimed still counts.
///
/// ```
/// use std::collections::BTreeMap;
/// use kv_cluster::{Cluster, ClusterOptions};
/// use kv_ring::NodeId;
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterOptions::new())?;
/// cluster.put(b"k", b"v")?;
/// let st = cluster.stats()?;
/// let counts: BTreeMap<NodeId, u64> = st.nodes.iter().map(|n| (n.id.clone(), 1)).collect();
/// let lines = kv_cluster::report::expiring(&st, &counts);
/// assert_eq!(lines[0], "Keys with a TTL per node: node1 1, node2 1, node3 1");
/// assert!(lines[1].starts_with("Total keys with a TTL: 1 (3 replica records / replication factor 3"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn expiring(st: &ClusterStats, counts: &BTreeMap<NodeId, u64>) -> Vec<String> {
    let mut per_node = Vec::with_capacity(st.nodes.len());
    let (mut records, mut counted) = (0u64, 0usize);
    for n in &st.nodes {
        match counts.get(&n.id) {
            _ if !n.up => per_node.push(format!("{} down", n.id)),
            Some(c) => {
                per_node.push(format!("{} {c}", n.id));
                records += c;
                counted += 1;
            }
            None => per_node.push(format!("{} not known here", n.id)),
        }
    }
    let rf = st.replication_factor.max(1) as u64;
    let keys = records.div_ceil(rf);
    let (total, scope) = if counted == st.nodes.len() {
        (keys.to_string(), String::new())
    } else {
        (
            format!("at least {keys}"),
            format!(" on {counted} of {} nodes", st.nodes.len()),
        )
    };
    vec![
        format!("Keys with a TTL per node: {}", per_node.join(", ")),
        format!(
            "Total keys with a TTL: {total} ({records} replica records{scope} / replication \
             factor {rf}; an expired key counts until compaction or active expiry removes it)"
        ),
    ]
}

/// The ring's title (`Ring (epoch E, replication factor RF)`) and a line per node: its
/// tokens and the share of the ring it is primary and replica for.
///
/// # Errors
///
/// [`Error::Ring`](crate::Error::Ring) if the ring cannot compute ownership (an empty ring).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let cluster = kv_cluster::Cluster::open(dir.path(), kv_cluster::ClusterOptions::new())?;
/// let (title, lines) = kv_cluster::report::ring(&cluster)?;
/// assert!(title.starts_with("Ring (epoch "));
/// assert_eq!(lines.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn ring(cluster: &Cluster) -> Result<(String, Vec<String>)> {
    let ring = cluster.ring();
    let rf = cluster.replication_factor();
    let own = ring.ownership(rf)?;
    let title = format!("Ring (epoch {}, replication factor {rf})", ring.epoch());
    let lines = own
        .iter()
        .map(|o| {
            let tokens = ring.tokens_of(o.node.as_str()).map_or(0, <[u64]>::len);
            format!(
                "Node {}: {tokens} tokens, primary for {:.1}% of tokens, replica for {:.1}%",
                o.node,
                o.primary * 100.0,
                o.replica * 100.0
            )
        })
        .collect();
    Ok((title, lines))
}
