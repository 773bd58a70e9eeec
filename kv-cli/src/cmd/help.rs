//! `help`: every command of the table, with its usage and what it does.

use super::{Run, Spec, help_text, none};
use crate::session::{Outcome, Session};

const USAGE: &str = "help";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["help"],
    aliases: &["?"],
    synopsis: USAGE,
    help: "this text",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Help))
    },
};

/// `help`.
#[derive(Debug)]
pub struct Help;

impl Run for Help {
    fn run(&self, _session: &Session) -> Outcome {
        Outcome::lines(help_text().lines().map(str::to_owned).collect())
    }
}
