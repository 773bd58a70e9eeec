//! `nodes`: list the cluster's nodes, with their state and health.

use super::{Run, Spec, none};
use crate::session::{Outcome, Session, Target};

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
        match &session.target {
            Target::Local(cluster) => Outcome::lines(kv_cluster::report::nodes(&cluster.nodes())),
            Target::Remote(client) => session.remote_admin(client, &[b"NODES"], "nodes"),
        }
    }
}
