//! `stats`: keys per node (as primary, and every replica held), hints waiting, and the
//! background repair's status.

use super::{Run, Spec, none};
use crate::output::chain;
use crate::session::{Outcome, Session};

const USAGE: &str = "stats";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["stats"],
    aliases: &[],
    synopsis: USAGE,
    help: "keys per node (as primary, and every replica held)",
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
        let st = match session.cluster.stats() {
            Ok(st) => st,
            Err(e) => return Outcome::failed(s.fail(format!("stats: {}", chain(&e)))),
        };
        let mut out = vec![s.heading("Data Distribution Statistics")];
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
            out.push(format!(
                "Background repair every {} s: {} rounds, {last}",
                r.interval.as_secs(),
                r.rounds
            ));
        }
        Outcome::lines(out)
    }
}
