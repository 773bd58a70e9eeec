//! `put <key> <value>`: store a value.

use super::{ParseError, Run, Spec, usage, user_key};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "put <key> <value>";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["put"],
    aliases: &["set"],
    synopsis: USAGE,
    help: "store a value (quote values with spaces: put k \"a b\")",
    parse: |args| Ok(Box::new(Put::parse(args)?)),
};

/// `put <key> <value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub key: String,
    pub value: String,
}

impl Put {
    fn parse(args: Vec<String>) -> Result<Put, ParseError> {
        match <[String; 2]>::try_from(args) {
            Ok([key, value]) => Ok(Put {
                key: user_key(key)?,
                value,
            }),
            Err(_) => usage(USAGE),
        }
    }
}

impl Run for Put {
    fn run(&self, session: &Session) -> Outcome {
        let (s, key, value) = (session.style, &self.key, &self.value);
        let stored = match &session.target {
            Target::Local(cluster) => cluster
                .put(key.as_bytes(), value.as_bytes())
                .map(drop)
                .map_err(|e| chain(&e)),
            Target::Remote(client) => client
                .call_ok(&[b"SET", key.as_bytes(), value.as_bytes()])
                .map_err(|e| e.to_string()),
        };
        match stored {
            Ok(()) => Outcome::line(s.ok(format!("Stored: {key} -> {value}"))),
            Err(why) => Outcome::failed(s.fail(format!("put {key}: {why}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::words;

    #[test]
    fn a_key_and_a_value() {
        assert_eq!(
            Put::parse(words("k 'a b'")),
            Ok(Put {
                key: "k".into(),
                value: "a b".into()
            })
        );
        for bad in ["", "k", "k v extra"] {
            assert_eq!(Put::parse(words(bad)), usage(USAGE), "{bad:?}");
        }
    }
}
