//! `del <key>`: delete a key.

use super::{ParseError, Run, Spec, one};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

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
        let deleted = match &session.target {
            Target::Local(cluster) => delete(cluster, key.as_bytes()).map_err(|e| chain(&e)),
            // `DEL` answers how many of its keys existed.
            Target::Remote(client) => client
                .call_integer(&[b"DEL", key.as_bytes()])
                .map(|n| n > 0)
                .map_err(|e| e.to_string()),
        };
        match deleted {
            Ok(true) => Outcome::line(s.ok(format!("Deleted: {key}"))),
            Ok(false) => Outcome::line(s.fail(format!("Key not found: {key}"))),
            Err(why) => Outcome::failed(s.fail(format!("del {key}: {why}"))),
        }
    }
}

/// Deletes `key` if it exists; whether it did.
fn delete(cluster: &kv_cluster::Cluster, key: &[u8]) -> Result<bool, kv_cluster::Error> {
    if cluster.get(key)?.is_none() {
        return Ok(false);
    }
    cluster.delete(key)?;
    Ok(true)
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
