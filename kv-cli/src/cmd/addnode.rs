//! `addnode <id>`: add a node; only the keys it now replicates move.

use super::{Run, Spec, one, redistribution};
use crate::session::{Outcome, Session};

const USAGE: &str = "addnode <id>";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["addnode"],
    aliases: &[],
    synopsis: USAGE,
    help: "add a node; moves only the keys it now replicates",
    parse: |args| {
        Ok(Box::new(AddNode {
            id: one(args, USAGE)?,
        }))
    },
};

/// `addnode <id>`.
#[derive(Debug)]
pub struct AddNode {
    pub id: String,
}

impl Run for AddNode {
    fn run(&self, session: &Session) -> Outcome {
        redistribution::change(session, &self.id, true)
    }
}
