//! The `KVSTORE` subcommands only a node of a cluster of processes has (a
//! [`kv_server::KvstoreExtension`]):
//!
//! - `KVSTORE META`: this node's view of the cluster metadata raft (leader, term, voters,
//!   learners, applied log index, epoch, members and their states, the cluster's uuid);
//!   `KVSTORE META BUMP` (with `--enable-debug-faults`) raises the epoch by two without
//!   moving data, for tests and drills;
//! - `KVSTORE ADDNODE id`: starts the change that adds the joined (`Registered`) member `id`
//!   (its `StartChange` forwarded to the leader); `KVSTORE CHANGE`: the change in progress
//!   (see [`crate::node_change`]);
//! - `KVSTORE PEERS`: this node's connection to each peer, as its transport sees it
//!   (connected, alive, last heard from, round trip, requests in flight, reconnects, the
//!   epoch it announced, the last connect or handshake error);
//! - `KVSTORE FAULT peer DROP p|DELAY ms|DUPLICATE|BLACKHOLE|PARTITION|HEAL` and `KVSTORE
//!   FAULT CLEAR`: faults in this node's transport to a peer, for tests and drills; only with
//!   `--enable-debug-faults`. `DROP`, `DELAY` and `DUPLICATE` apply to the frames this node
//!   sends to the peer; `PARTITION` (and `BLACKHOLE`, its other name) drops every frame both
//!   ways; `HEAL` clears the peer's faults; `CLEAR` every peer's.

use std::sync::Arc;
use std::time::Duration;

use kv_net::{Direction, Fault, PeerStatus};
use kv_remote::ReplicaPeers;

/// `KVSTORE PEERS` and, when allowed, `KVSTORE FAULT` of one node process.
#[derive(Debug)]
pub struct NodeCommands {
    peers: Arc<ReplicaPeers>,
    faults_allowed: bool,
    meta: Option<(kv_meta::MetaRaft, tokio::runtime::Handle)>,
    /// Set once the metadata is caught up: clients are refused until then.
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// Why this node refuses clients for good: it left the cluster (set by a task following
    /// the metadata, so [`refusal`](kv_server::KvstoreExtension::refusal) stays a load).
    left: Arc<std::sync::OnceLock<String>>,
}

impl NodeCommands {
    /// The commands of the node whose transport is `peers`; `FAULT` only if
    /// `faults_allowed` (`--enable-debug-faults`); `META` if it runs the metadata `meta` (on
    /// that runtime; `META BUMP` only if `faults_allowed`).
    pub fn new(
        peers: &Arc<ReplicaPeers>,
        faults_allowed: bool,
        meta: Option<(kv_meta::MetaRaft, tokio::runtime::Handle)>,
    ) -> Self {
        let left = Arc::new(std::sync::OnceLock::new());
        if let Some((raft, runtime)) = &meta {
            let (mut watch, raft, left) = (raft.watch(), raft.clone(), Arc::clone(&left));
            runtime.spawn(async move {
                loop {
                    if let Some(why) = left_reason(&raft) {
                        let _ = left.set(why);
                        return;
                    }
                    if watch.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        NodeCommands {
            peers: Arc::clone(peers),
            faults_allowed,
            ready: Arc::new(std::sync::atomic::AtomicBool::new(meta.is_none())),
            meta,
            left,
        }
    }

    /// The flag that opens the node to clients: until it is set, every client command but
    /// the connection's own is answered `-TRYAGAIN metadata catching up`.
    pub fn ready_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.ready)
    }

    fn peers_report(&self) -> Vec<String> {
        let mut status = self.peers.status();
        status.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let mut out = vec![format!("=== {} peers ===", status.len())];
        out.extend(status.iter().map(peer_line));
        out
    }

    fn fault(&self, args: &[bytes::Bytes]) -> Result<Vec<String>, String> {
        let faults = self.peers.faults();
        let words: Vec<String> = args[2..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let usage = || {
            "usage: KVSTORE FAULT peer DROP probability|DELAY ms|DUPLICATE|PARTITION|HEAL, or \
             KVSTORE FAULT CLEAR"
                .to_owned()
        };
        match words[..] {
            ["clear"] => {
                faults.clear_all();
                return Ok(vec!["OK every fault cleared".to_owned()]);
            }
            [peer, "partition" | "blackhole"] => faults.partition(peer),
            [peer, "heal"] => faults.heal(peer),
            [peer, "duplicate"] => faults.set(peer, Direction::Outbound, Fault::Duplicate),
            [peer, "drop", p] => {
                let probability: f64 = p.parse().map_err(|_| usage())?;
                if !(0.0..=1.0).contains(&probability) {
                    return Err("the drop probability is between 0 and 1".to_owned());
                }
                faults.set(peer, Direction::Outbound, Fault::Drop { probability });
            }
            [peer, "delay", ms] => {
                let ms: u64 = ms.parse().map_err(|_| usage())?;
                let delay = Duration::from_millis(ms.min(600_000));
                faults.set(peer, Direction::Outbound, Fault::Delay(delay));
            }
            _ => return Err(usage()),
        }
        Ok(vec![format!("OK {}", words.join(" "))])
    }
}

/// Why this node no longer serves clients, if it left the cluster: it is `Left`, or it is the
/// leaver of a removal that reached `Final` (no longer in the ring; it hands its hints over and
/// then shuts down).
fn left_reason(raft: &kv_meta::MetaRaft) -> Option<String> {
    let state = raft.watch().borrow().clone();
    let meta = &state.meta;
    let me = raft.raft_id();
    let (id, m) = meta.members.iter().find(|(_, m)| m.raft_id == me)?;
    let final_leaver = meta.change.as_ref().is_some_and(|c| {
        c.kind == kv_meta::ChangeKind::Remove && &c.node == id && c.step == kv_meta::Step::Final
    });
    (m.state == kv_meta::MemberState::Left || final_leaver).then(|| {
        format!("ERR this node ({id}) left the cluster (removed): connect to another member")
    })
}

/// One peer's line: `- n2 127.0.0.1:17002: up, last heard 12 ms ago, rtt 85 µs, 0 in flight,
/// 1 reconnect, epoch 1` (or `connected, not heard from ...` / `not connected`, and the last
/// error).
fn peer_line(p: &PeerStatus) -> String {
    let state = match (p.connected, p.alive) {
        (true, true) => "up",
        (true, false) => "connected, not heard from within the liveness timeout",
        (false, _) => "not connected",
    };
    let mut line = format!("- {} {}: {state}", p.node_id, p.addr);
    if let Some(seen) = p.last_seen {
        line.push_str(&format!(", last heard {} ms ago", seen.as_millis()));
    }
    if let Some(rtt) = p.rtt {
        line.push_str(&format!(", rtt {} µs", rtt.as_micros()));
    }
    line.push_str(&format!(
        ", {} in flight, {} reconnect{}",
        p.in_flight,
        p.reconnects,
        if p.reconnects == 1 { "" } else { "s" }
    ));
    if let Some(epoch) = p.epoch {
        line.push_str(&format!(", epoch {epoch}"));
    }
    if let Some(e) = &p.last_error {
        line.push_str(&format!(", last error: {}", e.replace(['\r', '\n'], " ")));
    }
    line
}

impl kv_server::KvstoreExtension for NodeCommands {
    fn handles(&self, sub: &str) -> bool {
        sub == "peers"
            || (sub == "fault" && self.faults_allowed)
            || (matches!(sub, "meta" | "addnode" | "removenode" | "change") && self.meta.is_some())
    }

    fn refusal(&self) -> Option<String> {
        if let Some(why) = self.left.get() {
            return Some(why.clone());
        }
        (!self.ready.load(std::sync::atomic::Ordering::Acquire))
            .then(|| "TRYAGAIN metadata catching up".to_owned())
    }

    fn info_cluster(&self) -> Vec<String> {
        let Some((raft, _)) = &self.meta else {
            return Vec::new();
        };
        let mut lines: Vec<String> = crate::node_meta::report(raft)
            .into_iter()
            .map(|l| format!("kvstore_meta_{l}"))
            .collect();
        lines.push(format!(
            "kvstore_meta_caught_up:{}",
            u8::from(self.ready.load(std::sync::atomic::Ordering::Acquire))
        ));
        let state = raft.watch().borrow().clone();
        lines.extend(crate::node_change::info_lines(&state.meta));
        lines
    }

    fn call(&self, args: &[bytes::Bytes]) -> Result<Vec<String>, String> {
        let sub = args
            .get(1)
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase());
        match sub.as_deref() {
            Some("peers") if args.len() == 2 => Ok(self.peers_report()),
            Some("peers") => Err("usage: KVSTORE PEERS".to_owned()),
            Some("meta") => match (&self.meta, &args[2..]) {
                (Some((raft, _)), []) => Ok(crate::node_meta::report(raft)),
                (Some((raft, runtime)), [bump])
                    if self.faults_allowed && bump.eq_ignore_ascii_case(b"bump") =>
                {
                    // Called on a server thread of the runtime: the proposals run on a thread
                    // of their own, which waits for them on the runtime.
                    let (raft, runtime) = (raft.clone(), runtime.clone());
                    let bumped = std::thread::spawn(move || {
                        runtime.block_on(crate::node_meta::debug_bump(&raft))
                    })
                    .join()
                    .map_err(|_| "the bump failed".to_owned())??;
                    Ok(vec![format!("OK epoch {bumped}")])
                }
                (Some(_), _) => Err("usage: KVSTORE META".to_owned()),
                (None, _) => Err("this node runs no metadata".to_owned()),
            },
            Some(verb @ ("addnode" | "removenode")) => match (&self.meta, &args[2..]) {
                (Some((raft, runtime)), [id]) => {
                    let id = String::from_utf8_lossy(id).into_owned();
                    let add = verb == "addnode";
                    // As META BUMP: the proposal runs on a thread of its own, which waits for it
                    // on the runtime (this is a server thread of that runtime).
                    let (raft, runtime) = (raft.clone(), runtime.clone());
                    let (change, epoch) = std::thread::spawn(move || {
                        runtime.block_on(async {
                            if add {
                                crate::node_change::add_node(&raft, &id).await
                            } else {
                                crate::node_change::remove_node(&raft, &id).await
                            }
                        })
                    })
                    .join()
                    .map_err(|_| format!("{} failed", verb.to_ascii_uppercase()))??;
                    Ok(vec![format!("OK change {change} epoch {epoch}")])
                }
                (Some(_), _) => Err(format!("usage: KVSTORE {} id", verb.to_ascii_uppercase())),
                (None, _) => Err("this node runs no metadata".to_owned()),
            },
            Some("change") => match (&self.meta, &args[2..]) {
                (Some((raft, rt)), [w, rest @ ..]) if w.eq_ignore_ascii_case(b"rate") => {
                    crate::node_rate::command(raft, rt, rest)
                }
                (Some((raft, _)), []) => {
                    let state = raft.watch().borrow().clone();
                    let report = crate::node_change::report(&state.meta);
                    let mut lines = crate::node_rate::with_rate(report, &state.meta);
                    lines.extend(
                        crate::node_change::local_keys().map(|n| format!("local_keys:{n}")),
                    );
                    Ok(lines)
                }
                (Some((raft, runtime)), [abort]) if abort.eq_ignore_ascii_case(b"abort") => {
                    let (raft, runtime) = (raft.clone(), runtime.clone());
                    let (change, epoch) = std::thread::spawn(move || {
                        runtime.block_on(crate::node_change::abort(&raft))
                    })
                    .join()
                    .map_err(|_| "CHANGE ABORT failed".to_owned())??;
                    Ok(vec![format!(
                        "OK change {change} aborting at epoch {epoch}"
                    )])
                }
                (Some(_), _) => Err(
                    "usage: KVSTORE CHANGE [ABORT | RATE [<keys/s|unlimited> [bytes/s]]]"
                        .to_owned(),
                ),
                (None, _) => Err("this node runs no metadata".to_owned()),
            },
            _ => self.fault(args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_server::KvstoreExtension as _;

    #[test]
    fn a_peer_line_says_what_the_transport_knows() {
        let peers: ReplicaPeers =
            kv_net::Peers::start(kv_net::Identity::new(1, "n1"), kv_net::PeersOptions::new())
                .unwrap();
        // Nothing listens there: never connected, a connect error once tried.
        peers
            .add_peer("n2", "127.0.0.1:1".parse().unwrap())
            .unwrap();
        let cmds = NodeCommands::new(&Arc::new(peers), false, None);
        let lines = cmds.peers_report();
        assert_eq!(lines[0], "=== 1 peers ===");
        assert!(
            lines[1].starts_with("- n2 127.0.0.1:1: not connected, 0 in flight, 0 reconnects"),
            "{}",
            lines[1]
        );
        assert!(cmds.handles("peers"));
        assert!(!cmds.handles("fault"), "FAULT needs --enable-debug-faults");
        assert!(!cmds.handles("meta"), "META needs the node's metadata");
        let args = [
            bytes::Bytes::from("KVSTORE"),
            bytes::Bytes::from("PEERS"),
            bytes::Bytes::from("x"),
        ];
        assert_eq!(cmds.call(&args).unwrap_err(), "usage: KVSTORE PEERS");
    }
}
