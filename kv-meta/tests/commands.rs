//! Each command's validation (membership.md §1.2): accepted in the right state with the
//! documented effect; refused otherwise with a typed error and no change to the state.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use kv_meta::{
    ChangeKind, ClusterMeta, Command, MemberState, MetaError, MetaResponse, RateLimit, Source, Step,
};

#[test]
fn bootstrap_assigns_raft_ids_and_slots_in_list_order_once() {
    let meta = cluster(3, 3);
    assert_eq!(meta.epoch, 1);
    assert_eq!(meta.cluster_uuid, UUID);
    assert_eq!(meta.next_raft_id, 4);
    for (i, id) in ["n1", "n2", "n3"].iter().enumerate() {
        let m = &meta.members[*id];
        assert_eq!(
            (m.raft_id, m.slot, m.state),
            (i as u64 + 1, i as u8, MemberState::Normal)
        );
        assert!(!m.tokens.is_empty());
    }
    let mut meta = meta;
    assert_eq!(
        refused(&mut meta, 2, &bootstrap_cmd(3, 3)),
        MetaError::AlreadyBootstrapped { uuid: UUID }
    );
}

/// A static cluster bootstraps at the epoch of the ring its nodes opened with; later epochs
/// rise from there, and a second bootstrap of either kind is refused.
#[test]
fn bootstrap_at_starts_the_epoch_where_the_static_ring_was() {
    let Command::Bootstrap {
        uuid,
        name,
        rf,
        vnodes,
        members,
    } = bootstrap_cmd(3, 3)
    else {
        panic!("not a bootstrap");
    };
    let at = |epoch| Command::BootstrapAt {
        uuid,
        name: name.clone(),
        rf,
        vnodes,
        members: members.clone(),
        epoch,
    };
    let mut meta = ClusterMeta::default();
    match refused(&mut meta, 1, &at(0)) {
        MetaError::InvalidBootstrap { reason } => assert!(reason.contains("epoch 0"), "{reason}"),
        e => panic!("{e:?}"),
    }
    assert_eq!(meta, ClusterMeta::default());
    assert_eq!(meta.apply(1, &at(3)), MetaResponse::Ok { epoch: 3 });
    assert_eq!(meta.epoch, 3);
    assert_eq!(meta.members["n2"].raft_id, 2);
    assert!(meta.check_invariants().is_ok());
    for again in [at(3), bootstrap_cmd(3, 3)] {
        assert_eq!(
            refused(&mut meta, 2, &again),
            MetaError::AlreadyBootstrapped { uuid: UUID }
        );
    }
    assert_eq!(meta.epoch, 3);
    assert_eq!(at(3).bootstrap_members().map(<[_]>::len), Some(3));
    assert!(
        Command::Deregister { id: "n1".into() }
            .bootstrap_members()
            .is_none()
    );
}

#[test]
fn bootstrap_refuses_invalid_parameters() {
    let bad = |f: &dyn Fn(&mut Command)| {
        let mut cmd = bootstrap_cmd(3, 3);
        f(&mut cmd);
        let mut meta = ClusterMeta::default();
        match refused(&mut meta, 1, &cmd) {
            MetaError::InvalidBootstrap { reason } => reason,
            e => panic!("{e:?}"),
        }
    };
    let with = |f: fn(&mut u128, &mut u32, &mut Vec<kv_meta::NewMember>)| {
        move |cmd: &mut Command| {
            if let Command::Bootstrap {
                uuid, rf, members, ..
            } = cmd
            {
                f(uuid, rf, members)
            }
        }
    };
    assert!(bad(&with(|u, _, _| *u = 0)).contains("uuid"));
    assert!(bad(&with(|_, rf, _| *rf = 4)).contains("replication factor"));
    assert!(bad(&with(|_, rf, _| *rf = 0)).contains("replication factor"));
    assert!(bad(&with(|_, _, m| m.clear())).contains("members"));
    assert!(bad(&with(|_, _, m| m[1].id = "n1".into())).contains("already in the ring"));
    assert!(bad(&with(|_, _, m| m[1].id = "a/b".into())).contains("invalid node id"));
    assert!(bad(&with(|_, _, m| m[1].tokens = m[0].tokens.clone())).contains("another node"));
    assert!(
        bad(&with(
            |_, _, m| m[2].cluster_addr = m[0].cluster_addr.clone()
        ))
        .contains("twice")
    );
    assert!(bad(&with(|_, _, m| m[0].weight = -1.0)).contains("weight"));
}

#[test]
fn every_other_command_needs_a_bootstrap() {
    let mut meta = ClusterMeta::default();
    for cmd in [
        register_cmd("n4"),
        Command::BeginStreaming { change: 1 },
        Command::SetStreamRate {
            rate: RateLimit::default(),
        },
        Command::Deregister { id: "n1".into() },
    ] {
        assert_eq!(refused(&mut meta, 1, &cmd), MetaError::NotBootstrapped);
    }
}

#[test]
fn register_takes_the_lowest_free_slot_and_never_reuses_a_raft_id() {
    let mut meta = cluster(3, 3);
    ok(&mut meta, 2, &register_cmd("n4"));
    let n4 = &meta.members["n4"];
    assert_eq!(
        (n4.raft_id, n4.slot, n4.state),
        (4, 3, MemberState::Registered)
    );
    assert!(n4.tokens.is_empty());
    // Proposed twice: refused.
    assert_eq!(
        refused(&mut meta, 3, &register_cmd("n4")),
        MetaError::AlreadyMember { id: "n4".into() }
    );
    // Another id at n4's address.
    let clash = Command::Register {
        id: "n5".into(),
        cluster_addr: "n4.example:7000".into(),
        client_addr: "n5.example:6379".into(),
    };
    assert!(matches!(
        refused(&mut meta, 3, &clash),
        MetaError::AddressInUse { member, .. } if member == "n4"
    ));
    assert!(matches!(
        refused(&mut meta, 3, &register_cmd("bad id")),
        MetaError::InvalidNodeId { .. }
    ));
    // Deregistered: the slot is free again, the raft id is not.
    ok(&mut meta, 3, &Command::Deregister { id: "n4".into() });
    ok(&mut meta, 4, &register_cmd("n5"));
    assert_eq!(
        (meta.members["n5"].raft_id, meta.members["n5"].slot),
        (5, 3)
    );
    ok(&mut meta, 5, &register_cmd("n4"));
    assert_eq!(meta.members["n4"].raft_id, 6);
}

#[test]
fn register_refuses_the_sixty_fifth_member() {
    let mut meta = cluster(1, 1);
    for i in 2..=64 {
        ok(&mut meta, i, &register_cmd(&format!("n{i}")));
    }
    assert_eq!(
        refused(&mut meta, 65, &register_cmd("n65")),
        MetaError::NoFreeSlot { max: 64 }
    );
}

#[test]
fn an_add_runs_through_every_step_with_its_epochs() {
    let mut meta = cluster(3, 3);
    ok(&mut meta, 2, &register_cmd("n4"));
    let start = start_change_cmd(&meta, ChangeKind::Add, "n4");
    ok(&mut meta, 3, &start);
    let c = meta.change.clone().unwrap();
    assert_eq!(
        (c.id, c.step, c.step_epochs, meta.epoch),
        (3, Step::Pending, [2, 0, 0], 2)
    );
    assert_eq!(meta.members["n4"].state, MemberState::Joining);
    assert!(!c.tasks.is_empty());
    assert!(c.tasks.iter().all(|t| t.to == "n4"));

    // Proposed twice (a retry after a leader change): refused.
    assert_eq!(
        refused(&mut meta, 4, &start),
        MetaError::ChangeInProgress { change: 3 }
    );
    // Out of order: refused.
    assert!(matches!(
        refused(&mut meta, 4, &Command::EnterMid { change: 3 }),
        MetaError::WrongStep {
            step: Step::Pending,
            ..
        }
    ));
    ok(&mut meta, 4, &Command::BeginStreaming { change: 3 });
    assert_eq!(meta.epoch, 2, "streaming keeps the pending epoch");
    assert!(matches!(
        refused(&mut meta, 5, &Command::BeginStreaming { change: 3 }),
        MetaError::WrongStep {
            step: Step::Streaming,
            ..
        }
    ));
    assert_eq!(
        refused(&mut meta, 5, &Command::EnterMid { change: 3 }),
        MetaError::TasksUnfinished {
            change: 3,
            remaining: c.tasks.len() as u32
        }
    );
    let mut index = 5;
    for p in finish_all_tasks(&meta) {
        ok(&mut meta, index, &p);
        index += 1;
    }
    assert!(
        meta.change
            .as_ref()
            .unwrap()
            .tasks
            .iter()
            .all(|t| t.finished)
    );
    ok(&mut meta, index, &Command::EnterMid { change: 3 });
    assert_eq!(meta.epoch, 3);
    assert!(
        meta.members["n4"].tokens.is_empty(),
        "the ring in force is still the old one"
    );
    ok(&mut meta, index + 1, &Command::EnterFinal { change: 3 });
    assert_eq!(meta.epoch, 4);
    assert_eq!(meta.change.as_ref().unwrap().step_epochs, [2, 3, 4]);
    assert_eq!(meta.members["n4"].state, MemberState::Normal);
    assert_eq!(meta.ring_members().len(), 4);
    let Command::StartChange { to_members, .. } = &start else {
        unreachable!()
    };
    assert_eq!(
        &meta.ring_members(),
        to_members,
        "the new ring is the proposer's, bit for bit"
    );
    ok(&mut meta, index + 2, &Command::FinishChange { change: 3 });
    assert!(meta.change.is_none());
    assert_eq!(meta.epoch, 4, "finishing does not change routing");
    assert_eq!(
        refused(&mut meta, index + 3, &Command::FinishChange { change: 3 }),
        MetaError::NoChange { change: 3 }
    );
}

#[test]
fn a_remove_makes_the_leaver_left_then_deregisterable() {
    let mut meta = cluster(4, 3);
    let cmd = start_change_cmd(&meta, ChangeKind::Remove, "n2");
    ok(&mut meta, 2, &cmd);
    assert_eq!(meta.members["n2"].state, MemberState::Leaving);
    assert!(matches!(
        refused(&mut meta, 3, &Command::Deregister { id: "n2".into() }),
        MetaError::WrongState {
            state: MemberState::Leaving,
            ..
        }
    ));
    ok(&mut meta, 3, &Command::BeginStreaming { change: 2 });
    let mut index = 4;
    for p in finish_all_tasks(&meta) {
        ok(&mut meta, index, &p);
        index += 1;
    }
    ok(&mut meta, index, &Command::EnterMid { change: 2 });
    ok(&mut meta, index + 1, &Command::EnterFinal { change: 2 });
    assert!(meta.members["n2"].tokens.is_empty());
    assert_eq!(meta.members["n2"].state, MemberState::Leaving);
    ok(&mut meta, index + 2, &Command::FinishChange { change: 2 });
    assert_eq!(meta.members["n2"].state, MemberState::Left);
    ok(
        &mut meta,
        index + 3,
        &Command::Deregister { id: "n2".into() },
    );
    assert!(!meta.members.contains_key("n2"));
}

#[test]
fn start_change_refusals() {
    let mut meta = cluster(3, 3);
    // Removing below the replication factor.
    let remove = start_change_cmd(&meta, ChangeKind::Remove, "n1");
    assert_eq!(
        refused(&mut meta, 2, &remove),
        MetaError::TooFewMembers {
            remaining: 2,
            rf: 3
        }
    );
    // Adding a node that is not registered.
    ok(&mut meta, 2, &register_cmd("n4"));
    let add = start_change_cmd(&meta, ChangeKind::Add, "n4");
    let mut unknown = add.clone();
    if let Command::StartChange { node, .. } = &mut unknown {
        *node = "n9".into();
    }
    assert_eq!(
        refused(&mut meta, 3, &unknown),
        MetaError::UnknownMember { id: "n9".into() }
    );
    // Adding a node that is already in the ring.
    let mut normal = add.clone();
    if let Command::StartChange { node, .. } = &mut normal {
        *node = "n1".into();
    }
    assert!(matches!(
        refused(&mut meta, 3, &normal),
        MetaError::WrongState {
            state: MemberState::Normal,
            ..
        }
    ));
    // A new ring without the joiner, or with a token clash.
    let mut wrong_ring = add.clone();
    if let Command::StartChange { to_members, .. } = &mut wrong_ring {
        to_members.retain(|m| m.id != "n4");
    }
    assert!(matches!(
        refused(&mut meta, 3, &wrong_ring),
        MetaError::InvalidPlan { .. }
    ));
    let mut clash = add.clone();
    if let Command::StartChange { to_members, .. } = &mut clash {
        let t = to_members[0].tokens[0];
        to_members[1].tokens.push(t);
    }
    assert!(matches!(
        refused(&mut meta, 3, &clash),
        MetaError::InvalidPlan { .. }
    ));
    // Tasks from a node outside the old ring, to one outside the new, or not fresh.
    for f in [
        (|t: &mut kv_meta::StreamTask| t.from = Source::Node("n4".into())) as fn(&mut _),
        |t| t.to = "n9".into(),
        |t| t.done_through[0] = Some(t.ranges[0].1),
        |t| t.ranges.clear(),
    ] {
        let mut bad = add.clone();
        if let Command::StartChange { tasks, .. } = &mut bad {
            f(&mut tasks[0]);
        }
        assert!(matches!(
            refused(&mut meta, 3, &bad),
            MetaError::InvalidPlan { .. }
        ));
    }
    ok(&mut meta, 3, &add);
    // A second change while one is in progress.
    ok(&mut meta, 4, &register_cmd("n5"));
    let second = start_change_cmd(&meta, ChangeKind::Remove, "n1");
    assert_eq!(
        refused(&mut meta, 5, &second),
        MetaError::ChangeInProgress { change: 3 }
    );
}

#[test]
fn commands_of_another_change_are_refused() {
    let mut meta = cluster(3, 3);
    ok(&mut meta, 2, &register_cmd("n4"));
    let cmd = start_change_cmd(&meta, ChangeKind::Add, "n4");
    ok(&mut meta, 3, &cmd);
    // A deposed driver that believes change 2 is in progress.
    for cmd in [
        Command::BeginStreaming { change: 2 },
        Command::Abort { change: 2 },
        Command::EnterFinal { change: 2 },
        Command::TaskSource {
            change: 2,
            task: 0,
            from: Source::Survivors,
        },
    ] {
        assert_eq!(
            refused(&mut meta, 4, &cmd),
            MetaError::WrongChange {
                change: 2,
                current: 3
            }
        );
    }
}

#[test]
fn progress_is_monotonic_and_bounded_by_its_range() {
    let mut meta = cluster(3, 3);
    ok(&mut meta, 2, &register_cmd("n4"));
    let cmd = start_change_cmd(&meta, ChangeKind::Add, "n4");
    ok(&mut meta, 3, &cmd);
    let task = meta.change.as_ref().unwrap().tasks[0].clone();
    let (start, end) = task.ranges[0];
    let progress = |done_through: u64, keys: u64| Command::Progress {
        change: 3,
        task: task.id,
        range: 0,
        done_through,
        keys,
        bytes: keys * 10,
    };
    // Not before streaming.
    assert!(matches!(
        refused(&mut meta, 4, &progress(end, 1)),
        MetaError::WrongStep {
            step: Step::Pending,
            ..
        }
    ));
    ok(&mut meta, 4, &Command::BeginStreaming { change: 3 });
    let middle = start.wrapping_add(end.wrapping_sub(start) / 2);
    ok(&mut meta, 5, &progress(middle, 5));
    let recorded = |meta: &ClusterMeta| meta.change.as_ref().unwrap().tasks[0].clone();
    assert_eq!(recorded(&meta).done_through[0], Some(middle));
    assert_eq!(recorded(&meta).keys, 5);
    // A late report behind the recorded one is ignored (answered Ok, nothing changes).
    let before = meta.clone();
    assert_eq!(
        meta.apply(6, &progress(start.wrapping_add(1), 3)),
        MetaResponse::Ok { epoch: 2 }
    );
    assert_eq!(meta, before);
    // Outside the range, an unknown range, an unknown task.
    assert!(matches!(
        refused(&mut meta, 6, &progress(start, 9)),
        MetaError::BadProgress { .. }
    ));
    assert!(matches!(
        refused(&mut meta, 6, &progress(end.wrapping_add(1), 9)),
        MetaError::BadProgress { .. }
    ));
    let mut no_range = progress(end, 9);
    if let Command::Progress { range, .. } = &mut no_range {
        *range = task.ranges.len() as u32;
    }
    assert!(matches!(
        refused(&mut meta, 6, &no_range),
        MetaError::BadProgress { .. }
    ));
    let mut no_task = progress(end, 9);
    if let Command::Progress { task, .. } = &mut no_task {
        *task = 999;
    }
    assert_eq!(
        refused(&mut meta, 6, &no_task),
        MetaError::UnknownTask {
            change: 3,
            task: 999
        }
    );
    // Reaching the end of every range finishes the task.
    for (i, r) in task.ranges.iter().enumerate() {
        ok(
            &mut meta,
            7,
            &Command::Progress {
                change: 3,
                task: task.id,
                range: i as u32,
                done_through: r.1,
                keys: 20,
                bytes: 200,
            },
        );
    }
    assert!(recorded(&meta).finished);
    // A finished task's source cannot be replaced.
    assert_eq!(
        refused(
            &mut meta,
            8,
            &Command::TaskSource {
                change: 3,
                task: task.id,
                from: Source::Survivors
            }
        ),
        MetaError::TaskFinished {
            change: 3,
            task: task.id
        }
    );
}

#[test]
fn task_source_replaces_a_dead_source_by_survivors_or_an_old_replica() {
    let mut meta = cluster(3, 3);
    ok(&mut meta, 2, &register_cmd("n4"));
    let cmd = start_change_cmd(&meta, ChangeKind::Add, "n4");
    ok(&mut meta, 3, &cmd);
    let cmd = |from: Source| Command::TaskSource {
        change: 3,
        task: 0,
        from,
    };
    ok(&mut meta, 4, &cmd(Source::Survivors));
    assert_eq!(
        meta.change.as_ref().unwrap().tasks[0].from,
        Source::Survivors
    );
    ok(&mut meta, 5, &cmd(Source::Node("n3".into())));
    assert!(matches!(
        refused(&mut meta, 6, &cmd(Source::Node("n4".into()))),
        MetaError::InvalidPlan { .. }
    ));
    assert!(matches!(
        refused(
            &mut meta,
            6,
            &Command::TaskSource {
                change: 3,
                task: 77,
                from: Source::Survivors
            }
        ),
        MetaError::UnknownTask { .. }
    ));
}

#[test]
fn abort_only_before_mid_and_returns_the_joiner_to_registered() {
    let mut meta = cluster(3, 3);
    ok(&mut meta, 2, &register_cmd("n4"));
    let cmd = start_change_cmd(&meta, ChangeKind::Add, "n4");
    ok(&mut meta, 3, &cmd);
    ok(&mut meta, 4, &Command::BeginStreaming { change: 3 });
    ok(&mut meta, 5, &Command::Abort { change: 3 });
    assert_eq!(meta.epoch, 3, "aborting is a routing epoch");
    assert_eq!(meta.change.as_ref().unwrap().step, Step::Aborting);
    assert!(matches!(
        refused(&mut meta, 6, &Command::Abort { change: 3 }),
        MetaError::WrongStep {
            step: Step::Aborting,
            ..
        }
    ));
    assert!(matches!(
        refused(&mut meta, 6, &Command::FinishChange { change: 3 }),
        MetaError::WrongStep { .. }
    ));
    ok(&mut meta, 6, &Command::FinishAbort { change: 3 });
    assert!(meta.change.is_none());
    assert_eq!(meta.members["n4"].state, MemberState::Registered);
    assert_eq!(meta.ring_members().len(), 3);

    // After Mid the only way is forward.
    let cmd = start_change_cmd(&meta, ChangeKind::Add, "n4");
    ok(&mut meta, 7, &cmd);
    ok(&mut meta, 8, &Command::BeginStreaming { change: 7 });
    let mut index = 9;
    for p in finish_all_tasks(&meta) {
        ok(&mut meta, index, &p);
        index += 1;
    }
    ok(&mut meta, index, &Command::EnterMid { change: 7 });
    assert!(matches!(
        refused(&mut meta, index + 1, &Command::Abort { change: 7 }),
        MetaError::WrongStep {
            step: Step::Mid,
            ..
        }
    ));
}

#[test]
fn an_aborted_removal_returns_the_leaver_to_normal() {
    let mut meta = cluster(4, 3);
    let cmd = start_change_cmd(&meta, ChangeKind::Remove, "n4");
    ok(&mut meta, 2, &cmd);
    ok(&mut meta, 3, &Command::Abort { change: 2 });
    ok(&mut meta, 4, &Command::FinishAbort { change: 2 });
    assert_eq!(meta.members["n4"].state, MemberState::Normal);
    assert_eq!(meta.ring_members().len(), 4);
}

#[test]
fn stream_rate_acks_and_deregister() {
    let mut meta = cluster(3, 3);
    let rate = RateLimit {
        keys_per_sec: 1000,
        bytes_per_sec: 1 << 20,
    };
    ok(&mut meta, 2, &Command::SetStreamRate { rate });
    assert_eq!(meta.stream_rate, rate);
    ok(
        &mut meta,
        3,
        &Command::Ack {
            node: "n1".into(),
            epoch: 1,
        },
    );
    ok(
        &mut meta,
        4,
        &Command::Ack {
            node: "n1".into(),
            epoch: 0,
        },
    );
    assert_eq!(meta.acks["n1"], 1, "acks only rise");
    assert_eq!(
        refused(
            &mut meta,
            5,
            &Command::Ack {
                node: "n1".into(),
                epoch: 2
            }
        ),
        MetaError::FutureEpoch {
            epoch: 2,
            current: 1
        }
    );
    assert_eq!(
        refused(
            &mut meta,
            5,
            &Command::Ack {
                node: "n9".into(),
                epoch: 1
            }
        ),
        MetaError::UnknownMember { id: "n9".into() }
    );
    assert!(matches!(
        refused(&mut meta, 5, &Command::Deregister { id: "n1".into() }),
        MetaError::WrongState {
            state: MemberState::Normal,
            ..
        }
    ));
    assert_eq!(
        refused(&mut meta, 5, &Command::Deregister { id: "n9".into() }),
        MetaError::UnknownMember { id: "n9".into() }
    );
}

#[test]
fn refusals_print_what_was_wrong() {
    let e = MetaError::WrongStep {
        change: 3,
        step: Step::Mid,
        expected: "pending".into(),
    };
    assert_eq!(e.to_string(), "change 3 is mid, expected pending");
    let e = MetaError::TooFewMembers {
        remaining: 2,
        rf: 3,
    };
    assert!(e.to_string().contains("replication factor 3"));
}
