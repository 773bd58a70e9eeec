//! Shared fixtures: clusters with real kv-ring tokens, and the proposer's side of a change.
#![allow(dead_code, clippy::unwrap_used)]

use kv_meta::{
    ChangeKind, ClusterMeta, Command, MetaResponse, NewMember, RingMember, Source, StreamTask,
};
use kv_ring::{Ring, transfer_plan};

/// The cluster's uuid in every fixture.
pub const UUID: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

/// `Bootstrap` of `n` members `n1..`, rf `rf`, 8 vnodes, tokens from a balanced kv-ring.
pub fn bootstrap_cmd(n: usize, rf: u32) -> Command {
    let options = kv_ring::RingOptions::default()
        .vnodes(8)
        .unwrap()
        .placement(kv_ring::Placement::Balanced {
            replication_factor: rf as usize,
        });
    let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let ring = Ring::with_nodes(options, &ids).unwrap();
    Command::Bootstrap {
        uuid: UUID,
        name: "test".into(),
        rf,
        vnodes: 8,
        members: ids
            .iter()
            .enumerate()
            .map(|(i, id)| NewMember {
                id: id.clone(),
                cluster_addr: format!("10.0.0.{}:7000", i + 1),
                client_addr: format!("10.0.0.{}:6379", i + 1),
                weight: 1.0,
                tokens: ring.tokens_of(id).unwrap().to_vec(),
            })
            .collect(),
    }
}

/// A bootstrapped cluster of `n` members at log index 1.
pub fn cluster(n: usize, rf: u32) -> ClusterMeta {
    let mut meta = ClusterMeta::default();
    assert_eq!(
        meta.apply(1, &bootstrap_cmd(n, rf)),
        MetaResponse::Ok { epoch: 1 }
    );
    meta
}

/// `Register` of `id` with addresses derived from it.
pub fn register_cmd(id: &str) -> Command {
    Command::Register {
        id: id.into(),
        cluster_addr: format!("{id}.example:7000"),
        client_addr: format!("{id}.example:6379"),
    }
}

/// The members of `ring` with their tokens, as a change carries them.
pub fn members_of(ring: &Ring) -> Vec<RingMember> {
    ring.nodes()
        .map(|n| RingMember {
            id: n.to_string(),
            weight: ring.weight_of(n.as_str()).unwrap(),
            tokens: ring.tokens_of(n.as_str()).unwrap().to_vec(),
        })
        .collect()
}

/// What the leader's driver proposes to add or remove `node`: the new ring (kv-ring) and one
/// task per (source, destination) pair of kv-ring's transfer plan.
pub fn start_change_cmd(meta: &ClusterMeta, kind: ChangeKind, node: &str) -> Command {
    let old = meta.ring().unwrap();
    let new = match kind {
        ChangeKind::Add => old.add_node(node).unwrap(),
        ChangeKind::Remove => old.remove_node(node).unwrap(),
    };
    // A removal below the replication factor is the state machine's to refuse: plan it at the
    // largest factor the new ring allows.
    let rf = (meta.replication_factor as usize).min(new.len()).max(1);
    let plan = transfer_plan(&old, &new, rf).unwrap();
    let mut tasks: Vec<StreamTask> = Vec::new();
    for t in &plan.transfers {
        let (from, to) = (t.from.to_string(), t.to.to_string());
        let range = (t.range.start, t.range.end);
        match tasks
            .iter_mut()
            .find(|x| x.from == Source::Node(from.clone()) && x.to == to)
        {
            Some(x) => {
                x.ranges.push(range);
                x.done_through.push(None);
            }
            None => tasks.push(StreamTask::new(
                tasks.len() as u32,
                Source::Node(from),
                to,
                vec![range],
            )),
        }
    }
    Command::StartChange {
        kind,
        node: node.into(),
        to_members: members_of(&new),
        tasks,
        started_ms: 1_700_000_000_000,
    }
}

/// `Progress` commands that finish every range of every task of the change in progress.
pub fn finish_all_tasks(meta: &ClusterMeta) -> Vec<Command> {
    let c = meta.change.as_ref().unwrap();
    c.tasks
        .iter()
        .flat_map(|t| {
            t.ranges
                .iter()
                .enumerate()
                .map(move |(i, r)| Command::Progress {
                    change: c.id,
                    task: t.id,
                    range: i as u32,
                    done_through: r.1,
                    keys: 10,
                    bytes: 100,
                })
        })
        .collect()
}

/// Applies `cmd` at `index`, asserting it is accepted.
pub fn ok(meta: &mut ClusterMeta, index: u64, cmd: &Command) {
    let r = meta.apply(index, cmd);
    assert!(r.is_ok(), "{cmd:?} refused: {r:?}");
    meta.check_invariants().unwrap();
}

/// Applies `cmd` at `index`, asserting it is refused and changes nothing; returns the refusal.
pub fn refused(meta: &mut ClusterMeta, index: u64, cmd: &Command) -> kv_meta::MetaError {
    let before = meta.clone();
    match meta.apply(index, cmd) {
        MetaResponse::Refused(e) => {
            assert_eq!(*meta, before, "a refused {cmd:?} changed the state");
            e
        }
        r => panic!("{cmd:?} was accepted: {r:?}"),
    }
}
