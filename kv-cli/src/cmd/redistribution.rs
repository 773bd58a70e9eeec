//! What `addnode` and `removenode` share: running the change under a progress bar, and the
//! redistribution report (also the demo's).

use std::ops::ControlFlow;

use indicatif::{ProgressBar, ProgressStyle};
use kv_cluster::{ChangeSummary, Progress};

use crate::output::{Style, chain};
use crate::session::{Outcome, Session};

/// Adds (`add`) or removes node `id`, with a progress bar while keys move.
pub fn change(session: &Session, id: &str, add: bool) -> Outcome {
    let s = session.style;
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
        session.cluster.add_node_with_progress(id, progress)
    } else {
        session.cluster.remove_node_with_progress(id, progress)
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
