//! `exit` (or `quit`, or end of input): leave the REPL.

use super::{Run, Spec, none};
use crate::session::{Outcome, Session};

const USAGE: &str = "exit";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["exit", "quit"],
    aliases: &[],
    synopsis: "exit | quit | Ctrl-D",
    help: "leave",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Exit))
    },
};

/// `exit`.
#[derive(Debug)]
pub struct Exit;

impl Run for Exit {
    fn run(&self, _session: &Session) -> Outcome {
        Outcome {
            exit: true,
            ..Outcome::default()
        }
    }
}
