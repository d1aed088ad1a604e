//! What the broker holds: a handle to propose metadata changes and to read
//! the cluster state and the metadata group's status.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tracing::info;

use crate::config::ClusterConfig;
use crate::driver::{Driver, Input, QuorumInfo};
use crate::node::{MetadataNode, NodeOptions};
use crate::partition::{AppendError, Election, GroupSpec, GroupStatus, Placed};
use crate::error::ClusterError;
use crate::slog_bridge;
use crate::state::{Applied, ClusterState, Command};
use crate::transport::Transport;
use crate::wal::Wal;

/// Inputs queued for the Raft thread, at most.
const INPUT_QUEUE: usize = 65_536;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: u64,
    /// 0 while no leader is known.
    pub leader_id: u64,
    pub term: u64,
    pub is_leader: bool,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The Raft thread has stopped (shutdown, or its log cannot be written).
    pub stopped: bool,
}

pub struct Cluster {
    config: ClusterConfig,
    inputs: SyncSender<Input>,
    state: watch::Receiver<Arc<ClusterState>>,
    status: watch::Receiver<RaftStatus>,
    /// Each partition group this broker runs, as of the last Raft round.
    groups: Arc<parking_lot::RwLock<std::collections::HashMap<u64, GroupStatus>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node_id", &self.config.node_id).finish()
    }
}

impl Cluster {
    /// Opens the metadata log, binds the cluster listener and starts the
    /// Raft thread. Must run inside a tokio runtime (the transport's tasks).
    pub async fn start(config: ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        config.validate()?;
        let dir = config.dir.clone();
        let (wal, recovered) = tokio::task::spawn_blocking(move || Wal::open(&dir)).await.map_err(|e| ClusterError::Storage(e.to_string()))??;
        let options = NodeOptions {
            node_id: config.node_id,
            voters: config.voter_ids(),
            election_ticks: config.election_ticks,
            heartbeat_ticks: config.heartbeat_ticks,
            max_pending_proposals: config.max_pending_proposals,
            fixed_election_timeout: None,
            incarnation: uuid::Uuid::new_v4().as_u64_pair().0,
        };
        let entries = recovered.entries.len();
        let node = MetadataNode::open(options, wal, recovered, &slog_bridge::logger(config.node_id))?;
        let (inputs, rx) = sync_channel(INPUT_QUEUE);
        let transport = Transport::start(&config, inputs.clone())
            .await
            .map_err(|e| ClusterError::Config(format!("cannot listen on --cluster-listen {}: {e}", config.listen)))?;
        let (state_tx, state) = watch::channel(Arc::new(ClusterState::default()));
        let (status_tx, status) = watch::channel(RaftStatus { node_id: config.node_id, ..Default::default() });
        let groups = Arc::new(parking_lot::RwLock::new(std::collections::HashMap::new()));
        let driver = Driver::new(config.clone(), node, transport, state_tx, status_tx, groups.clone());
        let thread = std::thread::Builder::new()
            .name("ferry-raft".into())
            .spawn(move || driver.run(rx))
            .map_err(|e| ClusterError::Config(format!("cannot start the raft thread: {e}")))?;
        info!(node_id = config.node_id, voters = config.voters.len(), entries, "cluster layer started");
        Ok(Arc::new(Cluster { config, inputs, state, status, groups, thread: Mutex::new(Some(thread)) }))
    }

    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn state(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    pub fn watch_state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// Proposes a metadata change and waits until this broker applied it.
    pub async fn propose(&self, command: Command) -> Result<Applied, ClusterError> {
        let (reply, rx) = oneshot::channel();
        match self.inputs.try_send(Input::Propose { command, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ClusterError::TooManyPending(INPUT_QUEUE)),
            Err(TrySendError::Disconnected(_)) => return Err(ClusterError::Stopped),
        }
        let timeout_ms = self.config.proposal_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClusterError::Stopped),
            Err(_) => Err(ClusterError::Timeout(timeout_ms)),
        }
    }

    /// The metadata group's leader, term, commit index and voters' progress
    /// (exact on the leader; a follower knows only itself).
    pub async fn describe_quorum(&self) -> Result<QuorumInfo, ClusterError> {
        let (reply, rx) = oneshot::channel();
        match self.inputs.try_send(Input::Describe { reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ClusterError::TooManyPending(INPUT_QUEUE)),
            Err(TrySendError::Disconnected(_)) => return Err(ClusterError::Stopped),
        }
        rx.await.map_err(|_| ClusterError::Stopped)
    }

    /// Starts this broker's replica of a partition (nothing if it runs).
    pub fn open_group(&self, spec: GroupSpec) -> Result<(), ClusterError> {
        self.send(Input::OpenGroup(spec))
    }

    /// Stops this broker's replica of a partition and forgets its Raft state.
    pub fn close_group(&self, group: u64) -> Result<(), ClusterError> {
        self.send(Input::CloseGroup { group })
    }

    /// Stops this broker's replica of a partition that moved off it and
    /// empties the partition's log.
    pub fn leave_group(&self, group: u64) -> Result<(), ClusterError> {
        self.send(Input::LeaveGroup { group })
    }

    fn send(&self, input: Input) -> Result<(), ClusterError> {
        match self.inputs.try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ClusterError::TooManyPending(INPUT_QUEUE)),
            Err(TrySendError::Disconnected(_)) => Err(ClusterError::Stopped),
        }
    }

    /// Hands a producer's batch to the partition's group. Queued at once
    /// (appends of one connection keep their order); the answer comes when
    /// `acks` is kept: 0 proposed, 1 written on the leader, -1 committed.
    pub fn append(&self, group: u64, batch: Vec<u8>, acks: i16) -> oneshot::Receiver<Result<Placed, AppendError>> {
        let (reply, rx) = oneshot::channel();
        self.send_or_fail(Input::Append { group, batch, acks, reply });
        rx
    }

    /// DeleteRecords on a replicated partition: the new log start, once
    /// committed (as `Placed::base_offset`).
    pub fn delete_records(&self, group: u64, offset: i64) -> oneshot::Receiver<Result<Placed, AppendError>> {
        let (reply, rx) = oneshot::channel();
        self.send_or_fail(Input::DeleteRecords { group, offset, reply });
        rx
    }

    /// Starts a preferred-leader election for a partition this broker
    /// leads; None when it holds no replica of it.
    pub async fn elect_preferred(&self, group: u64) -> Result<Option<Election>, ClusterError> {
        let (reply, rx) = oneshot::channel();
        match self.inputs.try_send(Input::ElectPreferred { group, reply }) {
            Ok(()) => rx.await.map_err(|_| ClusterError::Stopped),
            Err(TrySendError::Full(_)) => Err(ClusterError::TooManyPending(INPUT_QUEUE)),
            Err(TrySendError::Disconnected(_)) => Err(ClusterError::Stopped),
        }
    }

    /// Queues an input carrying a reply; a full or closed queue answers it.
    fn send_or_fail(&self, input: Input) {
        let (error, input) = match self.inputs.try_send(input) {
            Ok(()) => return,
            Err(TrySendError::Full(i)) => (AppendError::TooManyPending(INPUT_QUEUE), i),
            Err(TrySendError::Disconnected(i)) => (AppendError::Stopped, i),
        };
        if let Input::Append { reply, .. } | Input::DeleteRecords { reply, .. } = input {
            let _ = reply.send(Err(error));
        }
    }

    /// A partition group as this broker last saw it; None when it runs no
    /// replica of it.
    pub fn group_status(&self, group: u64) -> Option<GroupStatus> {
        self.groups.read().get(&group).copied()
    }

    /// Waits until the applied state satisfies `ready`, or the timeout.
    pub async fn wait_for(&self, timeout: Duration, ready: impl Fn(&ClusterState) -> bool) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, async move { rx.wait_for(|s| ready(s)).await.is_ok() }).await.unwrap_or(false)
    }

    /// Stops the Raft thread and waits for it.
    pub fn stop(&self) {
        let _ = self.inputs.try_send(Input::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}
