//! `ring`: token ownership per node.

use super::{Run, Spec, none};
use crate::output::chain;
use crate::session::{Outcome, Session};

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
        let ring = session.cluster.ring();
        let rf = session.cluster.replication_factor();
        let own = match ring.ownership(rf) {
            Ok(own) => own,
            Err(e) => return Outcome::failed(s.fail(format!("ring: {}", chain(&e)))),
        };
        let mut out = vec![s.heading(format!(
            "Ring (epoch {}, replication factor {rf})",
            ring.epoch()
        ))];
        for o in own {
            let tokens = ring.tokens_of(o.node.as_str()).map_or(0, <[u64]>::len);
            out.push(format!(
                "Node {}: {tokens} tokens, primary for {:.1}% of tokens, replica for {:.1}%",
                o.node,
                o.primary * 100.0,
                o.replica * 100.0
            ));
        }
        Outcome::lines(out)
    }
}
