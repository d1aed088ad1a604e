//! One group's state machine: Empty → PreparingRebalance →
//! CompletingRebalance → Stable, back to PreparingRebalance on any change.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::info;

use super::{GroupError, JoinMember, JoinRequest, JoinResponse, SyncResponse};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's name for the state (DescribeGroups, ListGroups).
    pub fn kafka_name(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug)]
pub(super) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    pub join_waiter: Option<oneshot::Sender<JoinResponse>>,
    pub sync_waiter: Option<oneshot::Sender<SyncResponse>>,
    pub join_order: u64,
    /// Restored from the membership log and not heard from since (wall-clock
    /// ms since when); see `membership::MemberRecord::silent_since_ms`.
    pub silent_since_ms: Option<i64>,
}

impl Member {
    pub fn new(id: String, req: &JoinRequest, now: Instant, join_order: u64) -> Member {
        Member {
            id,
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            last_heartbeat: now,
            join_waiter: None,
            sync_waiter: None,
            join_order,
            silent_since_ms: None,
        }
    }

    pub fn update(&mut self, req: &JoinRequest, now: Instant) {
        self.client_id = req.client_id.clone();
        self.client_host = req.client_host.clone();
        self.session_timeout_ms = req.session_timeout_ms;
        self.rebalance_timeout_ms = req.rebalance_timeout_ms;
        self.protocol_type = req.protocol_type.clone();
        self.protocols = req.protocols.clone();
        self.last_heartbeat = now;
    }

    pub fn metadata_for(&self, protocol: &str) -> Option<Bytes> {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone())
    }
}

#[derive(Debug)]
pub(super) struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pub pending_members: HashMap<String, Instant>,
    /// group.instance.id → member id.
    pub static_members: HashMap<String, String>,
    pub rebalance_deadline: Option<Instant>,
    /// An empty group waits this long for more members before completing.
    pub initial_delay_until: Option<Instant>,
    /// The group settled (Stable with a new plan, Empty, or a static member
    /// took a new id) since its state was last made durable.
    pub dirty: bool,
}

impl Group {
    pub fn new(id: String) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            dirty: false,
        }
    }

    /// Whether a member with these protocols can join: same type, and at
    /// least one protocol every member supports.
    pub fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        let same_type = self.members.values().all(|m| m.protocol_type == protocol_type);
        same_type && protocols.iter().any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    pub fn add_member(&mut self, member: Member) {
        if let Some(i) = &member.instance_id {
            self.static_members.insert(i.clone(), member.id.clone());
        }
        self.members.insert(member.id.clone(), member);
    }

    pub fn remove_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(i) = &m.instance_id {
                if self.static_members.get(i).map(String::as_str) == Some(id) {
                    self.static_members.remove(i);
                }
            }
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResponse::error(GroupError::UnknownMemberId, id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResponse::error(GroupError::UnknownMemberId));
            }
        }
        if self.leader_id.as_deref() == Some(id) {
            self.leader_id = None;
        }
    }

    pub fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(i) = instance_id {
            match self.static_members.get(i) {
                Some(mapped) if mapped == member_id => {}
                Some(_) => return Err(GroupError::FencedInstanceId),
                None => return Err(GroupError::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    /// Moves to PreparingRebalance (if not already there). Members waiting
    /// in SyncGroup are told to rejoin.
    pub fn prepare_rebalance(&mut self, now: Instant, initial_delay_ms: u64, reason: &str) {
        if self.state == GroupState::PreparingRebalance {
            if let Some(until) = self.initial_delay_until {
                // More members arriving during the initial delay extend it,
                // up to the rebalance deadline.
                let extended = now + Duration::from_millis(initial_delay_ms);
                if initial_delay_ms > 0 && extended > until {
                    self.initial_delay_until = Some(extended.min(self.rebalance_deadline.unwrap_or(extended)));
                }
            }
            return;
        }
        if matches!(self.state, GroupState::Empty) && self.members.is_empty() {
            return;
        }
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResponse::error(GroupError::RebalanceInProgress));
            }
        }
        let rebalance_ms = self.members.values().map(|m| m.rebalance_timeout_ms.max(0) as u64).max().unwrap_or(0);
        self.initial_delay_until =
            (self.state == GroupState::Empty && initial_delay_ms > 0).then(|| now + Duration::from_millis(initial_delay_ms.min(rebalance_ms)));
        self.rebalance_deadline = Some(now + Duration::from_millis(rebalance_ms));
        info!(group = %self.id, from = self.state.kafka_name(), %reason, "preparing rebalance");
        self.state = GroupState::PreparingRebalance;
    }

    /// Completes the join phase when every member has rejoined (and the
    /// initial delay passed), or at the deadline (`force`), dropping members
    /// that did not rejoin.
    pub fn try_complete_join(&mut self, now: Instant, force: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        if !force && !(all_joined && delay_over) {
            return;
        }
        let missing: Vec<String> = self.members.values().filter(|m| m.join_waiter.is_none()).map(|m| m.id.clone()).collect();
        for id in missing {
            info!(group = %self.id, member = %id, "member did not rejoin in time; removing");
            self.remove_member(&id);
        }
        self.generation_id += 1;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            self.dirty = true;
            info!(group = %self.id, generation = self.generation_id, "group is empty");
            return;
        }
        let Some(protocol) = self.choose_protocol() else {
            for m in self.members.values_mut() {
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(JoinResponse::error(GroupError::InconsistentGroupProtocol, &m.id));
                }
            }
            self.state = GroupState::PreparingRebalance;
            return;
        };
        self.protocol_type = self.members.values().next().map(|m| m.protocol_type.clone());
        self.protocol_name = Some(protocol.clone());
        if self.leader_id.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader_id = self.members.values().min_by_key(|m| m.join_order).map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        info!(group = %self.id, generation = self.generation_id, members = self.members.len(), protocol = %protocol, "rebalance: join phase complete");
        let leader = self.leader_id.clone().unwrap_or_default();
        let all = self.join_members();
        let generation = self.generation_id;
        let protocol_type = self.protocol_type.clone();
        for m in self.members.values_mut() {
            m.last_heartbeat = now;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResponse {
                    error: None,
                    generation_id: generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader { all.clone() } else { Vec::new() },
                    skip_assignment: false,
                });
            }
        }
    }

    /// The protocol every member supports that most members list first
    /// among those (ties: the leader-to-be's order).
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().min_by_key(|m| m.join_order)?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(x, _)| x == *n)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates
            .iter()
            .map(|c| {
                let v = self
                    .members
                    .values()
                    .filter(|m| m.protocols.iter().map(|(n, _)| n).find(|n| candidates.contains(n)) == Some(*c))
                    .count();
                (v, *c)
            })
            .collect();
        // Stable: the first candidate wins ties.
        votes.reverse();
        votes.into_iter().max_by_key(|(v, _)| *v).map(|(_, c)| c.clone())
    }

    /// The answer for a member whose join changes nothing.
    pub fn current_join_response(&self, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }

    /// Every member with its metadata for the chosen protocol (the leader's view).
    pub fn join_members(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinMember { member_id: m.id.clone(), group_instance_id: m.instance_id.clone(), metadata: m.metadata_for(&protocol).unwrap_or_default() })
            .collect()
    }

    pub fn sync_ok(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse { error: None, protocol_type: self.protocol_type.clone(), protocol_name: self.protocol_name.clone(), assignment }
    }

    /// The leader's plan arrived: store it, go Stable, answer every waiter.
    pub fn complete_sync(&mut self, assignments: Vec<(String, Bytes)>, now: Instant) {
        let mut plan: HashMap<String, Bytes> = assignments.into_iter().collect();
        for m in self.members.values_mut() {
            m.assignment = plan.remove(&m.id).unwrap_or_default();
            m.last_heartbeat = now;
        }
        self.state = GroupState::Stable;
        self.dirty = true;
        info!(group = %self.id, generation = self.generation_id, "rebalance complete: group is stable");
        let protocol_type = self.protocol_type.clone();
        let protocol_name = self.protocol_name.clone();
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResponse {
                    error: None,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
    }
}

/// Topics of a consumer-protocol subscription (ConsumerProtocolSubscription:
/// version i16, then an array of topic names; same layout in v0–v3).
pub fn parse_subscription(bytes: &[u8]) -> Option<Vec<String>> {
    let mut pos = 2usize;
    let count = i32::from_be_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?);
    pos += 4;
    let mut out = Vec::new();
    for _ in 0..count.clamp(0, 10_000) {
        let len = i16::from_be_bytes(bytes.get(pos..pos + 2)?.try_into().ok()?);
        pos += 2;
        let len = usize::try_from(len).ok()?;
        out.push(String::from_utf8_lossy(bytes.get(pos..pos + len)?).into_owned());
        pos += len;
    }
    Some(out)
}
