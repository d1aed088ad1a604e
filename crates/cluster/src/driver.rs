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
use crate::node::{MetadataNode, Reply};
use crate::state::{ClusterState, Command};
use crate::transport::{Batch, Transport};
use crate::wal::Wal;
use crate::METADATA_GROUP;

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

pub struct Driver {
    config: ClusterConfig,
    node: MetadataNode<Wal>,
    transport: Transport,
    state_tx: watch::Sender<Arc<ClusterState>>,
    status_tx: watch::Sender<RaftStatus>,
    /// When each peer was last seen fully caught up.
    caught_up: HashMap<u64, Instant>,
}

impl Driver {
    pub fn new(
        config: ClusterConfig,
        node: MetadataNode<Wal>,
        transport: Transport,
        state_tx: watch::Sender<Arc<ClusterState>>,
        status_tx: watch::Sender<RaftStatus>,
    ) -> Driver {
        Driver { config, node, transport, state_tx, status_tx, caught_up: HashMap::new() }
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
                self.node.tick();
                ticks += 1;
                next_tick = (next_tick + tick).max(now);
                if ticks % 10 == 0 {
                    self.node.sweep_pending();
                }
            }
            let persisted = self.node.handle_ready();
            self.flush();
            if let Err(e) = persisted {
                error!(error = %e, "the metadata group cannot persist its log; this broker leaves the metadata group");
                break;
            }
            if self.node.take_state_changed() {
                self.state_tx.send_replace(Arc::new(self.node.state().clone()));
            }
            self.publish_status();
        }
        self.stop();
    }

    fn stop(&mut self) {
        self.transport.shutdown();
        self.node.fail_pending(|| ClusterError::Stopped);
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
            Input::Raft { group, .. } => warn!(group, "message for an unknown raft group"),
            Input::Propose { command, reply } => self.node.propose(command, reply),
            Input::Describe { reply } => {
                let _ = reply.send(self.describe());
            }
            Input::Stop => {}
        }
    }

    /// Sends the node's outbox, one batch per peer.
    fn flush(&mut self) {
        let messages = self.node.take_outbox();
        if messages.is_empty() {
            return;
        }
        let mut by_peer: HashMap<u64, Batch> = HashMap::new();
        for m in messages {
            by_peer.entry(m.to).or_default().push((METADATA_GROUP, m));
        }
        for (to, batch) in by_peer {
            if !self.transport.send(to, batch) {
                self.node.report_unreachable(to);
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
        QuorumInfo { leader_id: raft.leader_id, term: raft.term, commit_index: raft.raft_log.committed, is_leader, voters }
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
