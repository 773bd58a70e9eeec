//! `del <key>`: delete a key.

use super::{ParseError, Run, Spec, one};
use crate::output::chain;
use crate::session::{Outcome, Session};

const USAGE: &str = "del <key>";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["del"],
    aliases: &["delete"],
    synopsis: USAGE,
    help: "delete a key",
    parse: |args| Ok(Box::new(Del::parse(args)?)),
};

/// `del <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Del {
    pub key: String,
}

impl Del {
    fn parse(args: Vec<String>) -> Result<Del, ParseError> {
        // Any key, a benchmark's too: `del` removes one left by an interrupted benchmark.
        Ok(Del {
            key: one(args, USAGE)?,
        })
    }
}

impl Run for Del {
    fn run(&self, session: &Session) -> Outcome {
        let (s, key) = (session.style, &self.key);
        let existed = match session.cluster.get(key.as_bytes()) {
            Ok(v) => v.is_some(),
            Err(e) => return Outcome::failed(s.fail(format!("del {key}: {}", chain(&e)))),
        };
        if !existed {
            return Outcome::line(s.fail(format!("Key not found: {key}")));
        }
        match session.cluster.delete(key.as_bytes()) {
            Ok(_) => Outcome::line(s.ok(format!("Deleted: {key}"))),
            Err(e) => Outcome::failed(s.fail(format!("del {key}: {}", chain(&e)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BENCH_PREFIX;
    use crate::cmd::{usage, words};

    #[test]
    fn one_key_a_benchmarks_too() {
        assert_eq!(Del::parse(words("'a b'")), Ok(Del { key: "a b".into() }));
        assert_eq!(Del::parse(words("")), usage(USAGE));
        assert!(Del::parse(vec![format!("{BENCH_PREFIX}1")]).is_ok());
    }
}
