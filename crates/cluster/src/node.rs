//! One broker's member of the metadata group, without threads, sockets or
//! clocks of its own: it steps messages, ticks, proposes, persists what
//! raft-rs hands over to a [`LogStore`], applies committed commands and
//! leaves the messages to send in an outbox. The Raft thread (`driver.rs`)
//! drives it for real; the simulation (`tests/sim.rs`) drives several with a
//! seeded network and storage.

use std::collections::HashMap;
use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, HardState, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info};

use crate::error::ClusterError;
use crate::state::{Applied, ClusterState, Command};
use crate::wal::{Recovered, Wal};

pub type Reply = oneshot::Sender<Result<Applied, ClusterError>>;

/// Where a member keeps its Raft log and hard state.
pub trait LogStore {
    /// Appends entries then the hard state; durable before it returns when `sync`.
    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>, sync: bool) -> Result<(), ClusterError>;
}

impl LogStore for Wal {
    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>, sync: bool) -> Result<(), ClusterError> {
        Wal::append(self, entries, hard_state, sync)
    }
}

/// Raft timing and limits of one member.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub node_id: u64,
    pub voters: Vec<u64>,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub max_pending_proposals: usize,
    /// Distinguishes this run of the member from its earlier ones: proposal
    /// numbers restart at 1, and an entry proposed before a crash may be
    /// committed after the restart; it must not answer a new caller.
    pub incarnation: u64,
    /// A fixed election timeout in ticks instead of raft-rs's random one in
    /// [election, 2 x election): raft-rs draws from the thread's RNG, which a
    /// seeded simulation cannot replay.
    pub fixed_election_timeout: Option<usize>,
}

impl NodeOptions {
    /// raft-rs's settings for a member of any group (metadata or
    /// partition) restarting with `applied` entries already applied.
    pub fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.node_id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            applied,
            min_election_tick: self.fixed_election_timeout.unwrap_or(0),
            max_election_tick: self.fixed_election_timeout.map(|t| t + 1).unwrap_or(0),
            ..Default::default()
        }
    }
}

/// What a metadata entry carries: the command, and who proposed it so that
/// broker can answer its caller once the entry is applied.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: u64,
    incarnation: u64,
    seq: u64,
    command: Command,
}

pub struct MetadataNode<S: LogStore> {
    options: NodeOptions,
    pub(crate) raw: RawNode<MemStorage>,
    store: S,
    state: ClusterState,
    pending: HashMap<u64, Reply>,
    next_seq: u64,
    outbox: Vec<Message>,
    /// Set when an apply changed the state since the last `take_state_changed`.
    state_changed: bool,
    /// Every applied entry as (index, term, data), kept only when asked
    /// (the simulation compares members with it).
    pub history: Option<Vec<(u64, u64, Vec<u8>)>>,
    pub(crate) last_heard: HashMap<u64, Instant>,
}

impl<S: LogStore> MetadataNode<S> {
    /// A member restarted from what its store recovered (nothing, the first time).
    pub fn open(options: NodeOptions, store: S, recovered: Recovered, logger: &slog::Logger) -> Result<MetadataNode<S>, ClusterError> {
        // A broker outside the voters starts as a learner of its own; the
        // leader adds it when it asks to join (see `propose_join`).
        let learners = if options.voters.contains(&options.node_id) { vec![] } else { vec![options.node_id] };
        let storage = MemStorage::new_with_conf_state((options.voters.clone(), learners));
        {
            let mut core = storage.wl();
            core.append(&recovered.entries).map_err(|e| ClusterError::Storage(e.to_string()))?;
            let mut hs = recovered.hard_state.clone();
            let last = recovered.entries.last().map(|e| e.index).unwrap_or(0);
            hs.commit = hs.commit.min(last);
            core.set_hardstate(hs);
        }
        let raft_config = options.raft_config(0);
        let raw = RawNode::new(&raft_config, storage, logger).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(MetadataNode {
            options,
            raw,
            store,
            state: ClusterState::default(),
            pending: HashMap::new(),
            next_seq: 1,
            outbox: Vec::new(),
            state_changed: false,
            history: None,
            last_heard: HashMap::new(),
        })
    }

    pub fn node_id(&self) -> u64 {
        self.options.node_id
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    pub fn take_state_changed(&mut self) -> bool {
        std::mem::take(&mut self.state_changed)
    }

    pub fn take_outbox(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.outbox)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// raft-rs's view, for a failing simulation's report.
    #[doc(hidden)]
    pub fn describe_raft(&self) -> String {
        let r = &self.raw.raft;
        format!(
            "role {:?} term {} committed {} applied {} last {} pending_conf {} conf {:?}",
            r.state,
            r.term,
            r.raft_log.committed,
            r.raft_log.applied,
            r.raft_log.last_index(),
            r.pending_conf_index,
            r.prs().conf().to_conf_state()
        )
    }

    /// Is `id` a voter or learner of the metadata group, as last applied?
    pub fn is_member(&self, id: u64) -> bool {
        let conf = self.raw.raft.prs().conf().to_conf_state();
        conf.voters.contains(&id) || conf.learners.contains(&id)
    }

    /// Leader: proposes that broker `id`, outside the voters, join the
    /// metadata group as a learner. raft-rs drops it while another
    /// membership change is pending; the caller asks again later.
    pub fn propose_join(&mut self, id: u64) -> Result<(), ClusterError> {
        let mut change = ConfChange::default();
        change.set_change_type(ConfChangeType::AddLearnerNode);
        change.node_id = id;
        self.raw.propose_conf_change(Vec::new(), change).map_err(|e| ClusterError::NoLeader(format!("membership change refused: {e}")))
    }

    pub fn step(&mut self, msg: Message) -> Result<(), ClusterError> {
        self.last_heard.insert(msg.from, Instant::now());
        self.raw.step(msg).map_err(|e| ClusterError::NoLeader(format!("raft message refused: {e}")))
    }

    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Drops the replies whose callers stopped waiting.
    pub fn sweep_pending(&mut self) {
        self.pending.retain(|_, reply| !reply.is_closed());
    }

    /// Answers every waiting caller with `error` (the member is stopping).
    pub fn fail_pending(&mut self, error: impl Fn() -> ClusterError) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(error()));
        }
    }

    pub fn propose(&mut self, command: Command, reply: Reply) {
        if self.pending.len() >= self.options.max_pending_proposals {
            let _ = reply.send(Err(ClusterError::TooManyPending(self.options.max_pending_proposals)));
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let envelope = Envelope { origin: self.options.node_id, incarnation: self.options.incarnation, seq, command };
        let data = match serde_json::to_vec(&envelope) {
            Ok(d) => d,
            Err(e) => {
                let _ = reply.send(Err(ClusterError::Storage(format!("cannot encode command: {e}"))));
                return;
            }
        };
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => {
                self.pending.insert(seq, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(ClusterError::NoLeader(e.to_string())));
            }
        }
    }

    /// Handles one `Ready`: messages to the outbox (a leader's before its
    /// own write, the rest after it), committed entries applied, new entries
    /// and the hard state persisted (fsynced when Raft must).
    pub fn handle_ready(&mut self) -> Result<(), ClusterError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.outbox.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // The metadata log is never compacted yet, so no snapshot is
            // ever sent; receiving one means a peer runs other code.
            return Err(ClusterError::Storage("received a metadata snapshot; this version cannot install one".into()));
        }
        self.apply(ready.take_committed_entries());
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        {
            let store = self.raw.mut_store();
            let mut core = store.wl();
            core.append(&entries).map_err(|e| ClusterError::Storage(e.to_string()))?;
            if let Some(hs) = &hard_state {
                core.set_hardstate(hs.clone());
            }
        }
        self.store.append(&entries, hard_state.as_ref(), ready.must_sync())?;
        self.outbox.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let hs = {
                let store = self.raw.mut_store();
                let mut core = store.wl();
                core.mut_hard_state().set_commit(commit);
                core.hard_state().clone()
            };
            // The commit index may lag on disk: Raft recomputes it.
            self.store.append(&[], Some(&hs), false)?;
        }
        self.outbox.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if let Some(h) = &mut self.history {
                h.push((entry.index, entry.term, entry.data.to_vec()));
            }
            self.state_changed = true;
            if entry.get_entry_type() == EntryType::EntryConfChange {
                self.apply_conf_change(&entry);
                continue;
            }
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                // A new leader's empty entry.
                self.state.applied_index = entry.index;
                continue;
            }
            let envelope: Envelope = match serde_json::from_slice(&entry.data) {
                Ok(e) => e,
                Err(e) => {
                    error!(index = entry.index, error = %e, "metadata entry cannot be decoded; skipped");
                    self.state.applied_index = entry.index;
                    continue;
                }
            };
            let result = self.state.apply(entry.index, &envelope.command);
            if envelope.origin == self.options.node_id && envelope.incarnation == self.options.incarnation {
                if let Some(reply) = self.pending.remove(&envelope.seq) {
                    let _ = reply.send(result.map_err(ClusterError::from));
                }
            }
        }
    }

    /// A committed membership change (a broker joining as a learner): raft-rs
    /// switches to it, and the state records the learner so every broker
    /// knows the members alike.
    fn apply_conf_change(&mut self, entry: &Entry) {
        self.state.applied_index = entry.index;
        let change = match ConfChange::parse_from_bytes(&entry.data) {
            Ok(c) => c,
            Err(e) => {
                error!(index = entry.index, error = %e, "metadata membership change cannot be decoded; skipped");
                return;
            }
        };
        match self.raw.apply_conf_change(&change) {
            Ok(conf) => {
                info!(index = entry.index, voters = ?conf.voters, learners = ?conf.learners, "metadata group members changed");
                // From the change, not raft-rs's view: a joining broker
                // counts itself a learner from its start.
                match change.get_change_type() {
                    ConfChangeType::AddLearnerNode => self.state.observers.insert(change.node_id),
                    _ => self.state.observers.remove(&change.node_id),
                };
                self.raw.mut_store().wl().set_conf_state(conf);
            }
            Err(e) => error!(index = entry.index, error = %e, "metadata membership change refused"),
        }
    }
}
