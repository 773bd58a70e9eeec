//! `ring`: token ownership per node.

use super::{Run, Spec, none};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "ring";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["ring"],
    aliases: &[],
    synopsis: USAGE,
    help: "token ownership per node",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Ring))
    },
};

/// `ring`.
#[derive(Debug)]
pub struct Ring;

impl Run for Ring {
    fn run(&self, session: &Session) -> Outcome {
        let s = session.style;
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            Target::Remote(client) => return session.remote_admin(client, &[b"RING"], "ring"),
        };
        let (title, lines) = match kv_cluster::report::ring(cluster) {
            Ok(report) => report,
            Err(e) => return Outcome::failed(s.fail(format!("ring: {}", chain(&e)))),
        };
        let mut out = vec![s.heading(title)];
        out.extend(lines);
        Outcome::lines(out)
    }
}
