//! `KVSTORE NODES|STATS|RING|ADDNODE id|REMOVENODE id|FAIL id [CRASH]|RECOVER id|REPAIR|
//! COMPACT|FLUSH`: cluster administration over the wire, answering the REPL's output lines
//! (without colour) as one bulk string, lines separated by `\n`.
//!
//! Every subcommand runs on a storage thread, like any command that touches the store, so a
//! long one (adding a node to a large store) holds only its own client: the others are
//! served meanwhile, and `INFO cluster` and `KVSTORE STATS` show its progress. A shutdown
//! stops a running change at its next batch (it stays pending and resumable, as after an
//! interrupted change in the REPL).

use std::ops::ControlFlow;

use bytes::{Bytes, BytesMut};
use kv_cluster::{ChangeSummary, Cluster, Progress};

use crate::commands::{c_str, error, wrong_arity};
use crate::session::Session;

/// The embedder's extension, if it handles `sub`.
fn extension<'s>(
    session: &'s Session,
    sub: &[u8],
) -> Option<&'s std::sync::Arc<dyn crate::KvstoreExtension>> {
    let ext = session.shared.options.get_kvstore_extension()?;
    ext.handles(std::str::from_utf8(sub).ok()?).then_some(ext)
}

/// `KVSTORE subcommand ...`.
pub(crate) fn kvstore(cluster: &Cluster, session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let sub = args[1].to_ascii_lowercase();
    // The embedder's extension comes first: a node of a cluster of processes answers
    // `ADDNODE` with its metadata's change, not with the in-process cluster's.
    if let Some(ext) = extension(session, &sub) {
        return match ext.call(args) {
            Ok(lines) => session.encoder().bulk(out, lines.join("\n").as_bytes()),
            Err(e) => error(session, out, &format!("ERR {e}")),
        };
    }
    let argc_ok = match &sub[..] {
        b"nodes" | b"stats" | b"ring" | b"repair" | b"compact" | b"flush" => args.len() == 2,
        b"addnode" | b"removenode" | b"recover" => args.len() == 3,
        b"fail" => args.len() == 3 || args.len() == 4,
        _ => {
            let text = format!(
                "ERR unknown subcommand '{}'. Try KVSTORE HELP.",
                String::from_utf8_lossy(c_str(&args[1], 128))
            );
            return error(session, out, &text);
        }
    };
    if !argc_ok {
        let name = format!("kvstore|{}", String::from_utf8_lossy(&sub));
        return error(session, out, &wrong_arity(&name));
    }
    let id = args.get(2).map(|a| String::from_utf8_lossy(a).into_owned());
    let id = id.as_deref().unwrap_or_default();
    let result = match &sub[..] {
        b"nodes" => Ok(nodes(cluster)),
        b"stats" => stats(cluster, session),
        b"ring" => ring(cluster),
        b"addnode" => change(cluster, session, id, true),
        b"removenode" => change(cluster, session, id, false),
        b"fail" => {
            let crash = match args.get(3) {
                None => false,
                Some(flag) if flag.eq_ignore_ascii_case(b"crash") => true,
                Some(_) => return error(session, out, "ERR syntax error"),
            };
            fail(cluster, id, crash)
        }
        b"recover" => cluster
            .recover_node(id)
            .map(|r| {
                vec![ok(format!(
                    "Node {id} recovered: {} hinted writes handed off, {} keys repaired ({} bytes of hashes compared)",
                    r.hints_applied, r.repair.keys_repaired, r.repair.hash_bytes
                ))]
            })
            .map_err(|e| format!("recover {id}: {}", e.chain())),
        b"repair" => cluster
            .repair()
            .map(|r| {
                vec![ok(format!(
                    "Repair complete: {} ranges compared, {} bytes of hashes exchanged, {} differing leaves, {} keys repaired",
                    r.ranges_compared, r.hash_bytes, r.leaves_differing, r.keys_repaired
                ))]
            })
            .map_err(|e| format!("repair: {}", e.chain())),
        b"compact" => cluster
            .compact()
            .map(|reports| {
                let mut lines: Vec<String> = reports
                    .iter()
                    .map(|(id, r)| {
                        format!(
                            "  {id}: {} segments compacted, {} deleted, {} records copied, {} tombstones purged",
                            r.segments_compacted, r.segments_deleted, r.records_copied, r.tombstones_purged
                        )
                    })
                    .collect();
                lines.push(ok(format!("Compacted {} nodes", reports.len())));
                lines
            })
            .map_err(|e| format!("compact: {}", e.chain())),
        // `flush`
        _ => cluster
            .sync()
            .map(|()| vec![ok("Flushed: every acknowledged write is on disk")])
            .map_err(|e| format!("flush: {}", e.chain())),
    };
    match result {
        Ok(lines) => session.encoder().bulk(out, lines.join("\n").as_bytes()),
        Err(text) => error(session, out, &format!("ERR {}", one_line(&text))),
    }
}

fn ok(msg: impl AsRef<str>) -> String {
    format!("✓ {}", msg.as_ref())
}

fn heading(msg: impl AsRef<str>) -> String {
    format!("=== {} ===", msg.as_ref())
}

/// An error reply is one line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

fn nodes(cluster: &Cluster) -> Vec<String> {
    kv_cluster::report::nodes(&cluster.nodes())
}

fn stats(cluster: &Cluster, session: &Session) -> Result<Vec<String>, String> {
    let st = cluster
        .stats()
        .map_err(|e| format!("stats: {}", e.chain()))?;
    let mut out = vec![heading("Data Distribution Statistics")];
    out.extend(kv_cluster::report::stats(&st));
    if let Some(job) = session.shared.admin.job().filter(|j| j.outcome.is_none()) {
        let moved = job.progress.as_ref().map_or_else(
            || "starting".to_string(),
            |p| {
                format!(
                    "{}/{} keys moved, {} of {} node pairs done",
                    p.keys,
                    p.estimated_keys.max(p.keys),
                    p.pairs_done,
                    p.pairs_total
                )
            },
        );
        out.push(format!(
            "Change in progress: {} ({moved}, {:.1} s)",
            job.what,
            job.started.elapsed().as_secs_f64()
        ));
    } else if let Some((kind, node)) = st.change {
        out.push(format!("Change pending: {kind} {node}"));
    }
    Ok(out)
}

fn ring(cluster: &Cluster) -> Result<Vec<String>, String> {
    let (title, lines) =
        kv_cluster::report::ring(cluster).map_err(|e| format!("ring: {}", e.chain()))?;
    let mut out = vec![heading(title)];
    out.extend(lines);
    Ok(out)
}

fn fail(cluster: &Cluster, id: &str, crash: bool) -> Result<Vec<String>, String> {
    let result = if crash {
        cluster.crash_node(id)
    } else {
        cluster.fail_node(id)
    };
    result
        .map(|()| {
            vec![ok(format!(
                "Node {id} is down{}: writes for it are kept as hints",
                if crash { " (crashed)" } else { "" }
            ))]
        })
        .map_err(|e| format!("fail {id}: {}", e.chain()))
}

/// `ADDNODE`/`REMOVENODE`: one change at a time, its progress published for `INFO` and
/// `KVSTORE STATS`, stopped at its next batch by a shutdown.
fn change(
    cluster: &Cluster,
    session: &Session,
    id: &str,
    add: bool,
) -> Result<Vec<String>, String> {
    let verb = if add { "addnode" } else { "removenode" };
    let admin = &session.shared.admin;
    let what = format!("{} {id}", verb.to_ascii_uppercase());
    if !admin.start(what) {
        let running = admin.job().map(|j| j.what).unwrap_or_default();
        return Err(format!(
            "{verb} {id}: another change is running ({running})"
        ));
    }
    let progress = |p: &Progress| {
        admin.progress(p);
        if admin.cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let result = if add {
        cluster.add_node_with_progress(id, progress)
    } else {
        cluster.remove_node_with_progress(id, progress)
    };
    let mut out = Vec::new();
    if add {
        out.push(heading(format!("Adding Node: {id}")));
        out.push("Performing smart redistribution for new node...".into());
    } else {
        out.push(heading(format!("Removing Node: {id}")));
        out.push("Performing smart redistribution before removal...".into());
    }
    let result = result.map(|summary| {
        out.extend(report(&summary));
        out.push(if add {
            ok(format!(
                "Node {id} added successfully with minimal redistribution"
            ))
        } else {
            ok(format!("Node {id} removed successfully"))
        });
        out
    });
    let result = result.map_err(|e| format!("{verb} {id}: {}", e.chain()));
    admin.finish(result.as_ref().map(|_| ()).map_err(Clone::clone));
    result
}

/// The REPL's redistribution report: one line per (from, to) pair, then the total.
fn report(summary: &ChangeSummary) -> Vec<String> {
    let mut out: Vec<String> = summary
        .pairs
        .iter()
        .filter(|p| p.keys > 0)
        .map(|p| format!("  Moving {} keys from {} to {}", p.keys, p.from, p.to))
        .collect();
    out.push(ok(format!(
        "Redistribution complete: {} keys moved",
        summary.keys_moved
    )));
    out
}
