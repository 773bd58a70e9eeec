//! What `addnode` and `removenode` share: running the change under a progress bar, and the
//! redistribution report (also the demo's).

use std::ops::ControlFlow;

use indicatif::{ProgressBar, ProgressStyle};
use kv_cluster::{ChangeSummary, Progress};

use crate::client::Client;
use crate::output::{Style, chain};
use crate::session::{Outcome, Session, Target};

/// Adds (`add`) or removes node `id`, with a progress bar while keys move.
pub fn change(session: &Session, id: &str, add: bool) -> Outcome {
    let cluster = match &session.target {
        Target::Local(cluster) => cluster,
        Target::Remote(client) => return remote_change(session, client, id, add),
    };
    let s = session.style;
    let mut out = vec![String::new()];
    if add {
        out.push(s.heading(format!("Adding Node: {id}")));
        out.push("Performing smart redistribution for new node...".into());
    } else {
        out.push(s.heading(format!("Removing Node: {id}")));
        out.push("Performing smart redistribution before removal...".into());
    }
    let bar = progress_bar();
    let progress = |p: &Progress| {
        bar.set_length(p.estimated_keys.max(p.keys));
        bar.set_position(p.keys);
        bar.set_message(format!("{} -> {}", p.from, p.to));
        ControlFlow::Continue(())
    };
    let result = if add {
        cluster.add_node_with_progress(id, progress)
    } else {
        cluster.remove_node_with_progress(id, progress)
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
            Outcome::lines(out)
        }
        Err(e) => {
            let verb = if add { "addnode" } else { "removenode" };
            Outcome::failed(s.fail(format!("{verb} {id}: {}", chain(&e))))
        }
    }
}

/// The bar shown while keys move (on a terminal; hidden otherwise).
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("  {bar:30} {pos}/{len} keys {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// `KVSTORE ADDNODE|REMOVENODE id` on the server, which answers once the keys have moved;
/// meanwhile the bar follows the progress its `INFO cluster` publishes.
fn remote_change(session: &Session, client: &Client, id: &str, add: bool) -> Outcome {
    let (verb, sub): (&str, &[u8]) = if add {
        ("addnode", b"ADDNODE")
    } else {
        ("removenode", b"REMOVENODE")
    };
    let job = format!("{} {id}", verb.to_ascii_uppercase());
    let bar = progress_bar();
    let mut progress = |info: &str| {
        if let Some((keys, estimated)) = info_progress(info, &job) {
            bar.set_length(estimated.max(keys));
            bar.set_position(keys);
        }
    };
    let mut outcome = session.remote_admin_with(
        client,
        &[sub, id.as_bytes()],
        &format!("{verb} {id}"),
        Some(&mut progress),
    );
    bar.finish_and_clear();
    // A node of a cluster of processes answers at once with the change it started; the
    // change runs in the cluster: follow `KVSTORE CHANGE` to its end.
    if outcome.error.is_none()
        && let Some(change) = outcome
            .out
            .first()
            .and_then(|l| l.strip_prefix("OK change "))
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_owned)
    {
        return follow_change(session, client, id, add, &change);
    }
    if outcome.error.is_none() {
        // The local command's blank line before its heading.
        outcome.out.insert(0, String::new());
    }
    outcome
}

/// Follows change `change` (started on a node of a cluster of processes) through `KVSTORE
/// CHANGE` every 200 ms, a bar on its keys copied, until it ends; then reports it as the
/// local command does (keys copied per source and destination, the total).
fn follow_change(session: &Session, client: &Client, id: &str, add: bool, change: &str) -> Outcome {
    let s = session.style;
    let verb = if add { "addnode" } else { "removenode" };
    let mut out = vec![String::new()];
    out.push(s.heading(if add {
        format!("Adding Node: {id}")
    } else {
        format!("Removing Node: {id}")
    }));
    out.push(format!(
        "Change {change} started; following KVSTORE CHANGE..."
    ));
    let bar = progress_bar();
    let mut last: Vec<String> = Vec::new();
    let mut note = None;
    let ended = loop {
        let text = match client.call_bulk(&[b"KVSTORE", b"CHANGE"]) {
            Ok(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
            Ok(None) => break Err("KVSTORE CHANGE answered nil".to_owned()),
            // The node removed here stops serving once the change is final.
            Err(crate::client::ClientError::Server(text)) if text.contains("left the cluster") => {
                break Ok(());
            }
            // Connected to the leaver itself: it shuts down once it is out.
            Err(_) if !add && last.iter().any(|l| l == "step:final") => {
                note = Some(format!(
                    "(the node this client is connected to was {id}: it left the cluster)"
                ));
                break Ok(());
            }
            Err(e) => break Err(e.to_string()),
        };
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines
            .first()
            .is_none_or(|l| l != &format!("change:{change}"))
        {
            break Ok(());
        }
        let field = |name: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(keys) = field("keys_copied") {
            bar.set_length(bar.length().unwrap_or(0).max(keys));
            bar.set_position(keys);
        }
        if let Some(step) = lines.iter().find_map(|l| l.strip_prefix("step:")) {
            bar.set_message(step.to_owned());
        }
        last = lines;
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    bar.finish_and_clear();
    if let Err(e) = ended {
        return Outcome::failed(s.fail(format!("{verb} {id}: following change {change}: {e}")));
    }
    if last.iter().any(|l| l == "step:aborting") {
        return Outcome::failed(s.fail(format!("{verb} {id}: change {change} was aborted")));
    }
    // `task:<id> <from>-><to> ranges:<n> keys:<k> finished:<0|1>`, summed per pair.
    let mut pairs: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for l in last.iter().filter_map(|l| l.strip_prefix("task:")) {
        let mut words = l.split(' ').skip(1);
        let (Some(route), Some(keys)) = (words.next(), words.nth(1)) else {
            continue;
        };
        let (Some((from, to)), Some(keys)) = (
            route.split_once("->"),
            keys.strip_prefix("keys:")
                .and_then(|k| k.parse::<u64>().ok()),
        ) else {
            continue;
        };
        *pairs.entry((from.to_owned(), to.to_owned())).or_default() += keys;
    }
    let total: u64 = pairs.values().sum();
    out.extend(
        pairs
            .iter()
            .filter(|(_, k)| **k > 0)
            .map(|((from, to), k)| format!("  Moving {k} keys from {from} to {to}")),
    );
    out.push(s.ok(format!(
        "Redistribution complete: {total} keys moved (as last seen)"
    )));
    out.push(if add {
        s.ok(format!(
            "Node {id} added successfully with minimal redistribution"
        ))
    } else {
        s.ok(format!("Node {id} removed successfully"))
    });
    out.extend(note);
    Outcome::lines(out)
}

/// Keys moved and keys expected, from `INFO cluster`, if `job` is the change running there.
fn info_progress(info: &str, job: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    if field("kvstore_admin_job")? != job || field("kvstore_admin_job_status")? != "running" {
        return None;
    }
    let keys = field("kvstore_change_keys_moved")?.parse().ok()?;
    let estimated = field("kvstore_change_keys_estimated")?.parse().ok()?;
    Some((keys, estimated))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_read_from_info_for_this_change_only() {
        let info = "# Cluster\r\ncluster_enabled:0\r\nkvstore_admin_job:ADDNODE node4\r\n\
                    kvstore_admin_job_status:running\r\nkvstore_admin_job_elapsed_ms:12\r\n\
                    kvstore_change_keys_moved:40\r\nkvstore_change_keys_estimated:100\r\n";
        assert_eq!(info_progress(info, "ADDNODE node4"), Some((40, 100)));
        assert_eq!(info_progress(info, "ADDNODE node5"), None);
        let done = info.replace("status:running", "status:done");
        assert_eq!(info_progress(&done, "ADDNODE node4"), None);
        let starting = "kvstore_admin_job:ADDNODE node4\r\nkvstore_admin_job_status:running\r\n";
        assert_eq!(info_progress(starting, "ADDNODE node4"), None);
    }
}
