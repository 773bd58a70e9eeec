//! `removenode <id>`: remove a node; its keys move to the remaining ones first.

use super::{Run, Spec, one, redistribution};
use crate::session::{Outcome, Session};

const USAGE: &str = "removenode <id>";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["removenode"],
    aliases: &[],
    synopsis: USAGE,
    help: "remove a node; its keys move to the remaining ones",
    parse: |args| {
        Ok(Box::new(RemoveNode {
            id: one(args, USAGE)?,
        }))
    },
};

/// `removenode <id>`.
#[derive(Debug)]
pub struct RemoveNode {
    pub id: String,
}

impl Run for RemoveNode {
    fn run(&self, session: &Session) -> Outcome {
        redistribution::change(session, &self.id, false)
    }
}
