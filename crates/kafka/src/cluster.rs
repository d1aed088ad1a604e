//! What the Kafka front end asks of the cluster layer: which brokers exist,
//! who leads a partition, and metadata changes proposed to the metadata
//! group. Single-node brokers (`Context::cluster` is None) never get here.

use std::collections::BTreeMap;

use ferry_broker::StorageKind;
use ferry_cluster::{Applied, Cluster, ClusterError, Command, StateError};
use uuid::Uuid;

use crate::codes;
use crate::server::Context;

/// A partition's leader and its epoch (the Raft term of the partition's
/// group). This broker's own replica knows first; other brokers learn it
/// from the leader's report to the metadata group. Memory topics are not
/// replicated: their preferred replica leads, in epoch 0.
pub fn leader_of(ctx: &Context, cluster: &Cluster, topic: &str, partition: i32) -> Option<(u64, i32)> {
    let state = cluster.state();
    let (group, replicas) = state.partition(topic, partition)?;
    let replicated = ctx.engine.topic(topic).is_none_or(|t| t.storage() == StorageKind::Disk);
    if !replicated {
        return replicas.first().map(|id| (*id, 0));
    }
    let own = cluster.group_status(group);
    if let Some(s) = own.filter(|s| s.leader_id != 0) {
        return Some((s.leader_id, s.term as i32));
    }
    let reported = state.partition_leaders.get(&group).map(|l| (l.leader, l.epoch as i32));
    // The last report may name this broker from before its restart; its own
    // replica, knowing no leader yet, knows better.
    match (own, reported) {
        (Some(_), Some((leader, _))) if leader == cluster.node_id() => None,
        _ => reported,
    }
}

/// Like [`check_leader`], and OFFSET_NOT_AVAILABLE while the leader has not
/// applied an entry of its own term: its high watermark may be behind the
/// one clients were already given (Kafka answers ListOffsets so while a new
/// leader's high watermark has not reached its epoch's start).
pub fn check_leader_settled(ctx: &Context, topic: &str, partition: i32) -> Result<(), i16> {
    check_leader(ctx, topic, partition)?;
    let Some(cluster) = &ctx.cluster else { return Ok(()) };
    let Some((group, _)) = cluster.state().partition(topic, partition) else { return Ok(()) };
    match cluster.group_status(group) {
        Some(s) if s.is_leader && !s.settled => Err(codes::OFFSET_NOT_AVAILABLE),
        _ => Ok(()),
    }
}

/// The in-sync replicas the partition's leader last reported (Kafka's
/// ISR); None before any report (then every replica is listed).
pub fn in_sync(cluster: &Cluster, topic: &str, partition: i32) -> Option<Vec<u64>> {
    let state = cluster.state();
    let (group, _) = state.partition(topic, partition)?;
    state.partition_leaders.get(&group).map(|l| l.in_sync.clone()).filter(|ids| !ids.is_empty())
}

/// NOT_LEADER_OR_FOLLOWER when this broker does not lead the partition.
pub fn check_leader(ctx: &Context, topic: &str, partition: i32) -> Result<(), i16> {
    let Some(cluster) = &ctx.cluster else { return Ok(()) };
    if !cluster.state().topics.contains_key(topic) {
        return Err(codes::UNKNOWN_TOPIC_OR_PARTITION);
    }
    match leader_of(ctx, cluster, topic, partition) {
        Some((leader, _)) if leader == cluster.node_id() => Ok(()),
        _ => Err(codes::NOT_LEADER_OR_FOLLOWER),
    }
}

/// The metadata leader, or -1 while none is known or it has not registered
/// its Kafka endpoint yet: clients look the controller up among the
/// brokers listed, and librdkafka waits for one it cannot find until its
/// request times out.
pub fn controller_id(cluster: &Cluster) -> i32 {
    match cluster.status().leader_id {
        0 => -1,
        id if !cluster.state().brokers.contains_key(&id) => -1,
        id => id as i32,
    }
}

pub fn error_code(e: &ClusterError) -> i16 {
    match e {
        ClusterError::Refused(StateError::TopicAlreadyExists(_)) => codes::TOPIC_ALREADY_EXISTS,
        ClusterError::Refused(StateError::UnknownTopic(_)) => codes::UNKNOWN_TOPIC_OR_PARTITION,
        ClusterError::Refused(StateError::InvalidReplicationFactor(_)) => codes::INVALID_REPLICATION_FACTOR,
        ClusterError::Refused(StateError::InvalidPartitions(_)) => codes::INVALID_PARTITIONS,
        ClusterError::Refused(StateError::UnknownPartition(_)) => codes::UNKNOWN_TOPIC_OR_PARTITION,
        ClusterError::Refused(StateError::InvalidReplicaAssignment(_)) => codes::INVALID_REPLICA_ASSIGNMENT,
        ClusterError::Refused(StateError::NoReassignmentInProgress(_)) => codes::NO_REASSIGNMENT_IN_PROGRESS,
        ClusterError::Refused(StateError::SecurityStoreChanged { .. }) => codes::REQUEST_TIMED_OUT,
        ClusterError::Refused(StateError::SecurityStoreTooLarge(_)) => codes::POLICY_VIOLATION,
        ClusterError::NoLeader(_) | ClusterError::Stopped => codes::NOT_CONTROLLER,
        ClusterError::Timeout(_) => codes::REQUEST_TIMED_OUT,
        ClusterError::TooManyPending(_) => codes::THROTTLING_QUOTA_EXCEEDED,
        ClusterError::Storage(_) | ClusterError::Config(_) => codes::UNKNOWN_SERVER_ERROR,
    }
}

/// Proposes a topic; answers once this broker applied it.
pub async fn create_topic(
    cluster: &Cluster,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
) -> Result<Uuid, (i16, String)> {
    let id = Uuid::new_v4();
    let command = Command::CreateTopic { name: name.to_string(), id, partitions, replication_factor, configs };
    match cluster.propose(command).await {
        Ok(Applied::TopicCreated(p)) => Ok(p.id),
        Ok(Applied::Done) => Ok(id),
        Err(e) => Err((error_code(&e), e.to_string())),
    }
}

pub async fn propose(cluster: &Cluster, command: Command) -> Result<(), (i16, String)> {
    cluster.propose(command).await.map(|_| ()).map_err(|e| (error_code(&e), e.to_string()))
}

/// The broker that coordinates every group and transaction: this one alone,
/// or on a cluster the registered broker with the lowest node id, until
/// coordinators move into replicated internal topics.
pub fn coordinator(ctx: &Context) -> Option<(i32, String, i32)> {
    let Some(cluster) = &ctx.cluster else {
        return Some((ctx.engine.config.node_id, ctx.config.advertised_host.clone(), ctx.config.advertised_port));
    };
    let state = cluster.state();
    let (id, broker) = state.brokers.iter().next()?;
    Some((*id as i32, broker.host.clone(), broker.port))
}

/// Does this broker hold a replica of the partition? Always on a single
/// node; on a cluster, when the placement names it (or a move's target).
pub fn holds_replica(ctx: &Context, topic: &str, partition: i32) -> bool {
    let Some(cluster) = &ctx.cluster else { return true };
    cluster.state().replica_set(topic, partition).is_some_and(|s| s.replicas.contains(&cluster.node_id()))
}

/// A partition leader's id, epoch and Kafka endpoint, for KIP-951's
/// CurrentLeader and NodeEndpoints: a client told NOT_LEADER_OR_FOLLOWER
/// goes straight to the leader instead of refreshing all its metadata first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEndpoint {
    pub id: i32,
    pub epoch: i32,
    pub host: String,
    pub port: i32,
}

pub fn leader_endpoint(ctx: &Context, topic: &str, partition: i32) -> Option<LeaderEndpoint> {
    let cluster = ctx.cluster.as_ref()?;
    let (id, epoch) = leader_of(ctx, cluster, topic, partition)?;
    endpoint(cluster, id, epoch)
}

/// The Kafka endpoint of broker `id`, named as the leader in `epoch`.
pub fn endpoint(cluster: &Cluster, id: u64, epoch: i32) -> Option<LeaderEndpoint> {
    let state = cluster.state();
    let broker = state.brokers.get(&id)?;
    Some(LeaderEndpoint { id: id as i32, epoch, host: broker.host.clone(), port: broker.port })
}
