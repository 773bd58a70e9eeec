//! `repair`: anti-entropy; replicas compared by Merkle trees, what differs fixed.

use super::{Run, Spec, none};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "repair";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["repair"],
    aliases: &[],
    synopsis: USAGE,
    help: "anti-entropy: compare replicas by Merkle trees, fix what differs",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Repair))
    },
};

/// `repair`.
#[derive(Debug)]
pub struct Repair;

impl Run for Repair {
    fn run(&self, session: &Session) -> Outcome {
        let s = session.style;
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            Target::Remote(client) => {
                return session.remote_admin_with(
                    client,
                    &[b"REPAIR"],
                    "repair",
                    Some(&mut |_| {}),
                );
            }
        };
        match cluster.repair() {
            Ok(r) => Outcome::line(s.ok(format!(
                "Repair complete: {} ranges compared, {} bytes of hashes exchanged, {} differing leaves, {} keys repaired",
                r.ranges_compared, r.hash_bytes, r.leaves_differing, r.keys_repaired
            ))),
            Err(e) => Outcome::failed(s.fail(format!("repair: {}", chain(&e)))),
        }
    }
}
