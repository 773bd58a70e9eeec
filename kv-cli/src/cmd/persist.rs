//! `persist <key>`: remove a key's expiry, so it never expires.

use super::{ParseError, Run, Spec, one, user_key};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "persist <key>";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["persist"],
    aliases: &[],
    synopsis: USAGE,
    help: "remove a key's expiry (it no longer expires)",
    parse: |args| Ok(Box::new(Persist::parse(args)?)),
};

/// `persist <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    pub key: String,
}

/// What `persist` found.
enum Found {
    /// An expiry, now removed.
    Removed,
    /// A key without one.
    NoExpiry,
    /// No live key.
    NoKey,
}

impl Persist {
    fn parse(args: Vec<String>) -> Result<Persist, ParseError> {
        Ok(Persist {
            key: user_key(one(args, USAGE)?)?,
        })
    }
}

impl Run for Persist {
    fn run(&self, session: &Session) -> Outcome {
        let (s, key) = (session.style, &self.key);
        // `PERSIST` answers 0 both for a key without an expiry and for no key: a read tells
        // them apart, the same way in process and over the network.
        let found = match &session.target {
            Target::Local(cluster) => cluster
                .persist_key(key.as_bytes())
                .and_then(|removed| match removed {
                    true => Ok(Found::Removed),
                    false => cluster.get(key.as_bytes()).map(|v| match v {
                        Some(_) => Found::NoExpiry,
                        None => Found::NoKey,
                    }),
                })
                .map_err(|e| chain(&e)),
            Target::Remote(client) => client
                .call_integer(&[b"PERSIST", key.as_bytes()])
                .and_then(|removed| match removed {
                    1 => Ok(Found::Removed),
                    _ => client
                        .call_integer(&[b"EXISTS", key.as_bytes()])
                        .map(|n| match n {
                            0 => Found::NoKey,
                            _ => Found::NoExpiry,
                        }),
                })
                .map_err(|e| e.to_string()),
        };
        match found {
            Ok(Found::Removed) => Outcome::line(s.ok(format!(
                "Persisted: {key} (its expiry is removed: it no longer expires)"
            ))),
            Ok(Found::NoExpiry) => Outcome::line(s.ok(format!(
                "Persisted: {key} (it had no expiry: nothing changed)"
            ))),
            Ok(Found::NoKey) => Outcome::line(s.fail(format!("Key not found: {key}"))),
            Err(why) => Outcome::failed(s.fail(format!("persist {key}: {why}"))),
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
        assert_eq!(
            Persist::parse(words("'a b'")),
            Ok(Persist { key: "a b".into() })
        );
        assert_eq!(Persist::parse(words("")), usage(USAGE));
        assert_eq!(Persist::parse(words("a b")), usage(USAGE));
        assert!(Persist::parse(vec![format!("{BENCH_PREFIX}1")]).is_err());
    }
}
