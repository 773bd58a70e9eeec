//! `mget <key> [<key> ...]`: read several values.

use super::{ParseError, Run, Spec, usage, user_key};
use crate::output::{chain, text};
use crate::session::{Outcome, Session, Target};

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
        let values = match &session.target {
            Target::Local(cluster) => cluster
                .get_many(&self.keys)
                .map(|vs| vs.into_iter().map(|v| v.map(|v| text(&v))).collect())
                .map_err(|e| chain(&e)),
            Target::Remote(client) => {
                let mut args: Vec<&[u8]> = vec![b"MGET"];
                args.extend(self.keys.iter().map(String::as_bytes));
                match client.call_bulks(&args) {
                    Ok(vs) if vs.len() == self.keys.len() => {
                        Ok(vs.into_iter().map(|v| v.map(|v| text(&v))).collect())
                    }
                    Ok(vs) => Err(client
                        .bad(format!(
                            "MGET of {} keys answered {}",
                            self.keys.len(),
                            vs.len()
                        ))
                        .to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match values {
            Ok::<Vec<Option<String>>, String>(values) => Outcome::lines(
                self.keys
                    .iter()
                    .zip(values)
                    .map(|(k, v)| match v {
                        Some(v) => s.ok(format!("Retrieved: {k} -> {v}")),
                        None => s.fail(format!("Key not found: {k}")),
                    })
                    .collect(),
            ),
            Err(why) => Outcome::failed(s.fail(format!("mget: {why}"))),
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
