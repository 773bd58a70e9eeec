//! `nodes`: list the cluster's nodes, with their state and health.

use kv_cluster::{Health, NodeState};

use super::{Run, Spec, none};
use crate::session::{Outcome, Session};

const USAGE: &str = "nodes";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["nodes"],
    aliases: &[],
    synopsis: USAGE,
    help: "list the cluster's nodes",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Nodes))
    },
};

/// `nodes`.
#[derive(Debug)]
pub struct Nodes;

impl Run for Nodes {
    fn run(&self, session: &Session) -> Outcome {
        let nodes = session.cluster.nodes();
        let mut out = vec![format!("Cluster has {} nodes:", nodes.len())];
        for n in nodes {
            let state = match n.state {
                NodeState::Member => "",
                NodeState::Joining => " (joining)",
                NodeState::Leaving => " (leaving)",
                _ => " (changing)",
            };
            let health = match n.health {
                Health::Up => String::new(),
                Health::Down { since } => format!(
                    " (down for {}s)",
                    since.elapsed().map_or(0, |d| d.as_secs())
                ),
                _ => " (unknown health)".into(),
            };
            out.push(format!("- Node: {}{state}{health}", n.id));
        }
        Outcome::lines(out)
    }
}
