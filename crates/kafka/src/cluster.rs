//! What the Kafka front end asks of the cluster layer: which brokers exist,
//! who leads a partition, and metadata changes proposed to the metadata
//! group. Single-node brokers (`Context::cluster` is None) never get here.

use std::collections::BTreeMap;

use ferry_cluster::{Applied, Cluster, ClusterError, Command, StateError};
use uuid::Uuid;

use crate::codes;
use crate::server::Context;

/// A partition's leader, while partitions are not replicated yet: the
/// preferred (first) replica the metadata group placed it on.
pub fn leader_of(cluster: &Cluster, topic: &str, partition: i32) -> Option<i32> {
    cluster.state().preferred_leader(topic, partition).map(|id| id as i32)
}

/// NOT_LEADER_OR_FOLLOWER when this broker does not lead the partition.
pub fn check_leader(ctx: &Context, topic: &str, partition: i32) -> Result<(), i16> {
    let Some(cluster) = &ctx.cluster else { return Ok(()) };
    match leader_of(cluster, topic, partition) {
        Some(leader) if leader as u64 == cluster.node_id() => Ok(()),
        Some(_) => Err(codes::NOT_LEADER_OR_FOLLOWER),
        None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
    }
}

/// The metadata leader, or -1 while none is known.
pub fn controller_id(cluster: &Cluster) -> i32 {
    match cluster.status().leader_id {
        0 => -1,
        id => id as i32,
    }
}

pub fn error_code(e: &ClusterError) -> i16 {
    match e {
        ClusterError::Refused(StateError::TopicAlreadyExists(_)) => codes::TOPIC_ALREADY_EXISTS,
        ClusterError::Refused(StateError::UnknownTopic(_)) => codes::UNKNOWN_TOPIC_OR_PARTITION,
        ClusterError::Refused(StateError::InvalidReplicationFactor(_)) => codes::INVALID_REPLICATION_FACTOR,
        ClusterError::Refused(StateError::InvalidPartitions(_)) => codes::INVALID_PARTITIONS,
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
/// node; on a cluster, when the placement names it.
pub fn holds_replica(ctx: &Context, topic: &str, partition: i32) -> bool {
    let Some(cluster) = &ctx.cluster else { return true };
    let state = cluster.state();
    let replicas = state.topics.get(topic).and_then(|t| t.replicas.get(usize::try_from(partition).ok()?).cloned());
    replicas.is_some_and(|r| r.contains(&cluster.node_id()))
}

/// A partition leader's id and Kafka endpoint, for KIP-951's CurrentLeader
/// and NodeEndpoints: a client told NOT_LEADER_OR_FOLLOWER goes straight
/// to the leader instead of refreshing all its metadata first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEndpoint {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

pub fn leader_endpoint(ctx: &Context, topic: &str, partition: i32) -> Option<LeaderEndpoint> {
    let cluster = ctx.cluster.as_ref()?;
    let state = cluster.state();
    let id = state.preferred_leader(topic, partition)?;
    let broker = state.brokers.get(&id)?;
    Some(LeaderEndpoint { id: id as i32, host: broker.host.clone(), port: broker.port })
}
