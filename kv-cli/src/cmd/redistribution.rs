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
    if outcome.error.is_none() {
        // The local command's blank line before its heading.
        outcome.out.insert(0, String::new());
    }
    outcome
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
