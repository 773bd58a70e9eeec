//! `compact`: reclaim the space of overwritten and deleted values now.

use super::{Run, Spec, none};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "compact";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["compact"],
    aliases: &[],
    synopsis: USAGE,
    help: "reclaim the space of overwritten and deleted values now",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Compact))
    },
};

/// `compact`.
#[derive(Debug)]
pub struct Compact;

impl Run for Compact {
    fn run(&self, session: &Session) -> Outcome {
        let s = session.style;
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            Target::Remote(client) => {
                return session.remote_admin_with(
                    client,
                    &[b"COMPACT"],
                    "compact",
                    Some(&mut |_| {}),
                );
            }
        };
        match cluster.compact() {
            Ok(reports) => {
                let mut out: Vec<String> = reports
                    .iter()
                    .map(|(id, r)| {
                        format!(
                            "  {id}: {} segments compacted, {} deleted, {} records copied, {} tombstones purged",
                            r.segments_compacted, r.segments_deleted, r.records_copied, r.tombstones_purged
                        )
                    })
                    .collect();
                out.push(s.ok(format!("Compacted {} nodes", reports.len())));
                Outcome::lines(out)
            }
            Err(e) => Outcome::failed(s.fail(format!("compact: {}", chain(&e)))),
        }
    }
}
