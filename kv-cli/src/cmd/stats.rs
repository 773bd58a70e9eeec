//! `stats`: keys per node (as primary, and every replica held), hints waiting, the
//! background repair's status, and the keys with a TTL per node and in total.

use super::{Run, Spec, none};
use crate::client::{ClientError, bulk};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};
use crate::ttl_stats;

const USAGE: &str = "stats";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["stats"],
    aliases: &[],
    synopsis: USAGE,
    help: "keys per node (as primary, and every replica held), and keys\n\
           with a TTL (an expired one counts until it is reclaimed)",
    parse: |args| {
        none(&args, USAGE)?;
        Ok(Box::new(Stats))
    },
};

/// `stats`.
#[derive(Debug)]
pub struct Stats;

impl Run for Stats {
    fn run(&self, session: &Session) -> Outcome {
        let s = session.style;
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            Target::Remote(client) => {
                let mut outcome = session.remote_admin(client, &[b"STATS"], "stats");
                if outcome.error.is_some() {
                    return outcome;
                }
                // The server's own lines, then those of the program serving it.
                let sub = ttl_stats::SUBCOMMAND.to_ascii_uppercase();
                match client.call(&[b"KVSTORE", sub.as_bytes()]).map(bulk) {
                    Ok(Ok(Some(text))) => outcome.out.extend(
                        String::from_utf8_lossy(&text)
                            .split('\n')
                            .map(str::to_owned),
                    ),
                    // A server that does not count them (another version, another program).
                    Err(ClientError::Server(text)) if text.starts_with("unknown subcommand") => {
                        outcome
                            .out
                            .push("Keys with a TTL: not reported by this server".to_owned());
                    }
                    Ok(Ok(None) | Err(_)) => {
                        let e = client.bad("KVSTORE EXPIRING answered no text".to_owned());
                        outcome.error = session.remote_failed("stats", &e).error;
                    }
                    Err(ClientError::Server(text)) => {
                        outcome.error = Some(s.fail(text));
                    }
                    Err(e) => outcome.error = session.remote_failed("stats", &e).error,
                }
                return outcome;
            }
        };
        let st = match cluster.stats() {
            Ok(st) => st,
            Err(e) => return Outcome::failed(s.fail(format!("stats: {}", chain(&e)))),
        };
        let mut out = vec![s.heading("Data Distribution Statistics")];
        out.extend(kv_cluster::report::stats(&st));
        out.extend(kv_cluster::report::expiring(
            &st,
            &session.nodes.expiring_keys(),
        ));
        Outcome::lines(out)
    }
}
