//! `stats`: keys per node (as primary, and every replica held), hints waiting, the
//! background repair's status, and the keys with a TTL per node and in total.

use super::{Run, Spec, none};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "stats";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["stats"],
    aliases: &[],
    synopsis: USAGE,
    help: "keys per node (as primary, and every replica held), and keys\n\
           with a TTL (an expired one counts until it is reclaimed)",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Stats))
    },
};

/// `stats`.
#[derive(Debug)]
pub struct Stats;

impl Run for Stats {
    fn run(&self, session: &Session) -> Outcome {
        let s = session.style;
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            // The server answers the same lines, the keys with a TTL included.
            Target::Remote(client) => return session.remote_admin(client, &[b"STATS"], "stats"),
        };
        let st = match cluster.stats() {
            Ok(st) => st,
            Err(e) => return Outcome::failed(s.fail(format!("stats: {}", chain(&e)))),
        };
        let mut out = vec![s.heading("Data Distribution Statistics")];
        out.extend(kv_cluster::report::stats(&st));
        Outcome::lines(out)
    }
}
