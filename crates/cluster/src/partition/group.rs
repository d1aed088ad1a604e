//! One partition's Raft group on this broker: proposals (the leader gives
//! each batch its offsets before proposing it), persistence of Ready
//! entries into the partition's log, and the answers acks=1 and acks=all
//! wait for.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_log::batch::BatchHeader;
use protobuf::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{GetEntriesContext, RawNode, SnapshotStatus, StateRole};

use super::anchor::{Anchor, AnchorFile, AnchorKind};
use super::conf_file::{ConfFile, ConfHistory};
use super::hard_state::HardStateFile;
use super::index::EntryIndex;
use super::marks::{Mark, MarkFile, MarkKind};
use super::storage::{snapshot_offset, ReplicaStorage, LOG_START_CONTEXT};
use super::{AppendError, AppendReply, GroupStatus, Placed, Prepared, ReplicaError, ReplicaLog};
use crate::error::ClusterError;

/// A follower not caught up for this long leaves the in-sync replicas
/// (Kafka's `replica.lag.time.max.ms` is 30 s; Raft notices sooner).
const REPLICA_LAG_MS: u64 = 10_000;

/// Appends waiting for one partition, at most.
pub const MAX_WAITING_APPENDS: usize = 10_000;

pub struct GroupSpec {
    pub group: u64,
    /// The group's first voters (the partition's replicas when it was
    /// created): the membership its log starts from. Later changes are
    /// entries of that log.
    pub voters: Vec<u64>,
    /// The replica leadership goes back to (the first of the current
    /// replicas; 0: the first voter).
    pub preferred: u64,
    /// Where the group's hard state is kept; its marks file sits beside it.
    pub state_path: PathBuf,
    pub log: Arc<dyn ReplicaLog>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    /// acks=1: the leader's own write of entry `index`.
    Written(u64),
    /// acks=all: entry `index` committed (on a majority, fsynced) and applied.
    Committed(u64),
    /// A retried batch already in the log: the high watermark past it.
    HighWatermark(i64),
}

struct Waiter {
    placed: Placed,
    /// The leader's term when it took the append; if the term changes, the
    /// entry at that index may be another one.
    term: u64,
    wait: WaitFor,
    reply: AppendReply,
}

/// Whether an entry takes no offset (see `marks.rs`).
fn is_mark(e: &Entry) -> bool {
    e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() || e.context.as_ref() == LOG_START_CONTEXT
}

fn mark_kind(e: &Entry) -> MarkKind {
    if e.get_entry_type() == EntryType::EntryConfChangeV2 {
        return MarkKind::ConfChange(Arc::from(e.data.as_ref()));
    }
    match e.data.as_ref().try_into() {
        Ok(bytes) if e.context.as_ref() == LOG_START_CONTEXT => MarkKind::LogStart(i64::from_be_bytes(bytes)),
        _ => MarkKind::LeaderChange,
    }
}

/// Where a move of the partition's replicas stands (leader only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReassignStep {
    /// This replica does not lead; the leader drives the move.
    NotLeader,
    /// A step is under way (new replicas catching up as learners, a
    /// membership change committing, leadership moving to a target replica).
    InProgress,
    /// The voters are exactly the target replicas.
    Done,
}

/// What a preferred-leader election did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Leadership is moving to the preferred replica.
    Started,
    /// The preferred replica already leads.
    NotNeeded,
    /// The preferred replica is down or behind.
    PreferredUnavailable,
    /// This broker does not lead the partition (0: no leader known).
    NotLeader { leader_id: u64 },
}

pub struct PartitionGroup {
    pub id: u64,
    /// Public so a simulation can tick the group and step its messages
    /// itself, as the driver does (`tests/sim_partition.rs`).
    pub raw: RawNode<ReplicaStorage>,
    hard_state_file: HardStateFile,
    mark_file: MarkFile,
    conf_file: ConfFile,
    anchor_file: AnchorFile,
    /// The replicas after each membership change applied above the anchor.
    conf_history: ConfHistory,
    /// The replicas the log starts from (the placement at creation).
    initial_conf: ConfState,
    /// The entry of the last membership change applied (the anchor's when
    /// it is newer; 0: none yet).
    conf_index: u64,
    /// The last entry applied (its offsets are below the high watermark).
    applied_index: u64,
    /// The log start the last applied DeleteRecords set.
    log_start: i64,
    waiters: Vec<Waiter>,
    /// Index and next offset after this round's last proposal.
    proposed_tail: Option<(u64, i64)>,
    /// Index and term of this leader's last batch proposed and not yet
    /// written: the partition counted it at `prepare`.
    unwritten_proposal: Option<(u64, u64)>,
    outbox: Vec<Message>,
    high_watermark: i64,
    /// The first replica of the placement: where leadership goes back to
    /// when it is caught up, so leaders stay spread over the brokers.
    preferred: u64,
    /// The in-sync replicas as of the last check (leader only).
    pub in_sync: Vec<u64>,
    /// Leader: when each replica was last active and caught up.
    caught_up_at: std::collections::HashMap<u64, std::time::Instant>,
    /// The term and in-sync replicas this broker last told the metadata
    /// group it leads with.
    pub reported: (u64, Vec<u64>),
    pub report_in_flight: bool,
}

fn replica_error(e: ReplicaError) -> ClusterError {
    ClusterError::Storage(e.to_string())
}

/// Offsets an entry takes: its batch's records, none for a mark.
fn entry_offsets(e: &Entry) -> i64 {
    if is_mark(e) {
        return 0;
    }
    BatchHeader::parse(&e.data).map(|h| h.last_offset_delta as i64 + 1).unwrap_or(1)
}

/// The entry index from the partition's batches and the marks between
/// them, from the anchor on. A mark past the end (written, but the batches
/// before it were lost in a crash) is dropped; the file is rewritten
/// without it.
fn rebuild_index(group: u64, log: &dyn ReplicaLog, mark_file: &MarkFile, anchor: Option<&Anchor>) -> Result<EntryIndex, ClusterError> {
    let mut index = anchor.map_or_else(EntryIndex::default, |a| EntryIndex::starting_after(a.index, a.term, a.offset));
    let (first, start_offset) = (index.first_index(), index.end_offset(index.first_index() - 1));
    let loaded = mark_file.load().map_err(ClusterError::Storage)?;
    let stale_marks = loaded.iter().any(|m| m.index < first);
    let mut marks = loaded.into_iter().filter(|m| m.index >= first).peekable();
    let mut bad = None;
    log.batches(&mut |b| {
        if b.last_offset < start_offset {
            return; // below the anchor: its segment is about to go
        }
        while let Some(m) = marks.next_if(|m| m.index == index.last_index() + 1) {
            index.push_mark(m.term, m.kind.clone());
        }
        let continues = b.base_offset == index.end_offset(index.last_index());
        if bad.is_none() && (b.leader_epoch < 1 || !continues || marks.peek().is_some_and(|m| m.index <= index.last_index())) {
            bad = Some(b.base_offset);
        }
        if bad.is_none() {
            index.push(b.leader_epoch as u64, b.last_offset + 1);
        }
    })
    .map_err(replica_error)?;
    if let Some(offset) = bad {
        return Err(ClusterError::Storage(format!("group {group}: the batch at offset {offset} does not fit the group's Raft log")));
    }
    while let Some(m) = marks.next_if(|m| m.index == index.last_index() + 1) {
        index.push_mark(m.term, m.kind.clone());
    }
    if marks.peek().is_some() {
        tracing::warn!(group, "dropping marks written after the last batch that survived a crash");
    }
    if marks.peek().is_some() || stale_marks {
        mark_file.rewrite(index.marks()).map_err(ClusterError::Storage)?;
    }
    Ok(index)
}

/// Brings the log in line with its anchor after a crash: a head this
/// replica dropped itself goes again; a leader's snapshot whose install
/// did not finish is installed again.
fn settle_anchor(log: &dyn ReplicaLog, anchor: &Anchor) -> Result<(), ClusterError> {
    let start = log.start_offset().map_err(replica_error)?;
    if start >= anchor.offset {
        return Ok(());
    }
    tracing::info!(offset = anchor.offset, start, kind = ?anchor.kind, "finishing a move of the log start a crash interrupted");
    match anchor.kind {
        AnchorKind::Compacted => log.compact(anchor.offset),
        AnchorKind::Installed => log.reset(anchor.offset),
    }
    .map_err(replica_error)
}

/// A new partition's first leader is its preferred replica, as in Kafka:
/// it campaigns at the shortest election timeout, the others at the
/// longest, so leaders start spread over the brokers.
fn favour_preferred(raw: &mut RawNode<ReplicaStorage>, preferred: u64, election_ticks: usize) {
    let timeout = if raw.raft.id == preferred { election_ticks } else { 2 * election_ticks - 1 };
    raw.raft.set_randomized_election_timeout(timeout);
}

impl PartitionGroup {
    pub fn open(spec: GroupSpec, options: &crate::node::NodeOptions, logger: &slog::Logger) -> Result<PartitionGroup, ClusterError> {
        let hard_state_file = HardStateFile::new(spec.state_path.clone());
        let mut hard_state = hard_state_file.load().map_err(ClusterError::Storage)?;
        let mark_file = MarkFile::new(spec.state_path.with_extension("marks"));
        let conf_file = ConfFile::new(spec.state_path.with_extension("conf"));
        let anchor_file = AnchorFile::new(spec.state_path.with_extension("snap"));
        let anchor = anchor_file.load().map_err(ClusterError::Storage)?;
        if let Some(a) = &anchor {
            settle_anchor(spec.log.as_ref(), a)?;
        }
        let index = rebuild_index(spec.group, spec.log.as_ref(), &mark_file, anchor.as_ref())?;
        hard_state.commit = hard_state.commit.clamp(index.first_index() - 1, index.last_index());
        let initial_conf = ConfState::from((spec.voters.clone(), vec![]));
        let mut conf_history = conf_file.load().map_err(ClusterError::Storage)?;
        conf_history.retain(|(i, _)| anchor.as_ref().is_none_or(|a| *i > a.index));
        let (conf_index, conf_state) = match (conf_history.last(), &anchor) {
            (Some((i, conf)), _) => (*i, conf.clone()),
            (None, Some(a)) => (a.index, a.conf.clone()),
            (None, None) => (0, initial_conf.clone()),
        };
        let high_watermark = index.end_offset(hard_state.commit);
        // Raft hands back the committed entries from the first membership
        // change not in the saved one, so it is applied again.
        let next_change = index.marks().iter().find(|m| m.index > conf_index && matches!(m.kind, MarkKind::ConfChange(_))).map(|m| m.index);
        let applied = next_change.map_or(hard_state.commit, |i| hard_state.commit.min(i - 1));
        spec.log.commit(high_watermark);
        let log_start = index
            .marks()
            .iter()
            .filter(|m| m.index <= hard_state.commit)
            .filter_map(|m| match m.kind {
                MarkKind::LogStart(offset) => Some(offset),
                MarkKind::LeaderChange | MarkKind::ConfChange(_) => None,
            })
            .chain(anchor.as_ref().map(|a| a.offset))
            .max()
            .unwrap_or(0);
        spec.log.set_log_start(log_start);
        let storage = ReplicaStorage { index, log: spec.log.clone(), hard_state, conf_state, anchor };
        let config = options.raft_config(applied);
        let logger = logger.new(slog::o!("group" => spec.group));
        let mut raw = RawNode::new(&config, storage, &logger).map_err(|e| ClusterError::Config(e.to_string()))?;
        let preferred = if spec.preferred != 0 { spec.preferred } else { spec.voters.first().copied().unwrap_or(0) };
        if raw.raft.term == 0 && options.fixed_election_timeout.is_none() {
            favour_preferred(&mut raw, preferred, config.election_tick);
        }
        Ok(PartitionGroup {
            id: spec.group,
            raw,
            hard_state_file,
            mark_file,
            conf_file,
            anchor_file,
            conf_history,
            initial_conf,
            conf_index,
            applied_index: applied,
            preferred,
            log_start,
            waiters: Vec::new(),
            proposed_tail: None,
            unwritten_proposal: None,
            outbox: Vec::new(),
            high_watermark,
            in_sync: Vec::new(),
            caught_up_at: std::collections::HashMap::new(),
            reported: (0, Vec::new()),
            report_in_flight: false,
        })
    }

    pub fn status(&self) -> GroupStatus {
        let raft = &self.raw.raft;
        let is_leader = raft.state == StateRole::Leader;
        let settled = is_leader && raft.raft_log.term(raft.raft_log.applied).is_ok_and(|t| t == raft.term);
        GroupStatus { leader_id: raft.leader_id, term: raft.term, is_leader, high_watermark: self.high_watermark, settled }
    }

    /// The messages to send. A snapshot counts as delivered once handed
    /// over: if it is lost, the next heartbeat's answer finds the follower
    /// still behind and raft-rs sends it again, where waiting for a report
    /// that never comes would leave the follower stuck.
    pub fn take_outbox(&mut self) -> Vec<Message> {
        let out = std::mem::take(&mut self.outbox);
        for m in out.iter().filter(|m| m.get_msg_type() == MessageType::MsgSnapshot) {
            self.raw.report_snapshot(m.to, SnapshotStatus::Finish);
        }
        out
    }

    fn not_leader(&self) -> AppendError {
        AppendError::NotLeader { leader_id: self.raw.raft.leader_id, term: self.raw.raft.term }
    }

    /// Index and next offset of the last entry in the Raft log, written or
    /// not: where the next proposal lands.
    fn tail(&self) -> (u64, i64) {
        let raft_log = &self.raw.raft.raft_log;
        let last = raft_log.last_index();
        if let Some(t) = self.proposed_tail.filter(|t| t.0 == last) {
            return t;
        }
        let stored = &self.raw.store().index;
        let mut index = stored.last_index().min(raft_log.unstable.offset.saturating_sub(1));
        let mut next = stored.end_offset(index);
        if index < last {
            let unstable = raft_log.entries(index + 1, None, GetEntriesContext::empty(false)).unwrap_or_default();
            for e in unstable {
                index = e.index;
                next += entry_offsets(&e);
            }
        }
        (index, next)
    }

    /// Takes one batch from a producer: checked and given its offsets here,
    /// proposed, and answered per `acks` (0: at once, 1: once written here,
    /// -1: once committed).
    pub fn append(&mut self, mut batch: Vec<u8>, acks: i16, reply: AppendReply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.waiters.len() >= MAX_WAITING_APPENDS {
            let _ = reply.send(Err(AppendError::TooManyPending(MAX_WAITING_APPENDS)));
            return;
        }
        let term = self.raw.raft.term;
        let (index, base_offset) = self.tail();
        let placed = match self.raw.store().log.prepare(&mut batch, base_offset, term as i32) {
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
            Ok(Prepared::Duplicate { base_offset, last_offset }) => {
                let placed = Placed { base_offset, last_offset };
                if acks == 0 || self.high_watermark > last_offset {
                    let _ = reply.send(Ok(placed));
                } else {
                    self.waiters.push(Waiter { placed, term, wait: WaitFor::HighWatermark(last_offset + 1), reply });
                }
                return;
            }
            Ok(Prepared::Append) => {
                let count = BatchHeader::parse(&batch).map(|h| h.last_offset_delta as i64 + 1).unwrap_or(1);
                Placed { base_offset, last_offset: base_offset + count - 1 }
            }
        };
        if let Err(e) = self.raw.propose(Vec::new(), batch) {
            if let Err(e) = self.raw.store().log.discard_prepared() {
                tracing::error!(group = self.id, error = %e, "cannot forget a batch that was not proposed");
            }
            tracing::debug!(group = self.id, error = %e, "proposal dropped");
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        debug_assert_eq!(self.raw.raft.raft_log.last_index(), index + 1);
        self.proposed_tail = Some((index + 1, placed.last_offset + 1));
        self.unwritten_proposal = Some((index + 1, term));
        match acks {
            0 => {
                let _ = reply.send(Ok(placed));
            }
            1 => self.waiters.push(Waiter { placed, term, wait: WaitFor::Written(index + 1), reply }),
            _ => self.waiters.push(Waiter { placed, term, wait: WaitFor::Committed(index + 1), reply }),
        }
    }

    /// DeleteRecords: moves the log start to `offset` (-1: the high
    /// watermark) on every replica, through the log; answers with the log
    /// start once the move is committed.
    pub fn delete_records(&mut self, offset: i64, reply: AppendReply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let target = if offset == -1 { self.high_watermark } else { offset };
        if target < 0 || target > self.high_watermark {
            let _ = reply.send(Err(AppendError::OffsetOutOfRange { offset, high_watermark: self.high_watermark }));
            return;
        }
        if target <= self.log_start {
            let _ = reply.send(Ok(Placed { base_offset: self.log_start, last_offset: self.log_start - 1 }));
            return;
        }
        if let Err(e) = self.raw.propose(LOG_START_CONTEXT.to_vec(), target.to_be_bytes().to_vec()) {
            tracing::debug!(group = self.id, error = %e, "DeleteRecords proposal dropped");
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        let placed = Placed { base_offset: target, last_offset: target - 1 };
        self.waiters.push(Waiter { placed, term, wait: WaitFor::Committed(index), reply });
    }

    /// Leader, every tick: notes which followers are active and hold every
    /// committed entry right now.
    pub fn track_followers(&mut self, now: std::time::Instant) {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            self.caught_up_at.clear();
            return;
        }
        if self.caught_up_at.is_empty() {
            // A new leader starts from all replicas in sync, as Kafka's keeps
            // the ISR it inherits: a dead one drops out after the lag time.
            for (id, _) in raft.prs().iter() {
                self.caught_up_at.insert(*id, now);
            }
        }
        let committed = raft.raft_log.committed;
        for (id, p) in raft.prs().iter() {
            if *id == raft.id || (p.recent_active && p.matched >= committed) {
                self.caught_up_at.insert(*id, now);
            }
        }
    }

    /// Leader: the replicas caught up within the last `REPLICA_LAG_MS`
    /// (Kafka's ISR and `replica.lag.time.max.ms`), in placement order.
    pub fn refresh_in_sync(&mut self, now: std::time::Instant) {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            self.in_sync.clear();
            return;
        }
        let lag = std::time::Duration::from_millis(REPLICA_LAG_MS);
        let mut ids: Vec<u64> = self.caught_up_at.iter().filter(|(_, at)| now.duration_since(**at) <= lag).map(|(id, _)| *id).collect();
        ids.sort_by_key(|id| (*id != self.preferred, *id));
        self.in_sync = ids;
    }

    /// Hands leadership to the preferred replica when this broker leads in
    /// its place and the preferred one is up and has every entry (Kafka's
    /// preferred leader election, `auto.leader.rebalance.enable`).
    pub fn rebalance_leadership(&mut self) {
        self.rebalance_leadership_at(std::time::Instant::now());
    }

    /// `rebalance_leadership` as of `now` (a simulation's clock).
    pub fn rebalance_leadership_at(&mut self, now: std::time::Instant) {
        if self.raw.raft.lead_transferee.is_none() && self.elect_preferred_at(now) == Election::Started {
            tracing::info!(group = self.id, to = self.preferred, "moving leadership back to the preferred replica");
        }
    }

    /// A preferred-leader election (ElectLeaders, or the periodic check):
    /// starts a Raft leader transfer to the preferred replica if it is
    /// active and has every entry.
    pub fn elect_preferred(&mut self) -> Election {
        self.elect_preferred_at(std::time::Instant::now())
    }

    fn elect_preferred_at(&mut self, now: std::time::Instant) -> Election {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return Election::NotLeader { leader_id: raft.leader_id };
        }
        if self.preferred == raft.id || self.preferred == 0 {
            return Election::NotNeeded;
        }
        // Active means heard within the last couple of seconds (tracked each
        // tick): raft-rs clears `recent_active` every election timeout, so a
        // single look at it misses a live replica now and then.
        let last = raft.raft_log.last_index();
        let active = self.caught_up_at.get(&self.preferred).is_some_and(|at| now.saturating_duration_since(*at) <= std::time::Duration::from_secs(2));
        let caught_up = active && raft.prs().get(self.preferred).is_some_and(|p| p.matched >= last);
        if !caught_up {
            return Election::PreferredUnavailable;
        }
        self.raw.transfer_leader(self.preferred);
        Election::Started
    }

    pub fn preferred(&self) -> u64 {
        self.preferred
    }

    /// The partition's first replica changed (a reassignment).
    pub fn set_preferred(&mut self, preferred: u64) {
        self.preferred = preferred;
    }

    /// Handles one `Ready`: entries written to the partition's log and
    /// fsynced, the hard state saved, messages to the outbox, the commit
    /// index turned into the high watermark.
    pub fn handle_ready(&mut self) -> Result<(), ClusterError> {
        if !self.raw.has_ready() {
            self.settle_waiters();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.outbox.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot())?;
        }
        let committed = ready.take_committed_entries();
        self.apply(&committed)?;
        let entries = ready.take_entries();
        if !entries.is_empty() {
            self.write_entries(&entries)?;
        }
        self.forget_dropped_proposals()?;
        if let Some(hs) = ready.hs() {
            self.save_hard_state(hs.clone())?;
        }
        if ready.must_sync() {
            self.raw.store().log.sync().map_err(replica_error)?;
        }
        self.proposed_tail = None;
        self.outbox.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().hard_state.commit = commit;
        }
        self.outbox.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(&committed)?;
        self.raw.advance_apply();
        self.settle_waiters();
        Ok(())
    }

    /// A follower behind the leader's anchor: the leader no longer has the
    /// entries it lacks, so its log starts over, empty, where the leader's
    /// does. The anchor is saved first: a crash part way installs it again.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), ClusterError> {
        let meta = snapshot.get_metadata();
        let offset = snapshot_offset(snapshot).ok_or_else(|| ClusterError::Storage(format!("group {}: a snapshot without a start offset", self.id)))?;
        let anchor = Anchor { index: meta.index, term: meta.term, offset, kind: AnchorKind::Installed, conf: meta.get_conf_state().clone() };
        assert!(anchor.index >= self.applied_index, "group {}: a snapshot below what was applied", self.id);
        tracing::info!(group = self.id, index = anchor.index, offset, "installing the leader's snapshot: this replica's log starts over there");
        self.anchor_file.save(&anchor).map_err(ClusterError::Storage)?;
        let store = self.raw.mut_store();
        store.log.reset(offset).map_err(replica_error)?;
        store.index = EntryIndex::starting_after(anchor.index, anchor.term, offset);
        store.conf_state = anchor.conf.clone();
        store.hard_state.commit = store.hard_state.commit.max(anchor.index);
        self.mark_file.rewrite(&[]).map_err(ClusterError::Storage)?;
        self.conf_history.clear();
        self.conf_file.save(&[]).map_err(ClusterError::Storage)?;
        self.conf_index = anchor.index;
        self.applied_index = anchor.index;
        self.high_watermark = self.high_watermark.max(offset);
        self.log_start = self.log_start.max(offset);
        self.raw.mut_store().anchor = Some(anchor);
        Ok(())
    }

    /// Drops the head of the log that retention or a DeleteRecords no
    /// longer keeps (never past what this replica applied): the anchor is
    /// saved, then the entries and their batches go. A follower that
    /// needs them gets the anchor as a snapshot.
    pub fn compact_by_retention(&mut self) -> Result<(), ClusterError> {
        let Some(target) = self.raw.store().log.retention_target().map_err(replica_error)? else { return Ok(()) };
        self.compact_to(target)
    }

    fn compact_to(&mut self, offset: i64) -> Result<(), ClusterError> {
        let store = self.raw.store();
        let index = store.index.last_ending_by(offset.min(self.high_watermark), self.applied_index);
        if index < store.index.first_index() {
            return Ok(());
        }
        let term = store.index.term(index).expect("inside the index");
        let anchor = Anchor { index, term, offset: store.index.end_offset(index), kind: AnchorKind::Compacted, conf: self.conf_at(index) };
        self.anchor_file.save(&anchor).map_err(ClusterError::Storage)?;
        let before = self.conf_history.len();
        self.conf_history.retain(|(i, _)| *i > index);
        if self.conf_history.len() != before {
            self.conf_file.save(&self.conf_history).map_err(ClusterError::Storage)?;
        }
        let store = self.raw.mut_store();
        store.index.compact(index);
        let offset = anchor.offset;
        // The anchor serves snapshots from here on, even if deleting the
        // segments fails (the next open deletes them).
        store.anchor = Some(anchor);
        self.mark_file.rewrite(store.index.marks()).map_err(ClusterError::Storage)?;
        store.log.compact(offset).map_err(replica_error)?;
        tracing::debug!(group = self.id, index, offset, "dropped the head of the partition's log");
        Ok(())
    }

    /// The replicas as of entry `index` (at or above the anchor).
    fn conf_at(&self, index: u64) -> ConfState {
        match self.conf_history.iter().rev().find(|(i, _)| *i <= index) {
            Some((_, conf)) => conf.clone(),
            None => self.raw.store().anchor.as_ref().map_or_else(|| self.initial_conf.clone(), |a| a.conf.clone()),
        }
    }

    /// A leader's proposals replaced before they were written (it stepped
    /// a new leader's entries in the same round) never reach the log, so
    /// no truncation tells the partition: its producer state still counts
    /// them, would call their retries duplicates and would skip the batches
    /// written in their place (found by the simulation, seed 3343).
    fn forget_dropped_proposals(&mut self) -> Result<(), ClusterError> {
        let Some((index, term)) = self.unwritten_proposal else { return Ok(()) };
        if self.raw.raft.raft_log.term(index).ok() != Some(term) {
            self.unwritten_proposal = None;
            self.raw.store().log.discard_prepared().map_err(replica_error)?;
        } else if self.raw.store().index.last_index() >= index {
            self.unwritten_proposal = None;
        }
        Ok(())
    }

    /// Saves the commit index too (a clean stop): after the restart the
    /// high watermark starts where it was, not at the last term change.
    pub fn save_commit(&mut self) -> Result<(), ClusterError> {
        let hs = self.raw.store().hard_state.clone();
        self.hard_state_file.save(&hs).map_err(ClusterError::Storage)
    }

    fn save_hard_state(&mut self, hs: raft::eraftpb::HardState) -> Result<(), ClusterError> {
        let before = &self.raw.store().hard_state;
        // The commit index may lag on disk (Raft learns it again); a term or
        // vote must be durable before any message that depends on it leaves.
        let must_save = hs.term != before.term || hs.vote != before.vote;
        self.raw.mut_store().hard_state = hs.clone();
        if must_save {
            self.hard_state_file.save(&hs).map_err(ClusterError::Storage)?;
        }
        Ok(())
    }

    /// Writes Ready entries: marks first (fsynced, so no batch after a mark
    /// is ever on disk without it), then the batches. Entries replacing
    /// ones this replica holds (a new leader's log wins) truncate it first.
    fn write_entries(&mut self, entries: &[Entry]) -> Result<(), ClusterError> {
        let first = entries[0].index;
        let store = self.raw.mut_store();
        if first <= store.index.last_index() {
            let offset = store.index.base_offset(first);
            assert!(offset >= self.high_watermark && first > self.applied_index, "group {}: a committed entry would be replaced", self.id);
            store.log.truncate(offset).map_err(replica_error)?;
            if store.index.truncate(first - 1) {
                self.mark_file.rewrite(store.index.marks()).map_err(ClusterError::Storage)?;
            }
        }
        assert_eq!(first, store.index.last_index() + 1, "group {}: entries must continue the log", self.id);
        let mut payload = Vec::new();
        let mut marks = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        let mut next = store.index.end_offset(first - 1);
        for e in entries {
            if is_mark(e) {
                let mark = Mark { index: e.index, term: e.term, kind: mark_kind(e) };
                marks.push(mark.clone());
                placed.push(Err(mark));
                continue;
            }
            let header = BatchHeader::parse(&e.data).map_err(|err| ClusterError::Storage(format!("entry {}: {err}", e.index)))?;
            if header.base_offset != next {
                return Err(ClusterError::Storage(format!("entry {} starts at offset {} but the log continues at {next}", e.index, header.base_offset)));
            }
            payload.extend_from_slice(&e.data);
            next = header.last_offset() + 1;
            placed.push(Ok((e.term, next)));
        }
        if !marks.is_empty() {
            self.mark_file.append(&marks).map_err(ClusterError::Storage)?;
        }
        if !payload.is_empty() {
            store.log.append(&payload).map_err(replica_error)?;
        }
        for p in placed {
            match p {
                Ok((term, end)) => store.index.push(term, end),
                Err(mark) => {
                    let pushed = store.index.push_mark(mark.term, mark.kind.clone());
                    debug_assert_eq!(pushed, mark);
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, committed: &[Entry]) -> Result<(), ClusterError> {
        let Some(last) = committed.last() else { return Ok(()) };
        self.applied_index = last.index;
        // The high watermark first: a reader must never see the log start
        // past it (a DeleteRecords to the high watermark, applied with the
        // batches below it).
        let hw = self.raw.store().index.end_offset(last.index);
        if hw > self.high_watermark {
            self.high_watermark = hw;
            self.raw.store().log.commit(hw);
        }
        for e in committed.iter().filter(|e| is_mark(e)) {
            match mark_kind(e) {
                MarkKind::LogStart(offset) if offset > self.log_start => {
                    self.log_start = offset;
                    self.raw.store().log.set_log_start(offset);
                }
                MarkKind::ConfChange(_) if e.index > self.conf_index => self.apply_conf_change(e)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A committed membership change: raft-rs switches to it and it is
    /// saved, so a restart starts from it.
    fn apply_conf_change(&mut self, e: &Entry) -> Result<(), ClusterError> {
        let change = ConfChangeV2::parse_from_bytes(&e.data).map_err(|err| ClusterError::Storage(format!("group {}: entry {} holds no membership change: {err}", self.id, e.index)))?;
        let conf = self.raw.apply_conf_change(&change).map_err(|err| ClusterError::Storage(format!("group {}: membership change at entry {}: {err}", self.id, e.index)))?;
        self.conf_history.push((e.index, conf.clone()));
        self.conf_file.save(&self.conf_history).map_err(ClusterError::Storage)?;
        tracing::info!(group = self.id, voters = ?conf.voters, learners = ?conf.learners, outgoing = ?conf.voters_outgoing, "partition replicas changed");
        self.raw.mut_store().conf_state = conf;
        self.conf_index = e.index;
        Ok(())
    }

    /// The voters and learners as of the last membership change applied.
    pub fn replicas(&self) -> &ConfState {
        &self.raw.store().conf_state
    }

    /// Leader: one step of moving the group's replicas to `target`. New
    /// replicas join as learners and catch up first; then one (joint)
    /// change makes `target` the voters. A leader that is not in `target`
    /// hands leadership to one that is before it is removed.
    pub fn reassign(&mut self, target: &[u64]) -> ReassignStep {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return ReassignStep::NotLeader;
        }
        if raft.pending_conf_index > raft.raft_log.applied || raft.lead_transferee.is_some() {
            return ReassignStep::InProgress;
        }
        let conf = &self.raw.store().conf_state;
        if !conf.voters_outgoing.is_empty() {
            // raft-rs leaves a joint configuration by itself, except when
            // the leader changed in between: leave it here.
            self.propose_change(Vec::new());
            return ReassignStep::InProgress;
        }
        let want: BTreeSet<u64> = target.iter().copied().collect();
        let voters: BTreeSet<u64> = conf.voters.iter().copied().collect();
        let learners: BTreeSet<u64> = conf.learners.iter().copied().collect();
        if voters == want && learners.is_empty() {
            return ReassignStep::Done;
        }
        let single = |change_type, node_id| {
            let mut c = ConfChangeSingle::default();
            c.set_change_type(change_type);
            c.node_id = node_id;
            c
        };
        let joining: Vec<u64> = want.iter().filter(|id| !voters.contains(id) && !learners.contains(id)).copied().collect();
        if !joining.is_empty() {
            self.propose_change(joining.into_iter().map(|id| single(ConfChangeType::AddLearnerNode, id)).collect());
            return ReassignStep::InProgress;
        }
        let committed = raft.raft_log.committed;
        if !learners.iter().filter(|id| want.contains(id)).all(|id| raft.prs().get(*id).is_some_and(|p| p.matched >= committed)) {
            return ReassignStep::InProgress;
        }
        let me = raft.id;
        let mut changes: Vec<ConfChangeSingle> = learners.iter().filter(|id| want.contains(id)).map(|id| single(ConfChangeType::AddNode, *id)).collect();
        let leaving = voters.iter().chain(&learners).filter(|id| !want.contains(id) && **id != me);
        changes.extend(leaving.map(|id| single(ConfChangeType::RemoveNode, *id)));
        if changes.is_empty() {
            // Only this leader is left to remove: leadership goes first.
            let last = raft.raft_log.last_index();
            if let Some(next) = want.iter().find(|id| raft.prs().get(**id).is_some_and(|p| p.matched >= last)) {
                tracing::info!(group = self.id, to = next, "handing leadership over before leaving the partition's replicas");
                self.raw.transfer_leader(*next);
            }
            return ReassignStep::InProgress;
        }
        self.propose_change(changes);
        ReassignStep::InProgress
    }

    fn propose_change(&mut self, changes: Vec<ConfChangeSingle>) {
        let mut change = ConfChangeV2::default();
        change.set_transition(ConfChangeTransition::Auto);
        change.set_changes(changes.into());
        if let Err(e) = self.raw.propose_conf_change(Vec::new(), change) {
            tracing::debug!(group = self.id, error = %e, "membership change not proposed");
        }
    }

    /// Answers the waiters whose promise now holds, and fails those whose
    /// leader term has passed: their entries may have been replaced.
    fn settle_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let raft = &self.raw.raft;
        let leading_term = (raft.state == StateRole::Leader).then_some(raft.term);
        let written = self.raw.store().index.last_index();
        let (hw, applied) = (self.high_watermark, self.applied_index);
        let (leader_id, term_now) = (raft.leader_id, raft.term);
        let mut keep = Vec::with_capacity(self.waiters.len());
        for w in self.waiters.drain(..) {
            let done = match w.wait {
                WaitFor::Written(index) => written >= index,
                WaitFor::Committed(index) => applied >= index,
                WaitFor::HighWatermark(offset) => hw >= offset,
            };
            if leading_term != Some(w.term) {
                let _ = w.reply.send(Err(AppendError::NotLeader { leader_id, term: term_now }));
            } else if done {
                let _ = w.reply.send(Ok(w.placed));
            } else if w.reply.is_closed() {
                // The producer stopped waiting (timeout); nothing to answer.
            } else {
                keep.push(w);
            }
        }
        self.waiters = keep;
    }

    /// Fails every waiter (the group is closing or the broker stopping).
    pub fn fail_waiters(&mut self, error: impl Fn() -> AppendError) {
        for w in self.waiters.drain(..) {
            let _ = w.reply.send(Err(error()));
        }
    }

    /// Empties the partition's log (this broker left the group).
    pub fn clear_log(&self) -> Result<(), ReplicaError> {
        self.raw.store().log.clear()
    }

    pub fn remove_state(&self) {
        self.hard_state_file.remove();
        self.mark_file.remove();
        self.conf_file.remove();
        self.anchor_file.remove();
    }
}
