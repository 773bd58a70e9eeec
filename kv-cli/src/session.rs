//! Running REPL commands against a cluster and producing their output lines.

use std::ops::ControlFlow;

use indicatif::{ProgressBar, ProgressStyle};
use kv_cluster::{ChangeSummary, Cluster, Health, NodeState, Progress};

use crate::bench;
use crate::command::{Command, HELP};
use crate::output::{Style, chain, text};

/// The result of one command.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Lines for stdout.
    pub out: Vec<String>,
    /// A failure line (`✗ ...`), for stderr in scripted mode.
    pub error: Option<String>,
    /// The REPL should end.
    pub exit: bool,
}

impl Outcome {
    fn line(s: String) -> Outcome {
        Outcome {
            out: vec![s],
            ..Outcome::default()
        }
    }

    fn failed(s: String) -> Outcome {
        Outcome {
            error: Some(s),
            ..Outcome::default()
        }
    }
}

/// A REPL session on an open cluster.
pub struct Session {
    pub cluster: Cluster,
    pub style: Style,
}

impl Session {
    /// Runs one command.
    pub fn run(&self, cmd: Command) -> Outcome {
        let s = self.style;
        match cmd {
            Command::Nothing => Outcome::default(),
            Command::Exit => Outcome {
                exit: true,
                ..Outcome::default()
            },
            Command::Help => Outcome {
                out: HELP.lines().map(str::to_owned).collect(),
                ..Outcome::default()
            },
            Command::Put { key, value } => match self.cluster.put(key.as_bytes(), value.as_bytes())
            {
                Ok(_) => Outcome::line(s.ok(format!("Stored: {key} -> {value}"))),
                Err(e) => Outcome::failed(s.fail(format!("put {key}: {}", chain(&e)))),
            },
            Command::Get { key } => match self.cluster.get(key.as_bytes()) {
                Ok(Some(v)) => Outcome::line(s.ok(format!("Retrieved: {key} -> {}", text(&v)))),
                Ok(None) => Outcome::line(s.fail(format!("Key not found: {key}"))),
                Err(e) => Outcome::failed(s.fail(format!("get {key}: {}", chain(&e)))),
            },
            Command::Del { key } => {
                let existed = match self.cluster.get(key.as_bytes()) {
                    Ok(v) => v.is_some(),
                    Err(e) => return Outcome::failed(s.fail(format!("del {key}: {}", chain(&e)))),
                };
                if !existed {
                    return Outcome::line(s.fail(format!("Key not found: {key}")));
                }
                match self.cluster.delete(key.as_bytes()) {
                    Ok(_) => Outcome::line(s.ok(format!("Deleted: {key}"))),
                    Err(e) => Outcome::failed(s.fail(format!("del {key}: {}", chain(&e)))),
                }
            }
            Command::MPut(pairs) => {
                let raw: Vec<(&[u8], &[u8])> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                    .collect();
                match self.cluster.put_many(&raw) {
                    Ok(_) => Outcome {
                        out: pairs
                            .iter()
                            .map(|(k, v)| s.ok(format!("Stored: {k} -> {v}")))
                            .collect(),
                        ..Outcome::default()
                    },
                    Err(e) => Outcome::failed(s.fail(format!("mput: {}", chain(&e)))),
                }
            }
            Command::MGet(keys) => match self.cluster.get_many(&keys) {
                Ok(values) => Outcome {
                    out: keys
                        .iter()
                        .zip(values)
                        .map(|(k, v)| match v {
                            Some(v) => s.ok(format!("Retrieved: {k} -> {}", text(&v))),
                            None => s.fail(format!("Key not found: {k}")),
                        })
                        .collect(),
                    ..Outcome::default()
                },
                Err(e) => Outcome::failed(s.fail(format!("mget: {}", chain(&e)))),
            },
            Command::Nodes => {
                let nodes = self.cluster.nodes();
                let mut out = vec![format!("Cluster has {} nodes:", nodes.len())];
                for n in nodes {
                    let state = match n.state {
                        NodeState::Member => "",
                        NodeState::Joining => " (joining)",
                        NodeState::Leaving => " (leaving)",
                        _ => " (changing)",
                    };
                    let health = match n.health {
                        Health::Up => String::new(),
                        Health::Down { since } => format!(
                            " (down for {}s)",
                            since.elapsed().map_or(0, |d| d.as_secs())
                        ),
                        _ => " (unknown health)".into(),
                    };
                    out.push(format!("- Node: {}{state}{health}", n.id));
                }
                Outcome {
                    out,
                    ..Outcome::default()
                }
            }
            Command::Stats => self.stats(),
            Command::Ring => self.ring(),
            Command::AddNode(id) => self.change(&id, true),
            Command::RemoveNode(id) => self.change(&id, false),
            Command::Fail { id, crash } => {
                let result = if crash {
                    self.cluster.crash_node(&id)
                } else {
                    self.cluster.fail_node(&id)
                };
                match result {
                    Ok(()) => Outcome::line(s.ok(format!(
                        "Node {id} is down{}: writes for it are kept as hints",
                        if crash { " (crashed)" } else { "" }
                    ))),
                    Err(e) => Outcome::failed(s.fail(format!("fail {id}: {}", chain(&e)))),
                }
            }
            Command::Recover(id) => match self.cluster.recover_node(&id) {
                Ok(r) => Outcome::line(s.ok(format!(
                    "Node {id} recovered: {} hinted writes handed off, {} keys repaired ({} bytes of hashes compared)",
                    r.hints_applied, r.repair.keys_repaired, r.repair.hash_bytes
                ))),
                Err(e) => Outcome::failed(s.fail(format!("recover {id}: {}", chain(&e)))),
            },
            Command::Repair => match self.cluster.repair() {
                Ok(r) => Outcome::line(s.ok(format!(
                    "Repair complete: {} ranges compared, {} bytes of hashes exchanged, {} differing leaves, {} keys repaired",
                    r.ranges_compared, r.hash_bytes, r.leaves_differing, r.keys_repaired
                ))),
                Err(e) => Outcome::failed(s.fail(format!("repair: {}", chain(&e)))),
            },
            Command::Benchmark(args) => match bench::run(&self.cluster, args) {
                Ok(report) => Outcome {
                    out: report.lines(),
                    ..Outcome::default()
                },
                Err(e) => Outcome::failed(s.fail(format!("benchmark: {e:#}"))),
            },
            Command::Compact => match self.cluster.compact() {
                Ok(reports) => {
                    let mut out: Vec<String> = reports
                        .iter()
                        .map(|(id, r)| {
                            format!(
                                "  {id}: {} segments compacted, {} deleted, {} records copied, {} tombstones purged",
                                r.segments_compacted, r.segments_deleted, r.records_copied, r.tombstones_purged
                            )
                        })
                        .collect();
                    out.push(s.ok(format!("Compacted {} nodes", reports.len())));
                    Outcome {
                        out,
                        ..Outcome::default()
                    }
                }
                Err(e) => Outcome::failed(s.fail(format!("compact: {}", chain(&e)))),
            },
            Command::Flush => match self.cluster.sync() {
                Ok(()) => Outcome::line(s.ok("Flushed: every acknowledged write is on disk")),
                Err(e) => Outcome::failed(s.fail(format!("flush: {}", chain(&e)))),
            },
        }
    }

    fn stats(&self) -> Outcome {
        let s = self.style;
        match self.cluster.stats() {
            Ok(st) => {
                let mut out = vec![s.heading("Data Distribution Statistics")];
                for n in &st.nodes {
                    if !n.up {
                        out.push(format!("Node {}: down", n.id));
                        continue;
                    }
                    out.push(format!(
                        "Node {}: {} keys ({:.1}%), {} replicas",
                        n.id,
                        n.primary_keys,
                        n.share * 100.0,
                        n.replica_keys
                    ));
                }
                out.push(format!("Total keys in cluster: {}", st.total_keys));
                if st.hints > 0 {
                    out.push(format!(
                        "Hinted writes waiting for down nodes: {}",
                        st.hints
                    ));
                }
                if let Some(r) = &st.background_repair {
                    let last = match (&r.last_error, &r.last) {
                        (Some(e), _) => format!("last round failed: {e}"),
                        (None, Some(l)) => format!(
                            "last round: {} ranges compared, {} keys repaired",
                            l.ranges_compared, l.keys_repaired
                        ),
                        (None, None) => "no round yet".to_string(),
                    };
                    out.push(format!(
                        "Background repair every {} s: {} rounds, {last}",
                        r.interval.as_secs(),
                        r.rounds
                    ));
                }
                Outcome {
                    out,
                    ..Outcome::default()
                }
            }
            Err(e) => Outcome::failed(s.fail(format!("stats: {}", chain(&e)))),
        }
    }

    fn ring(&self) -> Outcome {
        let s = self.style;
        let ring = self.cluster.ring();
        let rf = self.cluster.replication_factor();
        match ring.ownership(rf) {
            Ok(own) => {
                let mut out = vec![s.heading(format!(
                    "Ring (epoch {}, replication factor {rf})",
                    ring.epoch()
                ))];
                for o in own {
                    let tokens = ring.tokens_of(o.node.as_str()).map_or(0, <[u64]>::len);
                    out.push(format!(
                        "Node {}: {tokens} tokens, primary for {:.1}% of tokens, replica for {:.1}%",
                        o.node,
                        o.primary * 100.0,
                        o.replica * 100.0
                    ));
                }
                Outcome {
                    out,
                    ..Outcome::default()
                }
            }
            Err(e) => Outcome::failed(s.fail(format!("ring: {}", chain(&e)))),
        }
    }

    fn change(&self, id: &str, add: bool) -> Outcome {
        let s = self.style;
        let mut out = vec![String::new()];
        if add {
            out.push(s.heading(format!("Adding Node: {id}")));
            out.push("Performing smart redistribution for new node...".into());
        } else {
            out.push(s.heading(format!("Removing Node: {id}")));
            out.push("Performing smart redistribution before removal...".into());
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("  {bar:30} {pos}/{len} keys {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let progress = |p: &Progress| {
            bar.set_length(p.estimated_keys.max(p.keys));
            bar.set_position(p.keys);
            bar.set_message(format!("{} -> {}", p.from, p.to));
            ControlFlow::Continue(())
        };
        let result = if add {
            self.cluster.add_node_with_progress(id, progress)
        } else {
            self.cluster.remove_node_with_progress(id, progress)
        };
        bar.finish_and_clear();
        match result {
            Ok(summary) => {
                out.extend(report(&summary, s));
                out.push(if add {
                    s.ok(format!(
                        "Node {id} added successfully with minimal redistribution"
                    ))
                } else {
                    s.ok(format!("Node {id} removed successfully"))
                });
                Outcome {
                    out,
                    ..Outcome::default()
                }
            }
            Err(e) => {
                let verb = if add { "addnode" } else { "removenode" };
                Outcome::failed(s.fail(format!("{verb} {id}: {}", chain(&e))))
            }
        }
    }
}

/// The seed's redistribution report: one line per (from, to) pair, then the total.
pub fn report(summary: &ChangeSummary, s: Style) -> Vec<String> {
    let mut out: Vec<String> = summary
        .pairs
        .iter()
        .filter(|p| p.keys > 0)
        .map(|p| format!("  Moving {} keys from {} to {}", p.keys, p.from, p.to))
        .collect();
    out.push(s.ok(format!(
        "Redistribution complete: {} keys moved",
        summary.keys_moved
    )));
    out
}
