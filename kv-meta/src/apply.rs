//! `ClusterMeta::apply`: every command's validation and effect (membership.md §1.2).
//!
//! Each handler checks everything first and only then changes the state, so a refusal leaves
//! the state exactly as it was (the property test checks this for random command sequences).

use std::collections::BTreeSet;

use crate::change::{Change, ChangeKind, Source, Step, StreamTask, position_in};
use crate::command::{Command, MetaResponse, NewMember};
use crate::error::MetaError;
use crate::state::{
    ClusterMeta, MAX_MEMBERS, Member, MemberState, RateLimit, RingMember, build_ring, ids,
};

type Result<T> = std::result::Result<T, MetaError>;

impl ClusterMeta {
    /// Applies one committed command, the entry at raft log `index` (a `StartChange` takes it
    /// as the change's id). Pure: no clock, no randomness, no I/O, so every node computes the
    /// same state from the same log.
    ///
    /// A refused command leaves the state unchanged and answers why.
    ///
    /// # Example
    ///
    /// ```
    /// use kv_meta::{ClusterMeta, Command, MetaError, MetaResponse};
    ///
    /// let mut meta = ClusterMeta::default();
    /// let register = Command::Register {
    ///     id: "n4".into(),
    ///     cluster_addr: "127.0.0.1:7004".into(),
    ///     client_addr: "127.0.0.1:6382".into(),
    /// };
    /// assert_eq!(meta.apply(1, &register), MetaResponse::Refused(MetaError::NotBootstrapped));
    /// assert_eq!(meta, ClusterMeta::default());
    /// ```
    pub fn apply(&mut self, index: u64, cmd: &Command) -> MetaResponse {
        match self.try_apply(index, cmd) {
            Ok(()) => MetaResponse::Ok { epoch: self.epoch },
            Err(e) => MetaResponse::Refused(e),
        }
    }

    fn try_apply(&mut self, index: u64, cmd: &Command) -> Result<()> {
        match cmd {
            Command::Bootstrap {
                uuid,
                name,
                rf,
                vnodes,
                members,
            } => return self.bootstrap(*uuid, name, *rf, *vnodes, members, 1),
            Command::BootstrapAt {
                uuid,
                name,
                rf,
                vnodes,
                members,
                epoch,
            } => return self.bootstrap(*uuid, name, *rf, *vnodes, members, *epoch),
            _ => {}
        }
        if !self.is_bootstrapped() {
            return Err(MetaError::NotBootstrapped);
        }
        match cmd {
            Command::Bootstrap { .. } | Command::BootstrapAt { .. } => {
                Err(MetaError::AlreadyBootstrapped {
                    uuid: self.cluster_uuid,
                })
            }
            Command::Register {
                id,
                cluster_addr,
                client_addr,
            } => self.register(id, cluster_addr, client_addr),
            Command::StartChange {
                kind,
                node,
                to_members,
                tasks,
                started_ms,
            } => self.start_change(index, *kind, node, to_members, tasks, *started_ms),
            Command::BeginStreaming { change } => {
                let c = self.change_in(*change, &[Step::Pending])?;
                c.step = Step::Streaming;
                Ok(())
            }
            Command::Progress {
                change,
                task,
                range,
                done_through,
                keys,
                bytes,
            } => self.progress(*change, *task, *range, *done_through, *keys, *bytes),
            Command::TaskSource { change, task, from } => self.task_source(*change, *task, from),
            Command::EnterMid { change } => self.enter_mid(*change),
            Command::EnterFinal { change } => self.enter_final(*change),
            Command::FinishChange { change } => self.finish_change(*change),
            Command::Abort { change } => {
                let epoch = self.epoch + 1;
                let c = self.change_in(*change, &[Step::Pending, Step::Streaming])?;
                c.step = Step::Aborting;
                self.epoch = epoch;
                Ok(())
            }
            Command::FinishAbort { change } => self.finish_abort(*change),
            Command::SetStreamRate { rate } => {
                self.stream_rate = RateLimit { ..*rate };
                Ok(())
            }
            Command::Ack { node, epoch } => {
                if !self.members.contains_key(node) {
                    return Err(MetaError::UnknownMember { id: node.clone() });
                }
                if *epoch > self.epoch {
                    return Err(MetaError::FutureEpoch {
                        epoch: *epoch,
                        current: self.epoch,
                    });
                }
                let acked = self.acks.entry(node.clone()).or_insert(0);
                *acked = (*acked).max(*epoch);
                Ok(())
            }
            Command::Deregister { id } => self.deregister(id),
        }
    }

    fn bootstrap(
        &mut self,
        uuid: u128,
        name: &str,
        rf: u32,
        vnodes: u32,
        members: &[NewMember],
        epoch: u64,
    ) -> Result<()> {
        if self.is_bootstrapped() {
            return Err(MetaError::AlreadyBootstrapped {
                uuid: self.cluster_uuid,
            });
        }
        let invalid = |reason: String| MetaError::InvalidBootstrap { reason };
        if uuid == 0 {
            return Err(invalid("cluster uuid 0".into()));
        }
        if epoch == 0 {
            return Err(invalid(
                "epoch 0 (a bootstrapped cluster is at epoch 1 or more)".into(),
            ));
        }
        if members.is_empty() || members.len() > MAX_MEMBERS {
            return Err(invalid(format!(
                "{} members, 1..={MAX_MEMBERS} expected",
                members.len()
            )));
        }
        if rf == 0 || rf as usize > members.len() {
            return Err(invalid(format!(
                "replication factor {rf} for {} members",
                members.len()
            )));
        }
        let mut addrs = BTreeSet::new();
        for m in members {
            for addr in [&m.cluster_addr, &m.client_addr] {
                if !addrs.insert(addr.as_str()) {
                    return Err(invalid(format!("address {addr} is given twice")));
                }
            }
        }
        let ring: Vec<RingMember> = members
            .iter()
            .map(|m| RingMember {
                id: m.id.clone(),
                weight: m.weight,
                tokens: m.tokens.clone(),
            })
            .collect();
        build_ring(&ring, vnodes, rf).map_err(invalid)?;
        *self = ClusterMeta {
            cluster_uuid: uuid,
            cluster_name: name.to_owned(),
            replication_factor: rf,
            vnodes,
            epoch,
            members: members
                .iter()
                .zip(0u8..)
                .map(|(m, slot)| {
                    let member = Member {
                        raft_id: u64::from(slot) + 1,
                        slot,
                        cluster_addr: m.cluster_addr.clone(),
                        client_addr: m.client_addr.clone(),
                        weight: m.weight,
                        tokens: m.tokens.clone(),
                        state: MemberState::Normal,
                    };
                    (m.id.clone(), member)
                })
                .collect(),
            next_raft_id: members.len() as u64 + 1,
            change: None,
            stream_rate: RateLimit::default(),
            acks: Default::default(),
        };
        Ok(())
    }

    fn register(&mut self, id: &str, cluster_addr: &str, client_addr: &str) -> Result<()> {
        kv_ring::NodeId::new(id).map_err(|e| MetaError::InvalidNodeId {
            id: id.to_owned(),
            reason: match e {
                kv_ring::Error::InvalidNodeId { reason, .. } => reason.to_owned(),
                other => other.to_string(),
            },
        })?;
        if self.members.contains_key(id) {
            return Err(MetaError::AlreadyMember { id: id.to_owned() });
        }
        for (other, m) in &self.members {
            for addr in [cluster_addr, client_addr] {
                if m.state != MemberState::Left && (m.cluster_addr == addr || m.client_addr == addr)
                {
                    return Err(MetaError::AddressInUse {
                        addr: addr.to_owned(),
                        member: other.clone(),
                    });
                }
            }
        }
        if cluster_addr == client_addr {
            return Err(MetaError::AddressInUse {
                addr: client_addr.to_owned(),
                member: id.to_owned(),
            });
        }
        let slot = self.free_slot().ok_or(MetaError::NoFreeSlot {
            max: MAX_MEMBERS as u32,
        })?;
        let member = Member {
            raft_id: self.next_raft_id,
            slot,
            cluster_addr: cluster_addr.to_owned(),
            client_addr: client_addr.to_owned(),
            weight: 1.0,
            tokens: Vec::new(),
            state: MemberState::Registered,
        };
        self.next_raft_id += 1;
        self.members.insert(id.to_owned(), member);
        Ok(())
    }

    fn start_change(
        &mut self,
        index: u64,
        kind: ChangeKind,
        node: &str,
        to_members: &[RingMember],
        tasks: &[StreamTask],
        started_ms: u64,
    ) -> Result<()> {
        if let Some(c) = &self.change {
            return Err(MetaError::ChangeInProgress { change: c.id });
        }
        let member = self
            .members
            .get(node)
            .ok_or_else(|| MetaError::UnknownMember {
                id: node.to_owned(),
            })?;
        let (needed, next) = match kind {
            ChangeKind::Add => (MemberState::Registered, MemberState::Joining),
            ChangeKind::Remove => (MemberState::Normal, MemberState::Leaving),
        };
        if member.state != needed {
            return Err(MetaError::WrongState {
                id: node.to_owned(),
                state: member.state,
                expected: needed.to_string(),
            });
        }
        let from_members = self.ring_members();
        let invalid = |reason: String| MetaError::InvalidPlan { reason };
        let mut expected = ids(&from_members);
        match kind {
            ChangeKind::Add => expected.insert(node),
            ChangeKind::Remove => expected.remove(node),
        };
        if expected.len() < self.replication_factor as usize {
            return Err(MetaError::TooFewMembers {
                remaining: expected.len() as u32,
                rf: self.replication_factor,
            });
        }
        let given = ids(to_members);
        if given != expected || given.len() != to_members.len() {
            return Err(invalid(format!(
                "the new ring's members are {given:?}, expected {expected:?}"
            )));
        }
        build_ring(to_members, self.vnodes, self.replication_factor).map_err(invalid)?;
        let old = ids(&from_members);
        let mut task_ids = BTreeSet::new();
        for t in tasks {
            if !task_ids.insert(t.id) {
                return Err(invalid(format!("task id {} is given twice", t.id)));
            }
            if !t.is_fresh() || t.ranges.is_empty() {
                return Err(invalid(format!(
                    "task {} is not a fresh task with ranges",
                    t.id
                )));
            }
            if !given.contains(t.to.as_str()) {
                return Err(invalid(format!(
                    "task {}: {} is not in the new ring",
                    t.id, t.to
                )));
            }
            if let Source::Node(from) = &t.from
                && !old.contains(from.as_str())
            {
                return Err(invalid(format!(
                    "task {}: {from} is not in the old ring",
                    t.id
                )));
            }
        }
        self.epoch += 1;
        if let Some(m) = self.members.get_mut(node) {
            m.state = next;
        }
        self.change = Some(Change {
            id: index,
            kind,
            node: node.to_owned(),
            from_members,
            to_members: to_members.to_vec(),
            step: Step::Pending,
            step_epochs: [self.epoch, 0, 0],
            tasks: tasks.to_vec(),
            error: None,
            started_ms,
        });
        Ok(())
    }

    /// The change in progress, if it is `id` and in one of `steps`.
    fn change_in(&mut self, id: u64, steps: &[Step]) -> Result<&mut Change> {
        let c = self
            .change
            .as_mut()
            .ok_or(MetaError::NoChange { change: id })?;
        if c.id != id {
            return Err(MetaError::WrongChange {
                change: id,
                current: c.id,
            });
        }
        if !steps.contains(&c.step) {
            let expected: Vec<String> = steps.iter().map(Step::to_string).collect();
            return Err(MetaError::WrongStep {
                change: id,
                step: c.step,
                expected: expected.join(" or "),
            });
        }
        Ok(c)
    }

    fn progress(
        &mut self,
        change: u64,
        task: u32,
        range: u32,
        done_through: u64,
        keys: u64,
        bytes: u64,
    ) -> Result<()> {
        let c = self.change_in(change, &[Step::Streaming])?;
        let t = c
            .tasks
            .iter_mut()
            .find(|t| t.id == task)
            .ok_or(MetaError::UnknownTask { change, task })?;
        let bad = |reason: String| MetaError::BadProgress {
            change,
            task,
            reason,
        };
        let r = *t
            .ranges
            .get(range as usize)
            .ok_or_else(|| bad(format!("no range {range}")))?;
        let pos = position_in(r, done_through).ok_or_else(|| {
            bad(format!(
                "token {done_through:#x} is outside range {range} ({:#x}, {:#x}]",
                r.0, r.1
            ))
        })?;
        let recorded = t
            .done_through
            .get(range as usize)
            .copied()
            .flatten()
            .and_then(|d| position_in(r, d));
        if recorded.is_some_and(|at| pos <= at) {
            return Ok(()); // Behind what is recorded: a late or repeated report.
        }
        if let Some(slot) = t.done_through.get_mut(range as usize) {
            *slot = Some(done_through);
        }
        t.keys = t.keys.max(keys);
        t.bytes = t.bytes.max(bytes);
        t.finished = t
            .ranges
            .iter()
            .zip(&t.done_through)
            .all(|(r, d)| *d == Some(r.1));
        Ok(())
    }

    fn task_source(&mut self, change: u64, task: u32, from: &Source) -> Result<()> {
        let c = self.change_in(change, &[Step::Pending, Step::Streaming])?;
        if let Source::Node(node) = from
            && !c.from_members.iter().any(|m| &m.id == node)
        {
            return Err(MetaError::InvalidPlan {
                reason: format!("task {task}: {node} is not in the old ring"),
            });
        }
        let t = c
            .tasks
            .iter_mut()
            .find(|t| t.id == task)
            .ok_or(MetaError::UnknownTask { change, task })?;
        if t.finished {
            return Err(MetaError::TaskFinished { change, task });
        }
        t.from = from.clone();
        Ok(())
    }

    fn enter_mid(&mut self, change: u64) -> Result<()> {
        let epoch = self.epoch + 1;
        let c = self.change_in(change, &[Step::Streaming])?;
        let remaining = c.unfinished();
        if remaining > 0 {
            return Err(MetaError::TasksUnfinished {
                change,
                remaining: remaining as u32,
            });
        }
        c.step = Step::Mid;
        c.step_epochs[1] = epoch;
        self.epoch = epoch;
        Ok(())
    }

    fn enter_final(&mut self, change: u64) -> Result<()> {
        let epoch = self.epoch + 1;
        let c = self.change_in(change, &[Step::Mid])?;
        c.step = Step::Final;
        c.step_epochs[2] = epoch;
        let (kind, node, to) = (c.kind, c.node.clone(), c.to_members.clone());
        self.epoch = epoch;
        for (id, m) in &mut self.members {
            match to.iter().find(|r| &r.id == id) {
                Some(r) => {
                    m.weight = r.weight;
                    m.tokens = r.tokens.clone();
                }
                None => m.tokens.clear(),
            }
        }
        if kind == ChangeKind::Add
            && let Some(m) = self.members.get_mut(&node)
        {
            m.state = MemberState::Normal;
        }
        Ok(())
    }

    fn finish_change(&mut self, change: u64) -> Result<()> {
        let c = self.change_in(change, &[Step::Final])?;
        let (kind, node) = (c.kind, c.node.clone());
        self.change = None;
        if kind == ChangeKind::Remove
            && let Some(m) = self.members.get_mut(&node)
        {
            m.state = MemberState::Left;
        }
        Ok(())
    }

    fn finish_abort(&mut self, change: u64) -> Result<()> {
        let c = self.change_in(change, &[Step::Aborting])?;
        let (kind, node) = (c.kind, c.node.clone());
        self.change = None;
        if let Some(m) = self.members.get_mut(&node) {
            m.state = match kind {
                ChangeKind::Add => MemberState::Registered,
                ChangeKind::Remove => MemberState::Normal,
            };
        }
        Ok(())
    }

    fn deregister(&mut self, id: &str) -> Result<()> {
        let m = self
            .members
            .get(id)
            .ok_or_else(|| MetaError::UnknownMember { id: id.to_owned() })?;
        if !matches!(m.state, MemberState::Left | MemberState::Registered) {
            return Err(MetaError::WrongState {
                id: id.to_owned(),
                state: m.state,
                expected: "left or registered".into(),
            });
        }
        self.members.remove(id);
        self.acks.remove(id);
        Ok(())
    }
}
