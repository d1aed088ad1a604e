//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455,
//! `kafka-reassign-partitions.sh`). A move is recorded in the metadata
//! group; the partition's leader carries it out through Raft membership
//! changes (new replicas catch up as learners first) and reports when the
//! voters are the target, which ends the move. A null replica list cancels
//! a move: the replicas go back to where they were.

use std::collections::BTreeMap;

use ferry_broker::StorageKind;
use ferry_cluster::Command;
use kafka_protocol::messages::alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse};
use kafka_protocol::messages::list_partition_reassignments_response::{OngoingPartitionReassignment, OngoingTopicReassignment};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};

use super::str_bytes;
use crate::codes;
use crate::server::Context;

type Outcome = (i16, Option<String>);

pub async fn alter(ctx: &Context, req: AlterPartitionReassignmentsRequest) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::new();
    for topic in &req.topics {
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let target = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0 as i64 as u64).collect::<Vec<u64>>());
            let (code, message) = alter_one(ctx, &topic.name, p.partition_index, target, req.allow_replication_factor_change).await;
            partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_error_message(message.map(str_bytes)),
            );
        }
        responses.push(ReassignableTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions));
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

async fn alter_one(ctx: &Context, topic: &TopicName, partition: i32, target: Option<Vec<u64>>, allow_factor_change: bool) -> Outcome {
    let name = topic.as_str();
    let Some(cluster) = &ctx.cluster else { return single_node(ctx, name, partition, target) };
    let state = cluster.state();
    if state.replica_set(name, partition).is_none() {
        return (codes::UNKNOWN_TOPIC_OR_PARTITION, Some(format!("{name}-{partition} does not exist")));
    };
    if ctx.engine.topic(name).is_some_and(|t| t.storage() != StorageKind::Disk) {
        return (codes::INVALID_REPLICA_ASSIGNMENT, Some("memory topics are not replicated, so their replicas cannot move".into()));
    }
    if let Some(target) = &target {
        let current = state.topics.get(name).and_then(|t| t.replicas.get(partition as usize)).map_or(0, Vec::len);
        if !allow_factor_change && target.len() != current {
            return (codes::INVALID_REPLICATION_FACTOR, Some(format!("the move changes the replication factor from {current} to {}", target.len())));
        }
    }
    drop(state);
    let command = Command::ReassignPartition { name: name.to_string(), partition, target };
    match crate::cluster::propose(cluster, command).await {
        Ok(()) => (codes::NONE, None),
        Err((code, message)) => (code, Some(message)),
    }
}

/// One broker: its partitions already sit where a move could put them.
fn single_node(ctx: &Context, name: &str, partition: i32, target: Option<Vec<u64>>) -> Outcome {
    if !ctx.engine.topic(name).is_some_and(|t| (0..t.partition_count()).contains(&partition)) {
        return (codes::UNKNOWN_TOPIC_OR_PARTITION, Some(format!("{name}-{partition} does not exist")));
    }
    let me = ctx.engine.config.node_id as i64 as u64;
    match target {
        None => (codes::NO_REASSIGNMENT_IN_PROGRESS, Some(format!("{name}-{partition} is not being reassigned"))),
        Some(t) if t == [me] => (codes::NONE, None),
        Some(t) => (codes::INVALID_REPLICA_ASSIGNMENT, Some(format!("replicas {t:?}: this single broker is node {me}"))),
    }
}

pub fn list(ctx: &Context, req: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    let Some(cluster) = &ctx.cluster else { return ListPartitionReassignmentsResponse::default() };
    let state = cluster.state();
    let asked: Option<BTreeMap<&str, &[i32]>> = req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.as_str(), t.partition_indexes.as_slice())).collect());
    let mut topics = Vec::new();
    for (name, placement) in &state.topics {
        let wanted = |p: i32| asked.as_ref().is_none_or(|a| a.get(name.as_str()).is_some_and(|ps| ps.contains(&p)));
        let partitions: Vec<OngoingPartitionReassignment> = placement
            .moving
            .iter()
            .filter(|(p, _)| wanted(**p))
            .map(|(p, m)| {
                let ids = |v: Vec<u64>| v.into_iter().map(|id| BrokerId(id as i32)).collect::<Vec<_>>();
                OngoingPartitionReassignment::default()
                    .with_partition_index(*p)
                    .with_replicas(ids(m.all()))
                    .with_adding_replicas(ids(m.adding()))
                    .with_removing_replicas(ids(m.removing()))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(OngoingTopicReassignment::default().with_name(TopicName(str_bytes(name.clone()))).with_partitions(partitions));
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// The answer when the caller may not alter the cluster.
pub fn alter_refused(req: &AlterPartitionReassignmentsRequest, code: i16) -> AlterPartitionReassignmentsResponse {
    AlterPartitionReassignmentsResponse::default().with_error_code(code).with_responses(
        req.topics
            .iter()
            .map(|t| {
                let partitions = t.partitions.iter().map(|p| ReassignablePartitionResponse::default().with_partition_index(p.partition_index).with_error_code(code)).collect();
                ReassignableTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions)
            })
            .collect(),
    )
}
