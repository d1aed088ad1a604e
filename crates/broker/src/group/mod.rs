//! The group coordinator: Kafka's classic rebalance protocol, kept in
//! memory, with committed offsets made durable by [`offsets::OffsetStore`].
//!
//! The broker relays the client-side assignor's plan: the leader gets every
//! member's subscription in its JoinGroup answer and sends the assignment
//! in SyncGroup. Timeouts (session, rebalance, initial delay) are driven by
//! [`GroupCoordinator::tick`], called every 100 ms.

mod membership;
pub mod offsets;
mod state;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_log::storage::Storage;
use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::info;

pub use offsets::{CommittedOffset, OffsetStore, TopicPartitionKey};
pub use state::GroupState;
use membership::MembershipStore;
use state::{Group, Member};

use crate::error::EngineError;

/// Coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: wait for more members when an empty group starts.
    pub initial_rebalance_delay_ms: u64,
    /// `group.max.size`
    pub max_size: usize,
    /// Most groups the broker keeps.
    pub max_groups: usize,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in ms: offsets of empty groups expire after this.
    pub offsets_retention_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 1_000,
            max_groups: 100_000,
            offset_metadata_max_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Refusals of the group protocol; each is one Kafka error code.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GroupError {
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("member id required: rejoin with the id given")]
    MemberIdRequired,
    #[error("session timeout out of bounds")]
    InvalidSessionTimeout,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("group is full (group.max.size)")]
    GroupMaxSizeReached,
    #[error("static member fenced by a newer instance")]
    FencedInstanceId,
    #[error("group not found")]
    GroupIdNotFound,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("limit reached: {0}")]
    LimitReached(String),
}

impl From<EngineError> for GroupError {
    fn from(e: EngineError) -> Self {
        GroupError::Storage(e.to_string())
    }
}

pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub members: Vec<JoinMember>,
    /// The leader must not compute a new plan (static leader rejoin).
    pub skip_assignment: bool,
}

impl JoinResponse {
    fn error(e: GroupError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(e),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(e: GroupError) -> SyncResponse {
        SyncResponse { error: Some(e), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub generation_id: i32,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<BTreeMap<String, Group>>,
    pub offsets: OffsetStore,
    membership: MembershipStore,
    next_member: AtomicU64,
}

pub(super) fn join_order() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl GroupCoordinator {
    pub fn open(data_dir: &Path, storage: Arc<dyn Storage>, config: GroupConfig) -> Result<GroupCoordinator, EngineError> {
        let offsets = OffsetStore::open(data_dir, storage.clone())?;
        let (membership, restored) = MembershipStore::open(data_dir, storage)?;
        let mut groups = BTreeMap::new();
        for g in offsets.groups() {
            groups.insert(g.clone(), Group::new(g));
        }
        for g in restored {
            groups.insert(g.id.clone(), g);
        }
        Ok(GroupCoordinator { config, groups: Mutex::new(groups), offsets, membership, next_member: AtomicU64::new(0) })
    }

    /// Makes a settled group's state durable (under the groups lock, so the
    /// log's last record for a group is its latest state). A failure is
    /// logged and retried at the next tick; the group works on meanwhile.
    fn save_if_dirty(&self, group: &mut Group) {
        if !group.dirty {
            return;
        }
        match self.membership.save(group) {
            Ok(()) => group.dirty = false,
            Err(e) => tracing::warn!(group = %group.id, error = %e, "could not save group membership; retrying"),
        }
    }

    /// A member restored from the membership log was heard from: its
    /// session is live again, also for the next restart.
    fn heard(&self, group_id: &str, member: &mut Member) {
        if member.silent_since_ms.take().is_some() {
            if let Err(e) = self.membership.mark_heard(group_id, &member.id) {
                tracing::warn!(group = %group_id, member = %member.id, error = %e, "could not record that a restored member is back");
            }
        }
    }

    fn save_group(&self, group_id: &str) {
        let mut groups = self.groups.lock();
        if let Some(group) = groups.get_mut(group_id) {
            self.save_if_dirty(group);
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}", if client_id.is_empty() { "member" } else { client_id }, uuid::Uuid::new_v4().simple()).replace(' ', "_")
            + &format!("-{n}")
    }

    /// Registers a join; the answer arrives on the returned channel when the
    /// rebalance completes (or at once for errors and unchanged members).
    pub fn join(&self, req: JoinRequest) -> oneshot::Receiver<JoinResponse> {
        let group_id = req.group_id.clone();
        let rx = self.join_unsaved(req);
        self.save_group(&group_id);
        rx
    }

    fn join_unsaved(&self, req: JoinRequest) -> oneshot::Receiver<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        let reply_now = |tx: oneshot::Sender<JoinResponse>, r: JoinResponse| {
            let _ = tx.send(r);
        };
        if req.group_id.is_empty() {
            reply_now(tx, JoinResponse::error(GroupError::InvalidGroupId, &req.member_id));
            return rx;
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms || req.session_timeout_ms > self.config.max_session_timeout_ms {
            reply_now(tx, JoinResponse::error(GroupError::InvalidSessionTimeout, &req.member_id));
            return rx;
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            reply_now(tx, JoinResponse::error(GroupError::InconsistentGroupProtocol, &req.member_id));
            return rx;
        }
        let mut groups = self.groups.lock();
        if !groups.contains_key(&req.group_id) && groups.len() >= self.config.max_groups {
            reply_now(tx, JoinResponse::error(GroupError::LimitReached("too many groups".into()), &req.member_id));
            return rx;
        }
        let group = groups.entry(req.group_id.clone()).or_insert_with(|| Group::new(req.group_id.clone()));
        if group.state == GroupState::Dead {
            reply_now(tx, JoinResponse::error(GroupError::CoordinatorNotAvailable, &req.member_id));
            return rx;
        }
        if !group.members.is_empty() && !group.supports(&req.protocol_type, &req.protocols) {
            reply_now(tx, JoinResponse::error(GroupError::InconsistentGroupProtocol, &req.member_id));
            return rx;
        }
        let now = Instant::now();

        // Work out which member this is.
        let member_id = if req.member_id.is_empty() {
            match req.group_instance_id.as_ref().and_then(|i| group.static_members.get(i).cloned()) {
                Some(old_id) => {
                    // A static member restarting: it takes over its old
                    // identity under a new member id; the old one is fenced.
                    let new_id = self.new_member_id(&req.client_id);
                    let mut member = group.members.remove(&old_id).expect("static mapping points at a member");
                    if let Some(w) = member.join_waiter.take() {
                        let _ = w.send(JoinResponse::error(GroupError::FencedInstanceId, &old_id));
                    }
                    if let Some(w) = member.sync_waiter.take() {
                        let _ = w.send(SyncResponse::error(GroupError::FencedInstanceId));
                    }
                    let unchanged = member.protocols == req.protocols && member.protocol_type == req.protocol_type;
                    member.silent_since_ms = None;
                    member.id = new_id.clone();
                    member.update(&req, now);
                    let was_leader = group.leader_id.as_deref() == Some(old_id.as_str());
                    if was_leader {
                        group.leader_id = Some(new_id.clone());
                    }
                    group.static_members.insert(req.group_instance_id.clone().expect("static"), new_id.clone());
                    group.members.insert(new_id.clone(), member);
                    if group.state == GroupState::Stable && unchanged {
                        group.dirty = true;
                        // KIP-345: the group stays Stable and keeps its plan. A
                        // leader gets the member list with skip_assignment, and
                        // its SyncGroup returns the stored assignment.
                        info!(group = %group.id, instance = ?req.group_instance_id, "static member rejoined; assignment kept without a rebalance");
                        let mut answer = group.current_join_response(&new_id);
                        if was_leader {
                            answer.members = group.join_members();
                            answer.skip_assignment = true;
                        }
                        reply_now(tx, answer);
                        return rx;
                    }
                    new_id
                }
                None => {
                    let new_id = self.new_member_id(&req.client_id);
                    if req.require_known_member_id && req.group_instance_id.is_none() {
                        group.pending_members.insert(new_id.clone(), now + Duration::from_millis(req.session_timeout_ms as u64));
                        reply_now(tx, JoinResponse::error(GroupError::MemberIdRequired, &new_id));
                        return rx;
                    }
                    if group.members.len() >= self.config.max_size {
                        reply_now(tx, JoinResponse::error(GroupError::GroupMaxSizeReached, &new_id));
                        return rx;
                    }
                    group.add_member(Member::new(new_id.clone(), &req, now, join_order()));
                    new_id
                }
            }
        } else if group.pending_members.remove(&req.member_id).is_some() {
            if group.members.len() >= self.config.max_size {
                reply_now(tx, JoinResponse::error(GroupError::GroupMaxSizeReached, &req.member_id));
                return rx;
            }
            group.add_member(Member::new(req.member_id.clone(), &req, now, join_order()));
            req.member_id.clone()
        } else {
            let Some(member) = group.members.get_mut(&req.member_id) else {
                reply_now(tx, JoinResponse::error(GroupError::UnknownMemberId, &req.member_id));
                return rx;
            };
            if let Some(instance) = &req.group_instance_id {
                if group.static_members.get(instance) != Some(&req.member_id) {
                    reply_now(tx, JoinResponse::error(GroupError::FencedInstanceId, &req.member_id));
                    return rx;
                }
            }
            self.heard(&group.id, member);
            let unchanged = member.protocols == req.protocols;
            member.update(&req, now);
            let is_leader = group.leader_id.as_deref() == Some(req.member_id.as_str());
            if matches!(group.state, GroupState::Stable | GroupState::CompletingRebalance) && unchanged && !is_leader {
                // A follower re-sending an unchanged join: nothing to rebalance.
                reply_now(tx, group.current_join_response(&req.member_id));
                return rx;
            }
            req.member_id.clone()
        };

        if let Some(member) = group.members.get_mut(&member_id) {
            if let Some(old) = member.join_waiter.replace(tx) {
                let _ = old.send(JoinResponse::error(GroupError::RebalanceInProgress, &member_id));
            }
        }
        group.prepare_rebalance(now, self.config.initial_rebalance_delay_ms, "member joined");
        group.try_complete_join(now, false);
        rx
    }

    pub fn sync(&self, req: SyncRequest) -> oneshot::Receiver<SyncResponse> {
        let group_id = req.group_id.clone();
        let rx = self.sync_unsaved(req);
        self.save_group(&group_id);
        rx
    }

    fn sync_unsaved(&self, req: SyncRequest) -> oneshot::Receiver<SyncResponse> {
        let (tx, rx) = oneshot::channel();
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(&req.group_id) else {
            let _ = tx.send(SyncResponse::error(GroupError::UnknownMemberId));
            return rx;
        };
        if let Err(e) = group.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            let _ = tx.send(SyncResponse::error(e));
            return rx;
        }
        if let Some(m) = group.members.get_mut(&req.member_id) {
            self.heard(&group.id, m);
        }
        if req.generation_id != group.generation_id {
            let _ = tx.send(SyncResponse::error(GroupError::IllegalGeneration));
            return rx;
        }
        let type_mismatch = req.protocol_type.as_ref().is_some_and(|t| Some(t) != group.protocol_type.as_ref());
        let name_mismatch = req.protocol_name.as_ref().is_some_and(|n| Some(n) != group.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            let _ = tx.send(SyncResponse::error(GroupError::InconsistentGroupProtocol));
            return rx;
        }
        match group.state {
            GroupState::PreparingRebalance => {
                let _ = tx.send(SyncResponse::error(GroupError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let assignment = group.members.get(&req.member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                let _ = tx.send(group.sync_ok(assignment));
            }
            GroupState::CompletingRebalance => {
                let now = Instant::now();
                if let Some(m) = group.members.get_mut(&req.member_id) {
                    m.last_heartbeat = now;
                    if let Some(old) = m.sync_waiter.replace(tx) {
                        let _ = old.send(SyncResponse::error(GroupError::RebalanceInProgress));
                    }
                }
                if group.leader_id.as_deref() == Some(req.member_id.as_str()) {
                    group.complete_sync(req.assignments, now);
                }
            }
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(SyncResponse::error(GroupError::UnknownMemberId));
            }
        }
        rx
    }

    pub fn heartbeat(&self, group_id: &str, generation_id: i32, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        group.check_member(member_id, instance_id)?;
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
            self.heard(&group.id, m);
        }
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        match group.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable | GroupState::CompletingRebalance => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    /// Removes members; each entry is (member id, group instance id).
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        let now = Instant::now();
        let mut results = Vec::new();
        for (member_id, instance) in members {
            let target = match instance {
                Some(i) => match group.static_members.get(i) {
                    Some(mapped) if member_id.is_empty() || mapped == member_id => Ok(mapped.clone()),
                    Some(_) => Err(GroupError::FencedInstanceId),
                    None => Err(GroupError::UnknownMemberId),
                },
                None if group.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(GroupError::UnknownMemberId),
            };
            match target {
                Ok(id) => {
                    group.remove_member(&id);
                    group.prepare_rebalance(now, 0, "member left");
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        group.try_complete_join(now, false);
        self.save_if_dirty(group);
        Ok(results)
    }

    /// Session, rebalance and pending-member timeouts; offsets retention.
    pub fn tick(&self) -> Vec<(String, Vec<TopicPartitionKey>)> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for group in groups.values_mut() {
            group.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| m.join_waiter.is_none() && now.duration_since(m.last_heartbeat) > Duration::from_millis(m.session_timeout_ms as u64))
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                info!(group = %group.id, member = %id, "session timed out; removing member");
                group.remove_member(&id);
                group.prepare_rebalance(now, 0, "session timeout");
            }
            if group.state == GroupState::PreparingRebalance {
                let force = group.rebalance_deadline.is_some_and(|d| now >= d);
                group.try_complete_join(now, force);
            }
            self.save_if_dirty(group);
        }
        // Offsets of empty groups past retention.
        let retention = self.config.offsets_retention_ms;
        let now_ms = crate::now_ms();
        let mut expired = Vec::new();
        for (id, group) in groups.iter() {
            if group.state != GroupState::Empty {
                continue;
            }
            let keys: Vec<TopicPartitionKey> = self
                .offsets
                .get(id)
                .into_iter()
                .filter(|(_, v)| now_ms - v.commit_ms > retention)
                .map(|(k, _)| k)
                .collect();
            if !keys.is_empty() {
                expired.push((id.clone(), keys));
            }
        }
        expired
    }

    /// Forgets empty groups with no offsets left.
    pub fn drop_empty_groups(&self) {
        let mut groups = self.groups.lock();
        let with_offsets: std::collections::HashSet<String> = self.offsets.groups().into_iter().collect();
        groups.retain(|id, g| {
            let keep = g.state != GroupState::Empty || with_offsets.contains(id);
            if !keep {
                if let Err(e) = self.membership.delete(id) {
                    tracing::warn!(group = %id, error = %e, "could not delete group membership");
                }
            }
            keep
        });
    }

    /// Checks that an offset commit may proceed. `generation_id == -1` with an
    /// empty member id is a standalone (simple) consumer's commit.
    pub fn check_commit(&self, group_id: &str, generation_id: i32, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let mut groups = self.groups.lock();
        if generation_id < 0 && member_id.is_empty() {
            if !groups.contains_key(group_id) && groups.len() >= self.config.max_groups {
                return Err(GroupError::LimitReached("too many groups".into()));
            }
            let group = groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id.to_string()));
            return if group.members.is_empty() { Ok(()) } else { Err(GroupError::UnknownMemberId) };
        }
        let group = groups.get_mut(group_id).ok_or(GroupError::IllegalGeneration)?;
        group.check_member(member_id, instance_id)?;
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
            self.heard(&group.id, m);
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .lock()
            .values()
            .map(|g| (g.id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state))
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        let g = groups.get(group_id)?;
        Some(GroupDescription {
            group_id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: g.protocol_name.clone().unwrap_or_default(),
            generation_id: g.generation_id,
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: g.protocol_name.as_ref().and_then(|p| m.metadata_for(p)).unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Topics the group's members subscribe to (consumer protocol only).
    pub fn subscribed_topics(&self, group_id: &str) -> Option<Vec<String>> {
        let groups = self.groups.lock();
        let g = groups.get(group_id)?;
        if g.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let proto = g.protocol_name.as_ref()?;
        let mut topics = Vec::new();
        for m in g.members.values() {
            topics.extend(state::parse_subscription(&m.metadata_for(proto)?)?);
        }
        Some(topics)
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), GroupError> {
        {
            let groups = self.groups.lock();
            match groups.get(group_id) {
                None => return Err(GroupError::GroupIdNotFound),
                Some(g) if g.state != GroupState::Empty => return Err(GroupError::NonEmptyGroup),
                Some(_) => {}
            }
        }
        self.offsets.delete_group(group_id).await?;
        self.membership.delete(group_id)?;
        self.groups.lock().remove(group_id);
        Ok(())
    }

    pub fn group_exists(&self, group_id: &str) -> bool {
        self.groups.lock().contains_key(group_id)
    }
}
