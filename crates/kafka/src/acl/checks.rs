//! The checks Kafka's request handlers make (KafkaApis), one function per
//! API family. [`refuse`] answers a request refused whole (a group, a
//! transactional id or the cluster it may not use) before any handler
//! runs; the per-resource checks are single calls from the handlers.

use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::*;

use super::{cluster, group, idempotent_write, topic, transactional_id, Op};
use crate::codes::{CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED};
use crate::handlers::str_bytes;
use crate::server::Context;

const GROUP: i16 = GROUP_AUTHORIZATION_FAILED;
const TXN: i16 = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
const CLUSTER: i16 = CLUSTER_AUTHORIZATION_FAILED;

/// Produce to one topic: WRITE on the transactional id of a transactional
/// producer, then WRITE on the topic. (An idempotent producer proved its
/// right at InitProducerId, as in Kafka 3+.)
pub fn produce(ctx: &Context, transactional: Option<&str>, name: &str) -> Option<(i16, String)> {
    if let Some(id) = transactional.filter(|_| super::enabled(ctx)) {
        if !transactional_id(ctx, Op::Write, id) {
            return Some((TXN, format!("Transactional id authorization failed: {id}")));
        }
    }
    (!topic(ctx, Op::Write, name)).then(|| (TOPIC_AUTHORIZATION_FAILED, format!("Topic authorization failed: {name}")))
}

/// The whole answer to a request the principal may not make at all, or
/// the request back to be handled. Per-resource checks happen later.
pub fn refuse(ctx: &Context, body: RequestKind) -> Result<RequestKind, Box<ResponseKind>> {
    if !super::enabled(ctx) {
        return Ok(body);
    }
    let g = |id: &str| group(ctx, Op::Read, id);
    let refused: Option<ResponseKind> = match &body {
        RequestKind::JoinGroup(r) if !g(&r.group_id) => Some(JoinGroupResponse::default().with_error_code(GROUP).with_generation_id(-1).into()),
        RequestKind::SyncGroup(r) if !g(&r.group_id) => Some(SyncGroupResponse::default().with_error_code(GROUP).into()),
        RequestKind::Heartbeat(r) if !g(&r.group_id) => Some(HeartbeatResponse::default().with_error_code(GROUP).into()),
        RequestKind::LeaveGroup(r) if !g(&r.group_id) => Some(LeaveGroupResponse::default().with_error_code(GROUP).into()),
        RequestKind::OffsetDelete(r) if !group(ctx, Op::Delete, &r.group_id) => Some(OffsetDeleteResponse::default().with_error_code(GROUP).into()),
        RequestKind::OffsetCommit(r) if !g(&r.group_id) => Some(offset_commit_refused(r, GROUP).into()),
        RequestKind::OffsetFetch(r) => offset_fetch(ctx, r),
        RequestKind::FindCoordinator(r) => find_coordinator(ctx, r),
        RequestKind::InitProducerId(r) => init_producer_id(ctx, r),
        RequestKind::AddPartitionsToTxn(r) => add_partitions(ctx, r),
        RequestKind::AddOffsetsToTxn(r) if !transactional_id(ctx, Op::Write, &r.transactional_id) => {
            Some(AddOffsetsToTxnResponse::default().with_error_code(TXN).into())
        }
        RequestKind::AddOffsetsToTxn(r) if !g(&r.group_id) => Some(AddOffsetsToTxnResponse::default().with_error_code(GROUP).into()),
        RequestKind::EndTxn(r) if !transactional_id(ctx, Op::Write, &r.transactional_id) => Some(EndTxnResponse::default().with_error_code(TXN).into()),
        RequestKind::TxnOffsetCommit(r) if !transactional_id(ctx, Op::Write, &r.transactional_id) => Some(txn_offset_commit_refused(r, TXN).into()),
        RequestKind::TxnOffsetCommit(r) if !g(&r.group_id) => Some(txn_offset_commit_refused(r, GROUP).into()),
        RequestKind::DescribeCluster(_) if !cluster(ctx, Op::Describe) => {
            Some(DescribeClusterResponse::default().with_error_code(CLUSTER).with_controller_id(BrokerId(-1)).into())
        }
        RequestKind::DescribeLogDirs(_) if !cluster(ctx, Op::Describe) => Some(DescribeLogDirsResponse::default().with_error_code(CLUSTER).into()),
        RequestKind::DescribeQuorum(_) if !cluster(ctx, Op::Describe) => Some(DescribeQuorumResponse::default().with_error_code(CLUSTER).into()),
        RequestKind::DescribeUserScramCredentials(_) if !cluster(ctx, Op::Describe) => {
            Some(DescribeUserScramCredentialsResponse::default().with_error_code(CLUSTER).into())
        }
        RequestKind::AlterUserScramCredentials(r) if !cluster(ctx, Op::Alter) => Some(alter_users_refused(r).into()),
        // Kafka: DESCRIBE_CONFIGS / ALTER_CONFIGS on the cluster.
        RequestKind::DescribeClientQuotas(_) if !cluster(ctx, Op::DescribeConfigs) => Some(
            DescribeClientQuotasResponse::default()
                .with_error_code(CLUSTER)
                .with_error_message(Some(str_bytes("Cluster authorization failed."))).into(),
        ),
        RequestKind::AlterClientQuotas(r) if !cluster(ctx, Op::AlterConfigs) => Some(alter_quotas_refused(r).into()),
        RequestKind::WriteTxnMarkers(r) if !cluster(ctx, Op::ClusterAction) => Some(crate::handlers::markers::refused(r, CLUSTER).into()),
        RequestKind::ElectLeaders(r) if !cluster(ctx, Op::Alter) => Some(crate::handlers::elect::refused(r, CLUSTER).into()),
        RequestKind::AlterPartitionReassignments(r) if !cluster(ctx, Op::Alter) => Some(crate::handlers::reassign::alter_refused(r, CLUSTER).into()),
        RequestKind::ListPartitionReassignments(_) if !cluster(ctx, Op::Describe) => {
            Some(ListPartitionReassignmentsResponse::default().with_error_code(CLUSTER).into())
        }
        _ => None,
    };
    match refused {
        Some(answer) => Err(Box::new(answer)),
        None => Ok(body),
    }
}

fn offset_commit_refused(r: &OffsetCommitRequest, code: i16) -> OffsetCommitResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t.partitions.iter().map(|p| OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code));
            OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_topic_id(t.topic_id).with_partitions(partitions.collect())
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

fn txn_offset_commit_refused(r: &TxnOffsetCommitRequest, code: i16) -> TxnOffsetCommitResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t.partitions.iter().map(|p| TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code));
            TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions.collect())
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// OffsetFetch: DESCRIBE on the group (one group before v8; v8 asks
/// several, and refusing any refuses the request here, a simplification).
fn offset_fetch(ctx: &Context, r: &OffsetFetchRequest) -> Option<ResponseKind> {
    if r.groups.is_empty() {
        return (!group(ctx, Op::Describe, &r.group_id)).then(|| OffsetFetchResponse::default().with_error_code(GROUP).into());
    }
    if r.groups.iter().all(|x| group(ctx, Op::Describe, &x.group_id)) {
        return None;
    }
    let groups = r.groups.iter().map(|x| {
        let code = if group(ctx, Op::Describe, &x.group_id) { crate::codes::NONE } else { GROUP };
        OffsetFetchResponseGroup::default().with_group_id(x.group_id.clone()).with_error_code(code)
    });
    Some(OffsetFetchResponse::default().with_groups(groups.collect()).into())
}

/// FindCoordinator: DESCRIBE on the group (key type 0) or the transactional id (1).
fn find_coordinator(ctx: &Context, r: &FindCoordinatorRequest) -> Option<ResponseKind> {
    let allowed = |key: &str| match r.key_type {
        0 => group(ctx, Op::Describe, key),
        1 => transactional_id(ctx, Op::Describe, key),
        _ => true,
    };
    let code = if r.key_type == 0 { GROUP } else { TXN };
    if r.coordinator_keys.is_empty() {
        return (!allowed(&r.key)).then(|| FindCoordinatorResponse::default().with_error_code(code).with_node_id(BrokerId(-1)).with_port(-1).into());
    }
    if r.coordinator_keys.iter().all(|k| allowed(k)) {
        return None;
    }
    // v4 batches keys; a refused one refuses the request here (clients send one).
    let coordinators = r.coordinator_keys.iter().map(|k| Coordinator::default().with_key(k.clone()).with_node_id(BrokerId(-1)).with_port(-1).with_error_code(code));
    Some(FindCoordinatorResponse::default().with_coordinators(coordinators.collect()).into())
}

/// InitProducerId: WRITE on the transactional id, or for an idempotent
/// producer IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
fn init_producer_id(ctx: &Context, r: &InitProducerIdRequest) -> Option<ResponseKind> {
    let code = match &r.transactional_id {
        Some(id) if !transactional_id(ctx, Op::Write, id) => TXN,
        None if !idempotent_write(ctx) => CLUSTER,
        _ => return None,
    };
    Some(InitProducerIdResponse::default().with_error_code(code).with_producer_id(ProducerId(-1)).with_producer_epoch(-1).into())
}

/// AddPartitionsToTxn: WRITE on the transactional id, then WRITE on every
/// topic; any refusal fails every partition (the others with
/// OPERATION_NOT_ATTEMPTED), as Kafka answers.
fn add_partitions(ctx: &Context, r: &AddPartitionsToTxnRequest) -> Option<ResponseKind> {
    let v3 = r.transactions.is_empty();
    let txns: Vec<(&TransactionalId, &Vec<add_partitions_to_txn_request::AddPartitionsToTxnTopic>)> = if v3 {
        vec![(&r.v3_and_below_transactional_id, &r.v3_and_below_topics)]
    } else {
        r.transactions.iter().map(|t| (&t.transactional_id, &t.topics)).collect()
    };
    let results: Vec<(TransactionalId, Vec<AddPartitionsToTxnTopicResult>, bool)> = txns
        .into_iter()
        .map(|(id, topics)| {
            let txn_ok = transactional_id(ctx, Op::Write, id);
            let denied: Vec<bool> = topics.iter().map(|t| !topic(ctx, Op::Write, &t.name)).collect();
            let refused = !txn_ok || denied.iter().any(|d| *d);
            let results = topics
                .iter()
                .zip(&denied)
                .map(|(t, denied)| {
                    let code = match (txn_ok, denied) {
                        (false, _) => TXN,
                        (true, true) => TOPIC_AUTHORIZATION_FAILED,
                        (true, false) => crate::codes::OPERATION_NOT_ATTEMPTED,
                    };
                    let parts = t.partitions.iter().map(|p| AddPartitionsToTxnPartitionResult::default().with_partition_index(*p).with_partition_error_code(code));
                    AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(parts.collect())
                })
                .collect();
            (id.clone(), results, refused)
        })
        .collect();
    if !results.iter().any(|(_, _, refused)| *refused) {
        return None;
    }
    if v3 {
        let (_, topics, _) = results.into_iter().next()?;
        return Some(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics).into());
    }
    let by_txn = results.into_iter().map(|(id, topics, _)| AddPartitionsToTxnResult::default().with_transactional_id(id).with_topic_results(topics));
    Some(AddPartitionsToTxnResponse::default().with_results_by_transaction(by_txn.collect()).into())
}

fn alter_users_refused(r: &AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    let mut users: Vec<String> = r.deletions.iter().map(|d| d.name.to_string()).chain(r.upsertions.iter().map(|u| u.name.to_string())).collect();
    users.sort();
    users.dedup();
    let results = users.into_iter().map(|u| {
        AlterUserScramCredentialsResult::default()
            .with_user(str_bytes(u))
            .with_error_code(CLUSTER)
            .with_error_message(Some(str_bytes("Cluster authorization failed: ALTER on the cluster is not allowed")))
    });
    AlterUserScramCredentialsResponse::default().with_results(results.collect())
}

/// Describe/AlterConfigs on a topic (type 2) or the broker (type 4, checked
/// on the cluster): the refusal's code, if refused.
pub fn configs(ctx: &Context, resource_type: i8, name: &str, op: Op) -> Option<i16> {
    match resource_type {
        2 if !topic(ctx, op, name) => Some(TOPIC_AUTHORIZATION_FAILED),
        4 if !cluster(ctx, op) => Some(CLUSTER),
        _ => None,
    }
}

fn alter_quotas_refused(r: &AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
    let entries = r.entries.iter().map(|e| {
        let entity = e.entity.iter().map(|p| EntityData::default().with_entity_type(p.entity_type.clone()).with_entity_name(p.entity_name.clone()));
        EntryData::default().with_entity(entity.collect()).with_error_code(CLUSTER).with_error_message(Some(str_bytes("Cluster authorization failed.")))
    });
    AlterClientQuotasResponse::default().with_entries(entries.collect())
}
