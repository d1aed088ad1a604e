//! Ferry's replication layer. It speaks no Kafka: it runs Raft groups
//! (raft-rs) over a transport of its own between brokers and keeps the
//! cluster's metadata (brokers, topics, replica placement, topic configs)
//! in one of them, KRaft's role.
//!
//! Why raft-rs rather than openraft: raft-rs is consensus only and lets
//! us drive its `Ready` loop, so one thread ticks every group, messages to
//! a peer are batched across groups onto one connection, and the log is
//! ours (a partition's segments will be its Raft log). openraft runs a core
//! task, per-follower replication tasks and timers for every group.

pub mod config;
mod driver;
mod error;
mod handle;
pub mod node;
pub mod partition;
mod slog_bridge;
pub mod reassign;
pub mod secret;
pub mod state;
mod transport;
pub mod wal;
pub mod wire;

pub use config::{ClusterConfig, Voter};
pub use driver::{QuorumInfo, VoterInfo};
pub use node::{LogStore, MetadataNode, NodeOptions};
pub use error::ClusterError;
pub use secret::ClusterSecret;
pub use handle::{Cluster, RaftStatus};
pub use state::{Applied, BrokerInfo, ClusterState, Command, PartitionLeader, SecurityStore, StateError, TopicPlacement, MAX_SECURITY_STORE_BYTES};

/// The metadata group's id on the wire. Partition groups will take others.
pub const METADATA_GROUP: u64 = 0;
