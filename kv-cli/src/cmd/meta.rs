//! `meta`: the cluster metadata as the connected node sees it (`KVSTORE META`).

use super::{Run, Spec, none};
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "meta";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["meta"],
    aliases: &[],
    synopsis: USAGE,
    help: "a node process's metadata raft: leader, voters, epoch, members",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Meta))
    },
};

/// `meta`.
#[derive(Debug)]
pub struct Meta;

impl Run for Meta {
    fn run(&self, session: &Session) -> Outcome {
        match &session.target {
            Target::Local(_) => Outcome::failed(
                "meta: a cluster in this process keeps its membership in cluster.json; the \
                 metadata raft runs in node processes (kvstore serve --node-id, then \
                 kvstore --connect)"
                    .to_owned(),
            ),
            Target::Remote(client) => session.remote_admin(client, &[b"META"], "meta"),
        }
    }
}
