//! The cluster described in lines of text, as the `kvstore` REPL prints them and the server's
//! `KVSTORE` command answers them: one place for the texts, so both stay the same.
//!
//! Each function returns the lines without a heading or styling; the caller adds those.

use std::fmt::Write as _;
use std::time::SystemTime;

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

/// The keys per node (as primary, and every replica held), the total, hints waiting, the
/// background repair's status, then the keys with a TTL per node and in total (a node's count
/// shows as `not known here` when this process cannot read it, and the total is then `at
/// least` the one of the nodes counted).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let cluster = kv_cluster::Cluster::open(dir.path(), kv_cluster::ClusterOptions::new())?;
/// cluster.put(b"k", b"v")?;
/// cluster.put_expiring(b"s", b"v", Some(cluster.now_millis() + 60_000))?;
/// let lines = kv_cluster::report::stats(&cluster.stats()?);
/// assert_eq!(lines[3], "Total keys in cluster: 2");
/// assert_eq!(lines[4], "Keys with a TTL per node: node1 1, node2 1, node3 1");
/// assert!(lines[5].starts_with("Total keys with a TTL: 1 (3 replica records / replication factor 3"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stats(st: &ClusterStats) -> Vec<String> {
    let mut out = Vec::with_capacity(st.nodes.len() + 5);
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
    out.extend(expiring(st));
    out
}

/// The keys with a TTL (an expiry) per node and in total, for [`stats`]'s last lines: each
/// node's own count ([`NodeStats::expiring_keys`](crate::NodeStats::expiring_keys)), `down`,
/// or `not known here` (a storage node of another process), then the total as
/// [`ClusterStats::expiring`] computes it (`at least` when a node is not counted).
fn expiring(st: &ClusterStats) -> [String; 2] {
    let per_node: Vec<String> = st
        .nodes
        .iter()
        .map(|n| match n.expiring_keys {
            _ if !n.up => format!("{} down", n.id),
            Some(c) => format!("{} {c}", n.id),
            None => format!("{} not known here", n.id),
        })
        .collect();
    let count = st.expiring();
    let rf = st.replication_factor.max(1);
    let (total, scope) = if count.complete() {
        (count.keys.to_string(), String::new())
    } else {
        (
            format!("at least {}", count.keys),
            format!(" on {} of {} nodes", count.counted, count.nodes),
        )
    };
    [
        format!("Keys with a TTL per node: {}", per_node.join(", ")),
        format!(
            "Total keys with a TTL: {total} ({} replica records{scope} / replication factor \
             {rf}; an expired key counts until compaction or active expiry removes it)",
            count.records
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use crate::{ClusterOptions, MemoryBackend};

    use super::*;

    /// A node down, and one whose count this process cannot read (a storage node of another
    /// process): each says so, and the total is a lower bound over the nodes counted.
    #[test]
    fn ttl_lines_name_the_nodes_not_counted_and_bound_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ClusterOptions::new().backend(Arc::new(MemoryBackend::default()));
        let cluster = Cluster::open(dir.path(), opts).unwrap();
        let later = Some(cluster.now_millis() + 600_000);
        cluster.put_expiring(b"a", b"1", later).unwrap();
        cluster.put_expiring(b"b", b"2", later).unwrap();
        cluster.put(b"c", b"3").unwrap();
        let lines = stats(&cluster.stats().unwrap());
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "Keys with a TTL per node: node1 2, node2 2, node3 2",
                "Total keys with a TTL: 2 (6 replica records / replication factor 3; an expired \
                 key counts until compaction or active expiry removes it)"
            ]
        );

        cluster.fail_node("node3").unwrap();
        let mut st = cluster.stats().unwrap();
        st.nodes[1].expiring_keys = None;
        let lines = stats(&st);
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "Keys with a TTL per node: node1 2, node2 not known here, node3 down",
                "Total keys with a TTL: at least 1 (2 replica records on 1 of 3 nodes / \
                 replication factor 3; an expired key counts until compaction or active expiry \
                 removes it)"
            ]
        );
    }
}
