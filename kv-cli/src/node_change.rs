//! `KVSTORE ADDNODE id` and `KVSTORE CHANGE` (membership.md §3, step 8 part 2, first
//! increment): ADDNODE plans the change on fresh metadata and commits its `StartChange`
//! through the leader; CHANGE shows the change in progress as this node's metadata has it.
//!
//! The driver that walks the change past `Pending` (barriers B1/B2, the stream tasks,
//! `EnterMid`, `EnterFinal`, `FinishChange`) is not built yet: a started change stays
//! `Pending` (writes to both rings, reads from the old one) until it is aborted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kv_meta::{ChangeKind, ClusterMeta, MetaRaft, MetaResponse, Source};

/// How long ADDNODE waits for this node to apply the leader's committed index before it
/// plans: a plan from stale metadata is refused when applied, and a fresh one is not.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Starts the change that adds the `Registered` member `node`: reads the leader's committed
/// index, waits until this node applied it, plans with [`kv_meta::plan_change`] and proposes
/// the `StartChange` (forwarded to the leader). Returns the change's id (its log index) and
/// the epoch it entered.
///
/// # Errors
/// The planner's refusal (unknown member, not `Registered`, a change in progress), the state
/// machine's refusal, or the raft's unavailability, as a line for the client.
pub async fn add_node(raft: &MetaRaft, node: &str) -> Result<(u64, u64), String> {
    let index = raft.read_index().await.map_err(|e| e.to_string())?;
    raft.wait_applied(index, CATCH_UP)
        .await
        .map_err(|e| e.to_string())?;
    let state = raft.watch().borrow().clone();
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let plan = kv_meta::plan_change(&state.meta, ChangeKind::Add, node, started_ms)
        .map_err(|e| e.to_string())?;
    match raft.propose(plan).await {
        Ok((log_id, MetaResponse::Ok { epoch })) => Ok((log_id.index, epoch)),
        Ok((_, MetaResponse::Refused(e))) => Err(format!("refused: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// `KVSTORE CHANGE`: `change:none`, or the change's id, kind, node, step, epoch, tasks
/// finished of all, keys and bytes copied, what it waits for, and one line per task.
pub fn report(meta: &ClusterMeta) -> Vec<String> {
    let Some(c) = &meta.change else {
        return vec!["change:none".to_owned(), format!("epoch:{}", meta.epoch)];
    };
    let done = c.tasks.len() - c.unfinished();
    let keys: u64 = c.tasks.iter().map(|t| t.keys).sum();
    let bytes: u64 = c.tasks.iter().map(|t| t.bytes).sum();
    let mut out = vec![
        format!("change:{}", c.id),
        format!("kind:{}", c.kind),
        format!("node:{}", c.node),
        format!("step:{}", c.step),
        format!("epoch:{}", meta.epoch),
        format!("tasks_done:{done}/{}", c.tasks.len()),
        format!("keys_copied:{keys}"),
        format!("bytes_copied:{bytes}"),
        // No driver walks the change yet: say so rather than name a barrier nobody runs.
        "waiting_for:the change driver (not built: the change stays here until aborted)".to_owned(),
    ];
    if let Some(e) = &c.error {
        out.push(format!("error:{}", e.replace(['\r', '\n'], " ")));
    }
    out.extend(c.tasks.iter().map(|t| {
        let from = match &t.from {
            Source::Node(n) => n.clone(),
            Source::Survivors => "survivors".to_owned(),
        };
        format!(
            "task:{} {from}->{} ranges:{} keys:{} finished:{}",
            t.id,
            t.to,
            t.ranges.len(),
            t.keys,
            u8::from(t.finished)
        )
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_meta::{Command, NewMember};

    /// Three members of rf 3 at epoch 3, and `n4` registered (joined, not in the ring).
    fn with_a_joiner() -> ClusterMeta {
        // The planner rebuilds rings from the metadata's vnodes: the tokens are a real ring's.
        let options = kv_ring::RingOptions::default()
            .vnodes(16)
            .unwrap()
            .placement(kv_ring::Placement::Balanced {
                replication_factor: 3,
            });
        let ring = kv_ring::Ring::with_nodes(options, ["n1", "n2", "n3"]).unwrap();
        let members = (1..=3u64)
            .map(|i| NewMember {
                id: format!("n{i}"),
                cluster_addr: format!("127.0.0.1:1700{i}"),
                client_addr: format!("127.0.0.1:700{i}"),
                weight: 1.0,
                tokens: ring.tokens_of(format!("n{i}").as_str()).unwrap().to_vec(),
            })
            .collect();
        let boot = Command::BootstrapAt {
            uuid: 9,
            name: "t".into(),
            rf: 3,
            vnodes: 16,
            members,
            epoch: 3,
        };
        let mut meta = ClusterMeta::default();
        assert_eq!(meta.apply(1, &boot), MetaResponse::Ok { epoch: 3 });
        let register = Command::Register {
            id: "n4".into(),
            cluster_addr: "127.0.0.1:17004".into(),
            client_addr: "127.0.0.1:7004".into(),
        };
        assert!(meta.apply(2, &register).is_ok());
        meta
    }

    #[test]
    fn no_change_is_none_and_a_started_add_shows_its_step_and_tasks() {
        let mut meta = with_a_joiner();
        assert_eq!(report(&meta), ["change:none", "epoch:3"]);
        let plan = kv_meta::plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap();
        assert_eq!(meta.apply(3, &plan), MetaResponse::Ok { epoch: 4 });
        let lines = report(&meta);
        let tasks = meta.change.as_ref().unwrap().tasks.len();
        assert!(tasks > 0, "an add moves ranges");
        assert_eq!(
            lines[..8],
            [
                "change:3".to_owned(),
                "kind:add".to_owned(),
                "node:n4".to_owned(),
                "step:pending".to_owned(),
                "epoch:4".to_owned(),
                format!("tasks_done:0/{tasks}"),
                "keys_copied:0".to_owned(),
                "bytes_copied:0".to_owned(),
            ]
        );
        let task_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("task:")).collect();
        assert_eq!(task_lines.len(), tasks);
        assert!(
            task_lines
                .iter()
                .all(|l| l.contains("->n4 ") && l.ends_with("finished:0")),
            "{task_lines:?}"
        );
        // A second add while one runs is refused by the planner.
        let e = kv_meta::plan_change(&meta, ChangeKind::Add, "n4", 0).unwrap_err();
        assert!(e.to_string().contains("change"), "{e}");
    }
}
