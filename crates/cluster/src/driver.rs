//! The Raft loop: one thread that ticks the metadata group, steps the
//! messages peers send, proposes commands, persists what raft-rs hands
//! over in `Ready` (WAL, fsync when Raft must), sends messages batched per
//! peer and applies committed commands to the cluster state.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::handle::RaftStatus;
use crate::state::{Applied, ClusterState, Command};
use crate::transport::{Batch, Transport};
use crate::wal::Wal;
use crate::METADATA_GROUP;

pub type Reply = oneshot::Sender<Result<Applied, ClusterError>>;

pub enum Input {
    Raft { group: u64, msg: Message },
    Propose { command: Command, reply: Reply },
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
}

/// What a metadata entry carries: the command, and who proposed it so that
/// broker can answer its caller once the entry is applied.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: u64,
    seq: u64,
    command: Command,
}

pub struct Driver {
    config: ClusterConfig,
    raw: RawNode<MemStorage>,
    wal: Wal,
    transport: Transport,
    state: ClusterState,
    pending: HashMap<u64, Reply>,
    next_seq: u64,
    state_tx: watch::Sender<Arc<ClusterState>>,
    status_tx: watch::Sender<RaftStatus>,
    /// When each peer was last heard from, and last seen fully caught up.
    last_heard: HashMap<u64, Instant>,
    caught_up: HashMap<u64, Instant>,
}

impl Driver {
    pub fn new(
        config: ClusterConfig,
        raw: RawNode<MemStorage>,
        wal: Wal,
        transport: Transport,
        state_tx: watch::Sender<Arc<ClusterState>>,
        status_tx: watch::Sender<RaftStatus>,
    ) -> Driver {
        Driver {
            config,
            raw,
            wal,
            transport,
            state: ClusterState::default(),
            pending: HashMap::new(),
            next_seq: 1,
            state_tx,
            status_tx,
            last_heard: HashMap::new(),
            caught_up: HashMap::new(),
        }
    }

    pub fn run(mut self, inputs: Receiver<Input>) {
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut next_tick = Instant::now() + tick;
        let mut ticks: u64 = 0;
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
                self.raw.tick();
                ticks += 1;
                next_tick = (next_tick + tick).max(now);
                if ticks % 10 == 0 {
                    self.pending.retain(|_, reply| !reply.is_closed());
                }
            }
            if let Err(e) = self.on_ready() {
                error!(error = %e, "the metadata group cannot persist its log; this broker leaves the metadata group");
                break;
            }
            self.publish_status();
        }
        self.stop();
    }

    fn stop(&mut self) {
        self.transport.shutdown();
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(ClusterError::Stopped));
        }
        self.status_tx.send_modify(|s| {
            s.stopped = true;
            s.leader_id = 0;
        });
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Raft { group, msg } if group == METADATA_GROUP => {
                self.last_heard.insert(msg.from, Instant::now());
                if let Err(e) = self.raw.step(msg) {
                    warn!(error = %e, "raft message refused");
                }
            }
            Input::Raft { group, .. } => warn!(group, "message for an unknown raft group"),
            Input::Propose { command, reply } => self.propose(command, reply),
            Input::Describe { reply } => {
                let _ = reply.send(self.describe());
            }
            Input::Stop => {}
        }
    }

    fn propose(&mut self, command: Command, reply: Reply) {
        if self.pending.len() >= self.config.max_pending_proposals {
            let _ = reply.send(Err(ClusterError::TooManyPending(self.config.max_pending_proposals)));
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let envelope = Envelope { origin: self.config.node_id, seq, command };
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

    fn on_ready(&mut self) -> Result<(), ClusterError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.send(ready.take_messages());
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
        self.wal.append(&entries, hard_state.as_ref(), ready.must_sync())?;
        self.send(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let hs = {
                let store = self.raw.mut_store();
                let mut core = store.wl();
                core.mut_hard_state().set_commit(commit);
                core.hard_state().clone()
            };
            // The commit index may lag on disk: Raft recomputes it.
            self.wal.append(&[], Some(&hs), false)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let mut by_peer: HashMap<u64, Batch> = HashMap::new();
        for m in messages {
            by_peer.entry(m.to).or_default().push((METADATA_GROUP, m));
        }
        for (to, batch) in by_peer {
            if !self.transport.send(to, batch) {
                self.raw.report_unreachable(to);
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                // A new leader's empty entry; conf changes are not proposed yet.
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
            if envelope.origin == self.config.node_id {
                if let Some(reply) = self.pending.remove(&envelope.seq) {
                    let _ = reply.send(result.map_err(ClusterError::from));
                }
            }
        }
        self.state_tx.send_replace(Arc::new(self.state.clone()));
    }

    fn describe(&mut self) -> QuorumInfo {
        let now = Instant::now();
        let wall_ms = |at: Option<&Instant>| match at {
            Some(t) => wall_clock_ms() - now.duration_since(*t).as_millis() as i64,
            None => -1,
        };
        let raft = &self.raw.raft;
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
                VoterInfo { id, log_end: matched, last_contact_ms: wall_ms(self.last_heard.get(&id)), caught_up_ms: wall_ms(self.caught_up.get(&id)) }
            })
            .collect();
        QuorumInfo { leader_id: raft.leader_id, term: raft.term, commit_index: raft.raft_log.committed, is_leader, voters }
    }

    fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        let status = RaftStatus {
            node_id: self.config.node_id,
            leader_id: raft.leader_id,
            term: raft.term,
            is_leader: raft.state == StateRole::Leader,
            commit_index: raft.raft_log.committed,
            applied_index: self.state.applied_index,
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
