//! `mput <key> <value> [<key> <value> ...]`: store several values.

use super::{ParseError, Run, Spec, usage, user_key};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "mput <key> <value> [<key> <value> ...]";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["mput"],
    aliases: &[],
    synopsis: "mput <k> <v> [<k> <v> ...]",
    help: "store several values",
    parse: |args| Ok(Box::new(MPut::parse(args)?)),
};

/// `mput <key> <value> [<key> <value> ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MPut {
    pub pairs: Vec<(String, String)>,
}

impl MPut {
    fn parse(args: Vec<String>) -> Result<MPut, ParseError> {
        if args.is_empty() || !args.len().is_multiple_of(2) {
            return usage(USAGE);
        }
        let pairs = args
            .chunks_exact(2)
            .map(|p| Ok((user_key(p[0].clone())?, p[1].clone())))
            .collect::<Result<_, _>>()?;
        Ok(MPut { pairs })
    }
}

impl Run for MPut {
    fn run(&self, session: &Session) -> Outcome {
        let s = session.style;
        let stored = match &session.target {
            Target::Local(cluster) => {
                let raw: Vec<(&[u8], &[u8])> = self
                    .pairs
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                    .collect();
                cluster.put_many(&raw).map(drop).map_err(|e| chain(&e))
            }
            Target::Remote(client) => {
                let mut args: Vec<&[u8]> = vec![b"MSET"];
                for (k, v) in &self.pairs {
                    args.extend([k.as_bytes(), v.as_bytes()]);
                }
                client.call_ok(&args).map_err(|e| e.to_string())
            }
        };
        match stored {
            Ok(()) => Outcome::lines(
                self.pairs
                    .iter()
                    .map(|(k, v)| s.ok(format!("Stored: {k} -> {v}")))
                    .collect(),
            ),
            Err(why) => Outcome::failed(s.fail(format!("mput: {why}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::words;

    #[test]
    fn pairs_of_words() {
        assert_eq!(
            MPut::parse(words("a 1 b 2")),
            Ok(MPut {
                pairs: vec![("a".into(), "1".into()), ("b".into(), "2".into())]
            })
        );
        for bad in ["", "a", "a 1 b"] {
            assert_eq!(MPut::parse(words(bad)), usage(USAGE), "{bad:?}");
        }
    }
}
