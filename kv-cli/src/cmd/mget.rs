//! `mget <key> [<key> ...]`: read several values.

use super::{ParseError, Run, Spec, usage, user_key};
use crate::output::{chain, text};
use crate::session::{Outcome, Session};

const USAGE: &str = "mget <key> [<key> ...]";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["mget"],
    aliases: &[],
    synopsis: "mget <k> [<k> ...]",
    help: "read several values",
    parse: |args| Ok(Box::new(MGet::parse(args)?)),
};

/// `mget <key> [<key> ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MGet {
    pub keys: Vec<String>,
}

impl MGet {
    fn parse(args: Vec<String>) -> Result<MGet, ParseError> {
        if args.is_empty() {
            return usage(USAGE);
        }
        Ok(MGet {
            keys: args.into_iter().map(user_key).collect::<Result<_, _>>()?,
        })
    }
}

impl Run for MGet {
    fn run(&self, session: &Session) -> Outcome {
        let s = session.style;
        match session.cluster.get_many(&self.keys) {
            Ok(values) => Outcome::lines(
                self.keys
                    .iter()
                    .zip(values)
                    .map(|(k, v)| match v {
                        Some(v) => s.ok(format!("Retrieved: {k} -> {}", text(&v))),
                        None => s.fail(format!("Key not found: {k}")),
                    })
                    .collect(),
            ),
            Err(e) => Outcome::failed(s.fail(format!("mget: {}", chain(&e)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::words;

    #[test]
    fn one_key_or_more() {
        assert_eq!(
            MGet::parse(words("a b")),
            Ok(MGet {
                keys: vec!["a".into(), "b".into()]
            })
        );
        assert_eq!(MGet::parse(words("")), usage(USAGE));
    }
}
