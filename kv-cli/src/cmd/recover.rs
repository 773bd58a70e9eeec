//! `recover <id>`: bring a node back; its hints are handed off, then its ranges repaired.

use super::{Run, Spec, one};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "recover <id>";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["recover"],
    aliases: &[],
    synopsis: USAGE,
    help: "bring a node back: hints handed off, then its ranges repaired",
    parse: |args| {
        Ok(Box::new(Recover {
            id: one(args, USAGE)?,
        }))
    },
};

/// `recover <id>`.
#[derive(Debug)]
pub struct Recover {
    pub id: String,
}

impl Run for Recover {
    fn run(&self, session: &Session) -> Outcome {
        let (s, id) = (session.style, &self.id);
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            Target::Remote(client) => {
                let what = format!("recover {id}");
                let args: [&[u8]; 2] = [b"RECOVER", id.as_bytes()];
                return session.remote_admin_with(client, &args, &what, Some(&mut |_| {}));
            }
        };
        match cluster.recover_node(id) {
            Ok(r) => Outcome::line(s.ok(format!(
                "Node {id} recovered: {} hinted writes handed off, {} keys repaired ({} bytes of hashes compared)",
                r.hints_applied, r.repair.keys_repaired, r.repair.hash_bytes
            ))),
            Err(e) => Outcome::failed(s.fail(format!("recover {id}: {}", chain(&e)))),
        }
    }
}
