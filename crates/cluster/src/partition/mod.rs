//! Partition replication: one Raft group per partition, whose Raft log is
//! the partition's own segments. Each entry that carries data is one record
//! batch, its term the batch's partition leader epoch, so data is written
//! once. The empty entry a new leader appends takes no offset (a topic's
//! first record is at offset 0, as in Kafka): it is kept in a small marks
//! file beside the group's hard state (`marks.rs`).
//!
//! The broker's partition implements [`ReplicaLog`]; this module drives
//! raft-rs over it and never looks inside a batch beyond its header.

mod anchor;
mod conf_file;
mod files;
mod group;
mod hard_state;
mod index;
mod marks;
mod storage;

use std::error::Error;

pub use group::{Election, GroupSpec, PartitionGroup, ReassignStep};

/// The readers of a group's small state files (marks, membership, hard
/// state), for the fuzz targets: bytes on disk are input too.
#[doc(hidden)]
pub mod state_files {
    pub use super::anchor::{Anchor, AnchorFile, AnchorKind};
    pub use super::conf_file::ConfFile;
    pub use super::hard_state::HardStateFile;
    pub use super::marks::MarkFile;
}

/// What a partition's Raft group needs of the partition it replicates.
/// Called only from the Raft thread, so calls never interleave.
pub trait ReplicaLog: Send + Sync {
    /// Every batch from the log start, in order: the entry index at open.
    fn batches(&self, visit: &mut dyn FnMut(BatchInfo)) -> Result<(), ReplicaError>;
    /// Leader, before proposing: checks the batch against the producer
    /// state, writes `base_offset` and `leader_epoch` into it and counts it
    /// in the producer state (so the next batch of the same producer,
    /// proposed before this one is written, is checked against it).
    fn prepare(&self, batch: &mut [u8], base_offset: i64, leader_epoch: i32) -> Result<Prepared, ReplicaError>;
    /// A prepared batch was not proposed after all: forget it.
    fn discard_prepared(&self) -> Result<(), ReplicaError>;
    /// Appends whole batches that already carry their offsets (not yet durable).
    fn append(&self, batches: &[u8]) -> Result<(), ReplicaError>;
    /// Makes everything appended durable.
    fn sync(&self) -> Result<(), ReplicaError>;
    /// Removes every batch at or after `offset` (a batch start), durably.
    fn truncate(&self, offset: i64) -> Result<(), ReplicaError>;
    /// Whole batches from `from_offset`, at least one, about `max_bytes` in all.
    fn read(&self, from_offset: i64, max_bytes: usize) -> Result<Vec<u8>, ReplicaError>;
    /// Everything below `high_watermark` is committed.
    fn commit(&self, high_watermark: i64);
    /// A committed DeleteRecords: readers see nothing below `offset`. The
    /// batches stay until the group compacts its log up to there.
    fn set_log_start(&self, offset: i64);
    /// Where the batches on disk start.
    fn start_offset(&self) -> Result<i64, ReplicaError>;
    /// Below which offset the log would drop its batches now (retention,
    /// a committed DeleteRecords), never past the high watermark or an
    /// open transaction's first offset; None: nothing to drop.
    fn retention_target(&self) -> Result<Option<i64>, ReplicaError>;
    /// Drops the batches below `offset`, a batch start at or below the
    /// high watermark, durably.
    fn compact(&self, offset: i64) -> Result<(), ReplicaError>;
    /// Installs a leader's snapshot: drops every batch and starts the log,
    /// empty and committed, at `offset`, durably.
    fn reset(&self, offset: i64) -> Result<(), ReplicaError>;
    /// This broker no longer holds a replica (its replicas moved): drops
    /// every batch and the committed state, so a later return starts from
    /// an empty log, durably.
    fn clear(&self) -> Result<(), ReplicaError>;
}

/// One batch of the log as the entry index needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// New: propose it.
    Append,
    /// A retry of a batch already in the log at these offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The partition refused the batch (a sequence or epoch problem, say);
    /// the caller downcasts to learn why.
    #[error("{0}")]
    Refused(Box<dyn Error + Send + Sync>),
    #[error("replica storage: {0}")]
    Storage(String),
}

/// Why an append was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// `leader_id` 0: no leader is known.
    #[error("this broker does not lead the partition (leader {leader_id}, term {term})")]
    NotLeader { leader_id: u64, term: u64 },
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("too many appends wait for this partition (limit {0})")]
    TooManyPending(usize),
    #[error("this broker holds no replica of the partition")]
    UnknownGroup,
    #[error("offset {offset} is past the high watermark {high_watermark}")]
    OffsetOutOfRange { offset: i64, high_watermark: i64 },
    #[error("the cluster layer has stopped")]
    Stopped,
}

/// Where an acknowledged append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub base_offset: i64,
    pub last_offset: i64,
}

pub type AppendReply = tokio::sync::oneshot::Sender<Result<Placed, AppendError>>;

/// A group as this broker sees it, published after every Raft round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// 0 while no leader is known.
    pub leader_id: u64,
    pub term: u64,
    pub is_leader: bool,
    pub high_watermark: i64,
    /// This broker leads and has applied an entry of its own term, so its
    /// high watermark is current. A leader just elected may still carry the
    /// one it saved at its last term change, which can be far behind.
    pub settled: bool,
}
