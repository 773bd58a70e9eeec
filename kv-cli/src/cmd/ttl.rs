//! `ttl <key>`: the time a key has left before it expires.

use super::{ParseError, Run, Spec, one, user_key};
use crate::duration::human;
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "ttl <key>";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["ttl"],
    aliases: &["pttl"],
    synopsis: USAGE,
    help: "time left before a key expires (or: no expiry)",
    parse: |args| Ok(Box::new(Ttl::parse(args)?)),
};

/// `ttl <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttl {
    pub key: String,
}

/// What a key has left.
enum Left {
    /// Absent, deleted or expired.
    NoKey,
    /// A key that never expires.
    Forever,
    /// Milliseconds.
    Millis(u64),
}

impl Ttl {
    fn parse(args: Vec<String>) -> Result<Ttl, ParseError> {
        Ok(Ttl {
            key: user_key(one(args, USAGE)?)?,
        })
    }
}

impl Run for Ttl {
    fn run(&self, session: &Session) -> Outcome {
        let (s, key) = (session.style, &self.key);
        let left = match &session.target {
            Target::Local(cluster) => cluster
                .get_entry(key.as_bytes())
                .map(|e| match e {
                    None => Left::NoKey,
                    // Judged against the same clock that judged the entry live.
                    Some(e) => e
                        .ttl_millis(cluster.now_millis())
                        .map_or(Left::Forever, Left::Millis),
                })
                .map_err(|e| chain(&e)),
            // Redis 7's `PTTL`: -2 no key, -1 no expiry, else the milliseconds left.
            Target::Remote(client) => client
                .call_integer(&[b"PTTL", key.as_bytes()])
                .map(|n| match n {
                    -1 => Left::Forever,
                    n if n < 0 => Left::NoKey,
                    n => Left::Millis(n.unsigned_abs()),
                })
                .map_err(|e| e.to_string()),
        };
        match left {
            Ok(Left::Millis(ms)) => {
                Outcome::line(s.ok(format!("TTL of {key}: {} ({ms} ms)", human(ms))))
            }
            Ok(Left::Forever) => Outcome::line(s.ok(format!("TTL of {key}: no expiry"))),
            Ok(Left::NoKey) => Outcome::line(s.fail(format!("Key not found: {key}"))),
            Err(why) => Outcome::failed(s.fail(format!("ttl {key}: {why}"))),
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
        assert_eq!(Ttl::parse(words("k")), Ok(Ttl { key: "k".into() }));
        assert_eq!(Ttl::parse(words("")), usage(USAGE));
        assert_eq!(Ttl::parse(words("a b")), usage(USAGE));
        assert!(Ttl::parse(vec![format!("{BENCH_PREFIX}1")]).is_err());
    }
}
