//! `fail <id> [--crash]`: take a node down, cut off or crashed (dropped without shutdown);
//! writes for it are kept as hints on live nodes.

use super::{ParseError, Run, Spec, usage};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "fail <id> [--crash]";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["fail"],
    aliases: &[],
    synopsis: USAGE,
    help: "take a node down (cut off, or crashed: dropped without\n\
           shutdown); writes for it are kept as hints on live nodes",
    parse: |args| Ok(Box::new(Fail::parse(args)?)),
};

/// `fail <id> [--crash]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub id: String,
    /// Dropped without shutdown, rather than cut off.
    pub crash: bool,
}

impl Fail {
    fn parse(args: Vec<String>) -> Result<Fail, ParseError> {
        match args.as_slice() {
            [id] => Ok(Fail {
                id: id.clone(),
                crash: false,
            }),
            [id, flag] if flag == "--crash" => Ok(Fail {
                id: id.clone(),
                crash: true,
            }),
            _ => usage(USAGE),
        }
    }
}

impl Run for Fail {
    fn run(&self, session: &Session) -> Outcome {
        let (s, id) = (session.style, &self.id);
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            Target::Remote(client) => {
                let mut args: Vec<&[u8]> = vec![b"FAIL", id.as_bytes()];
                if self.crash {
                    args.push(b"CRASH");
                }
                return session.remote_admin(client, &args, &format!("fail {id}"));
            }
        };
        let result = if self.crash {
            cluster.crash_node(id)
        } else {
            cluster.fail_node(id)
        };
        match result {
            Ok(()) => Outcome::line(s.ok(format!(
                "Node {id} is down{}: writes for it are kept as hints",
                if self.crash { " (crashed)" } else { "" }
            ))),
            Err(e) => Outcome::failed(s.fail(format!("fail {id}: {}", chain(&e)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::words;

    #[test]
    fn a_node_and_maybe_crash() {
        assert_eq!(
            Fail::parse(words("node2 --crash")),
            Ok(Fail {
                id: "node2".into(),
                crash: true
            })
        );
        assert_eq!(
            Fail::parse(words("node2")),
            Ok(Fail {
                id: "node2".into(),
                crash: false
            })
        );
        for bad in ["", "node2 --now", "node2 --crash x"] {
            assert_eq!(Fail::parse(words(bad)), usage(USAGE), "{bad:?}");
        }
    }
}
