//! `flush`: make every acknowledged write durable now.

use super::{Run, Spec, none};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "flush";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["flush"],
    aliases: &[],
    synopsis: USAGE,
    help: "make every acknowledged write durable now",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Flush))
    },
};

/// `flush`.
#[derive(Debug)]
pub struct Flush;

impl Run for Flush {
    fn run(&self, session: &Session) -> Outcome {
        let s = session.style;
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            Target::Remote(client) => return session.remote_admin(client, &[b"FLUSH"], "flush"),
        };
        match cluster.sync() {
            Ok(()) => Outcome::line(s.ok("Flushed: every acknowledged write is on disk")),
            Err(e) => Outcome::failed(s.fail(format!("flush: {}", chain(&e)))),
        }
    }
}
