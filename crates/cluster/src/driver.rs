//! The Raft thread: one thread that ticks the metadata group's member,
//! feeds it the messages peers send and the proposals and questions of this
//! broker, sends its outbox batched per peer, and publishes the applied
//! state and the group's status.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use raft::StateRole;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::handle::RaftStatus;
use crate::node::{MetadataNode, NodeOptions, Reply};
use crate::partition::{AppendError, AppendReply, Election, GroupSpec, GroupStatus, PartitionGroup, ReassignStep};
use crate::state::{Applied, ClusterState, Command};
use crate::transport::{Batch, Transport};
use crate::wal::Wal;
use crate::METADATA_GROUP;

/// How often (in ticks) leaders check whether to hand leadership back to
/// the preferred replica.
const PREFERRED_LEADER_CHECK_TICKS: u64 = 50;

/// How often (in ticks) leaders take the next step of a replica move.
const REASSIGN_CHECK_TICKS: u64 = 10;

/// How long a leader report may wait for the metadata group before it is
/// made again (a proposal lost with a dying metadata leader gets no answer).
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a refused or lost leader report waits before it is made again.
const REPORT_RETRY: Duration = Duration::from_millis(300);

/// A partition leader's report (term and ISR) proposed to the metadata group.
struct LeaderReport {
    group: u64,
    report: (u64, Vec<u64>),
    reply: oneshot::Receiver<Result<Applied, ClusterError>>,
    sent_at: Instant,
}

pub enum Input {
    Raft { group: u64, msg: Message },
    /// A peer connected and said where it listens (a broker joining, or
    /// one restarted at another address).
    PeerHello { node_id: u64, addr: String },
    Propose { command: Command, reply: Reply },
    /// Starts this broker's replica of a partition (nothing if it runs).
    OpenGroup(GroupSpec),
    /// Stops it and forgets its Raft state (the topic was deleted).
    CloseGroup { group: u64 },
    /// Stops it, forgets its Raft state and empties the partition's log
    /// (the partition's replicas moved off this broker).
    LeaveGroup { group: u64 },
    /// A producer's batch for a partition this broker may lead.
    Append { group: u64, batch: Vec<u8>, acks: i16, reply: AppendReply },
    /// DeleteRecords for a partition this broker may lead.
    DeleteRecords { group: u64, offset: i64, reply: AppendReply },
    /// ElectLeaders (preferred) for a partition this broker may lead.
    ElectPreferred { group: u64, reply: oneshot::Sender<Option<Election>> },
    /// What DescribeQuorum shows, as this broker knows it.
    Describe { reply: oneshot::Sender<QuorumInfo> },
    Stop,
}

/// One voter of the metadata group, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterInfo {
    pub id: u64,
    /// Entries the voter is known to hold (Kafka: its log end offset); -1 unknown.
    pub log_end: i64,
    /// Wall-clock ms of the last message from it; -1 unknown.
    pub last_contact_ms: i64,
    /// Wall-clock ms it was last known to hold everything the leader has; -1 unknown.
    pub caught_up_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumInfo {
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub is_leader: bool,
    pub voters: Vec<VoterInfo>,
    /// Brokers that joined as learners (Kafka's observers).
    pub observers: Vec<VoterInfo>,
}

pub struct Driver {
    config: ClusterConfig,
    node: MetadataNode<Wal>,
    transport: Transport,
    state_tx: watch::Sender<Arc<ClusterState>>,
    status_tx: watch::Sender<RaftStatus>,
    /// When each peer was last seen fully caught up.
    caught_up: HashMap<u64, Instant>,
    /// This broker's replicas of partitions, by group id.
    groups: HashMap<u64, PartitionGroup>,
    group_options: NodeOptions,
    statuses: Arc<parking_lot::RwLock<HashMap<u64, GroupStatus>>>,
    /// Leader reports proposed to the metadata group and not yet answered.
    reports: Vec<LeaderReport>,
    /// Groups whose last report failed, and when to make it again.
    report_retry_at: HashMap<u64, Instant>,
    /// Brokers outside the voters that said hello and are not members of
    /// the metadata group yet; the leader admits them (`admit_joiners`).
    joiners: HashMap<u64, String>,
    logger: slog::Logger,
}

impl Driver {
    pub fn new(
        config: ClusterConfig,
        node: MetadataNode<Wal>,
        transport: Transport,
        state_tx: watch::Sender<Arc<ClusterState>>,
        status_tx: watch::Sender<RaftStatus>,
        statuses: Arc<parking_lot::RwLock<HashMap<u64, GroupStatus>>>,
    ) -> Driver {
        let group_options = NodeOptions {
            node_id: config.node_id,
            voters: Vec::new(),
            election_ticks: config.election_ticks,
            heartbeat_ticks: config.heartbeat_ticks,
            max_pending_proposals: config.max_pending_proposals,
            incarnation: 0,
            fixed_election_timeout: None,
        };
        let logger = crate::slog_bridge::logger(config.node_id);
        Driver {
            config,
            node,
            transport,
            state_tx,
            status_tx,
            caught_up: HashMap::new(),
            groups: HashMap::new(),
            group_options,
            statuses,
            reports: Vec::new(),
            report_retry_at: HashMap::new(),
            joiners: HashMap::new(),
            logger,
        }
    }

    pub fn run(mut self, inputs: Receiver<Input>) {
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut next_tick = Instant::now() + tick;
        let mut ticks: u64 = 0;
        let retention_every = Duration::from_millis(self.config.log_retention_check_interval_ms.max(100));
        let mut next_retention_check = Instant::now() + retention_every;
        loop {
            match inputs.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Everything already queued goes into this round's Ready.
            while let Ok(input) = inputs.try_recv() {
                if matches!(input, Input::Stop) {
                    return self.stop();
                }
                self.handle(input);
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                for g in self.groups.values_mut() {
                    g.raw.tick();
                    g.track_followers(now);
                }
                ticks += 1;
                next_tick = (next_tick + tick).max(now);
                if ticks.is_multiple_of(10) {
                    self.node.sweep_pending();
                }
                if ticks.is_multiple_of(REASSIGN_CHECK_TICKS) {
                    self.drive_reassignments();
                    self.admit_joiners();
                }
                if now >= next_retention_check {
                    next_retention_check = now + retention_every;
                    self.compact_logs();
                }
                if ticks.is_multiple_of(PREFERRED_LEADER_CHECK_TICKS) {
                    for g in self.groups.values_mut() {
                        g.refresh_in_sync(now);
                        if self.config.auto_leader_rebalance_enable {
                            g.rebalance_leadership();
                        }
                    }
                }
            }
            let persisted = self.node.handle_ready();
            self.handle_group_readies();
            self.flush();
            if let Err(e) = persisted {
                error!(error = %e, "the metadata group cannot persist its log; this broker leaves the metadata group");
                break;
            }
            self.report_leaders();
            self.publish_group_statuses();
            if self.node.take_state_changed() {
                self.connect_registered_brokers();
                self.state_tx.send_replace(Arc::new(self.node.state().clone()));
            }
            self.publish_status();
        }
        self.stop();
    }

    /// Each group drops the head of its log that retention and
    /// DeleteRecords no longer keep.
    fn compact_logs(&mut self) {
        for (id, g) in self.groups.iter_mut() {
            if let Err(e) = g.compact_by_retention() {
                warn!(group = id, error = %e, "cannot drop the head of the partition's log");
            }
        }
    }

    fn stop(&mut self) {
        self.transport.shutdown();
        self.node.fail_pending(|| ClusterError::Stopped);
        for g in self.groups.values_mut() {
            g.fail_waiters(|| AppendError::Stopped);
            if let Err(e) = g.save_commit() {
                warn!(group = g.id, error = %e, "cannot save the commit index; the high watermark restarts lower");
            }
        }
        self.status_tx.send_modify(|s| {
            s.stopped = true;
            s.leader_id = 0;
        });
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Raft { group, msg } if group == METADATA_GROUP => {
                if let Err(e) = self.node.step(msg) {
                    warn!(error = %e, "raft message refused");
                }
            }
            Input::Raft { group, msg } => match self.groups.get_mut(&group) {
                Some(g) => {
                    if let Err(e) = g.raw.step(msg) {
                        tracing::debug!(group, error = %e, "raft message refused");
                    }
                }
                // Not opened yet (the topic is still being created here) or
                // closed: the sender retransmits.
                None => tracing::debug!(group, "message for a raft group this broker does not run"),
            },
            Input::PeerHello { node_id, addr } => self.peer_hello(node_id, addr),
            Input::Propose { command, reply } => self.node.propose(command, reply),
            Input::OpenGroup(spec) => self.open_group(spec),
            Input::CloseGroup { group } => {
                if let Some(mut g) = self.groups.remove(&group) {
                    g.fail_waiters(|| AppendError::UnknownGroup);
                    g.remove_state();
                    self.statuses.write().remove(&group);
                    info!(group, "partition replica closed");
                }
            }
            Input::LeaveGroup { group } => {
                if let Some(mut g) = self.groups.remove(&group) {
                    g.fail_waiters(|| AppendError::UnknownGroup);
                    g.remove_state();
                    self.statuses.write().remove(&group);
                    match g.clear_log() {
                        Ok(()) => info!(group, "partition replica moved off this broker; its log is emptied"),
                        Err(e) => error!(group, error = %e, "partition replica moved off this broker but its log cannot be emptied"),
                    }
                }
            }
            Input::Append { group, batch, acks, reply } => match self.groups.get_mut(&group) {
                Some(g) => g.append(batch, acks, reply),
                None => {
                    let _ = reply.send(Err(AppendError::UnknownGroup));
                }
            },
            Input::DeleteRecords { group, offset, reply } => match self.groups.get_mut(&group) {
                Some(g) => g.delete_records(offset, reply),
                None => {
                    let _ = reply.send(Err(AppendError::UnknownGroup));
                }
            },
            Input::ElectPreferred { group, reply } => {
                let _ = reply.send(self.groups.get_mut(&group).map(|g| g.elect_preferred()));
            }
            Input::Describe { reply } => {
                let _ = reply.send(self.describe());
            }
            Input::Stop => {}
        }
    }

    fn open_group(&mut self, spec: GroupSpec) {
        let group = spec.group;
        if self.groups.contains_key(&group) {
            return;
        }
        match PartitionGroup::open(spec, &self.group_options, &self.logger) {
            Ok(g) => {
                info!(group, "partition replica started");
                self.groups.insert(group, g);
            }
            Err(e) => error!(group, error = %e, "cannot start the partition replica"),
        }
    }

    /// Every partition group's Ready; a group whose log cannot be written
    /// stops (its peers carry on without this replica).
    fn handle_group_readies(&mut self) {
        let mut failed = Vec::new();
        for (id, g) in self.groups.iter_mut() {
            if let Err(e) = g.handle_ready() {
                error!(group = id, error = %e, "partition replica cannot persist its log; it leaves its group until restart");
                g.fail_waiters(|| AppendError::Stopped);
                failed.push(*id);
            }
        }
        for id in failed {
            self.groups.remove(&id);
            self.statuses.write().remove(&id);
        }
    }

    /// A voter's address is the configuration's; any other broker is dialed
    /// back where it says it listens, and is a joiner until it is a member.
    fn peer_hello(&mut self, node_id: u64, addr: String) {
        if self.config.voters.iter().any(|v| v.id == node_id) {
            return;
        }
        self.transport.add_peer(node_id, &addr);
        if !self.node.is_member(node_id) && (self.joiners.contains_key(&node_id) || self.joiners.len() < crate::transport::MAX_PEERS) {
            info!(node_id, %addr, "a broker asks to join the cluster");
            self.joiners.insert(node_id, addr);
        }
    }

    /// Leader: the next joiner becomes a learner of the metadata group, so
    /// it receives the whole metadata log and can register. One membership
    /// change at a time (raft-rs drops a second one while one is pending).
    fn admit_joiners(&mut self) {
        let node = &self.node;
        self.joiners.retain(|id, _| !node.is_member(*id));
        if !self.node.is_leader() {
            return;
        }
        if let Some(id) = self.joiners.keys().min().copied() {
            match self.node.propose_join(id) {
                Ok(()) => info!(node_id = id, "proposed: broker joins the metadata group as a learner"),
                Err(e) => warn!(node_id = id, error = %e, "cannot admit a joining broker yet"),
            }
        }
    }

    /// Every registered broker outside the voters is a peer: partition
    /// groups place replicas on it, and any broker may lead those.
    fn connect_registered_brokers(&mut self) {
        let state = self.node.state();
        for (id, b) in &state.brokers {
            if let Some(addr) = &b.cluster_addr {
                if !self.config.voters.iter().any(|v| v.id == *id) {
                    self.transport.add_peer(*id, addr);
                }
            }
        }
    }

    /// Moves under way on partitions this broker leads: the next step of
    /// each; when the voters are the target, the metadata group is told
    /// (again each check until it records it: the report is idempotent).
    fn drive_reassignments(&mut self) {
        let state = self.node.state();
        let mut done = Vec::new();
        // Moves are few: walk them, not every group this broker runs.
        let moves = state.topics.values().flat_map(|t| t.moving.iter().filter_map(|(p, m)| Some((*t.groups.get(*p as usize)?, m))));
        for (id, m) in moves {
            let Some(g) = self.groups.get_mut(&id) else { continue };
            if let Some(first) = m.target.first() {
                g.set_preferred(*first);
            }
            if g.reassign(&m.target) == ReassignStep::Done {
                done.push((id, m.target.clone()));
            }
        }
        for (group, replicas) in done {
            let (reply, _) = oneshot::channel();
            self.node.propose(Command::ReassignmentDone { group, replicas }, reply);
        }
    }

    /// Tells the metadata group which partitions this broker now leads, so
    /// every broker's Metadata answer names the leader and its epoch.
    fn report_leaders(&mut self) {
        let now = Instant::now();
        let mut still_waiting = Vec::new();
        for mut r in std::mem::take(&mut self.reports) {
            let outcome = match r.reply.try_recv() {
                // A proposal forwarded to a metadata leader that died is never
                // answered; give up on it so the report is made again.
                Err(oneshot::error::TryRecvError::Empty) if now.duration_since(r.sent_at) < REPORT_TIMEOUT => {
                    still_waiting.push(r);
                    continue;
                }
                Err(_) => None,
                Ok(result) => Some(result),
            };
            if let Some(g) = self.groups.get_mut(&r.group) {
                g.report_in_flight = false;
                if matches!(outcome, Some(Ok(_))) {
                    g.reported = r.report;
                } else {
                    // Refused at once while no metadata leader is known: try
                    // again later, not every round.
                    self.report_retry_at.insert(r.group, now + REPORT_RETRY);
                }
            }
        }
        self.reports = still_waiting;
        self.report_retry_at.retain(|_, at| now < *at);
        let me = self.config.node_id;
        for (id, g) in self.groups.iter_mut() {
            let status = g.status();
            if !status.is_leader || g.report_in_flight || self.report_retry_at.get(id).is_some_and(|at| now < *at) {
                continue;
            }
            if g.in_sync.is_empty() {
                g.refresh_in_sync(now);
            }
            let report = (status.term, g.in_sync.clone());
            if g.reported == report {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let command = Command::PartitionLeader { group: *id, leader: me, epoch: status.term, in_sync: report.1.clone() };
            self.node.propose(command, reply);
            g.report_in_flight = true;
            self.reports.push(LeaderReport { group: *id, report, reply: rx, sent_at: now });
        }
    }

    fn publish_group_statuses(&mut self) {
        let changed: Vec<(u64, GroupStatus)> = {
            let current = self.statuses.read();
            self.groups.iter().map(|(id, g)| (*id, g.status())).filter(|(id, s)| current.get(id) != Some(s)).collect()
        };
        if !changed.is_empty() {
            let mut statuses = self.statuses.write();
            for (id, s) in changed {
                if statuses.get(&id).map(|old| old.leader_id) != Some(s.leader_id) && s.is_leader {
                    info!(group = id, term = s.term, "this broker now leads the partition");
                }
                statuses.insert(id, s);
            }
        }
    }

    /// Sends every group's outbox, one batch per peer.
    fn flush(&mut self) {
        let mut by_peer: HashMap<u64, Batch> = HashMap::new();
        for m in self.node.take_outbox() {
            by_peer.entry(m.to).or_default().push((METADATA_GROUP, m));
        }
        for (id, g) in self.groups.iter_mut() {
            for m in g.take_outbox() {
                by_peer.entry(m.to).or_default().push((*id, m));
            }
        }
        for (to, batch) in by_peer {
            let groups: Vec<u64> = batch.iter().map(|(g, _)| *g).collect();
            if !self.transport.send(to, batch) {
                for group in groups {
                    if group == METADATA_GROUP {
                        self.node.report_unreachable(to);
                    } else if let Some(g) = self.groups.get_mut(&group) {
                        g.raw.report_unreachable(to);
                    }
                }
            }
        }
    }

    fn describe(&mut self) -> QuorumInfo {
        let now = Instant::now();
        let wall_ms = |at: Option<&Instant>| match at {
            Some(t) => wall_clock_ms() - now.duration_since(*t).as_millis() as i64,
            None => -1,
        };
        let raft = &self.node.raw.raft;
        let is_leader = raft.state == StateRole::Leader;
        let last_index = raft.raft_log.last_index();
        let me = self.config.node_id;
        let voters = self
            .config
            .voter_ids()
            .into_iter()
            .map(|id| {
                if id == me {
                    return VoterInfo { id, log_end: last_index as i64, last_contact_ms: wall_clock_ms(), caught_up_ms: wall_clock_ms() };
                }
                let matched = if is_leader { raft.prs().get(id).map(|p| p.matched as i64).unwrap_or(-1) } else { -1 };
                if matched >= 0 && matched as u64 >= last_index {
                    self.caught_up.insert(id, now);
                }
                let last_heard = self.node.last_heard.get(&id);
                VoterInfo { id, log_end: matched, last_contact_ms: wall_ms(last_heard), caught_up_ms: wall_ms(self.caught_up.get(&id)) }
            })
            .collect();
        let observers = self
            .node
            .state()
            .observers
            .iter()
            .map(|id| {
                let matched = if is_leader { raft.prs().get(*id).map(|p| p.matched as i64).unwrap_or(-1) } else { -1 };
                VoterInfo { id: *id, log_end: matched, last_contact_ms: wall_ms(self.node.last_heard.get(id)), caught_up_ms: -1 }
            })
            .collect();
        QuorumInfo { leader_id: raft.leader_id, term: raft.term, commit_index: raft.raft_log.committed, is_leader, voters, observers }
    }

    fn publish_status(&mut self) {
        let status = RaftStatus {
            node_id: self.config.node_id,
            leader_id: self.node.leader_id(),
            term: self.node.term(),
            is_leader: self.node.is_leader(),
            commit_index: self.node.commit_index(),
            applied_index: self.node.state().applied_index,
            stopped: false,
        };
        let changed = *self.status_tx.borrow() != status;
        if changed {
            let before = self.status_tx.borrow().leader_id;
            if before != status.leader_id {
                info!(leader = status.leader_id, term = status.term, "metadata leader changed");
            }
            self.status_tx.send_replace(status);
        }
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
