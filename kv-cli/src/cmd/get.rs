//! `get <key>`: read a value.

use super::{ParseError, Run, Spec, one, user_key};
use crate::output::{chain, text};
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "get <key>";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["get"],
    aliases: &[],
    synopsis: USAGE,
    help: "read a value",
    parse: |args| Ok(Box::new(Get::parse(args)?)),
};

/// `get <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    pub key: String,
}

impl Get {
    fn parse(args: Vec<String>) -> Result<Get, ParseError> {
        Ok(Get {
            key: user_key(one(args, USAGE)?)?,
        })
    }
}

impl Run for Get {
    fn run(&self, session: &Session) -> Outcome {
        let (s, key) = (session.style, &self.key);
        let value = match &session.target {
            Target::Local(cluster) => cluster
                .get(key.as_bytes())
                .map(|v| v.map(|v| text(&v)))
                .map_err(|e| chain(&e)),
            Target::Remote(client) => client
                .call_bulk(&[b"GET", key.as_bytes()])
                .map(|v| v.map(|v| text(&v)))
                .map_err(|e| e.to_string()),
        };
        match value {
            Ok(Some(v)) => Outcome::line(s.ok(format!("Retrieved: {key} -> {v}"))),
            Ok(None) => Outcome::line(s.fail(format!("Key not found: {key}"))),
            Err(why) => Outcome::failed(s.fail(format!("get {key}: {why}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BENCH_PREFIX;
    use crate::cmd::{usage, words};

    #[test]
    fn one_key_not_the_benchmarks() {
        assert_eq!(Get::parse(words("k")), Ok(Get { key: "k".into() }));
        assert_eq!(Get::parse(words("a b")), usage(USAGE));
        assert!(Get::parse(vec![format!("{BENCH_PREFIX}1")]).is_err());
    }
}
