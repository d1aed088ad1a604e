//! InitProducerId and the transaction APIs, over the engine's transaction
//! coordinator; DescribeTransactions, ListTransactions, DescribeProducers.

use ferry_broker::group::CommittedOffset;
use ferry_broker::txn::TxnError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use super::str_bytes;
use crate::codes;
use crate::server::Context;

/// The Kafka error code for a coordinator refusal. Fencing is
/// INVALID_PRODUCER_EPOCH before the API versions that know PRODUCER_FENCED.
pub fn code(e: &TxnError, fenced_known: bool) -> i16 {
    match e {
        TxnError::InvalidTransactionTimeout(_) => codes::INVALID_TRANSACTION_TIMEOUT,
        TxnError::InvalidProducerIdMapping => codes::INVALID_PRODUCER_ID_MAPPING,
        TxnError::ProducerFenced if fenced_known => codes::PRODUCER_FENCED,
        TxnError::ProducerFenced => codes::INVALID_PRODUCER_EPOCH,
        TxnError::InvalidTxnState(_) => codes::INVALID_TXN_STATE,
        TxnError::ConcurrentTransactions => codes::CONCURRENT_TRANSACTIONS,
        TxnError::UnknownTopicOrPartition(..) => codes::UNKNOWN_TOPIC_OR_PARTITION,
        TxnError::Group(g) => codes::for_group_error(g),
        TxnError::Storage(_) => codes::COORDINATOR_NOT_AVAILABLE,
        TxnError::LimitReached(_) => codes::POLICY_VIOLATION,
        // Retriable for EndTxn and InitProducerId in every client: the
        // retry finds the transaction still Prepare* and completes it.
        TxnError::MarkersPending(_) => codes::CONCURRENT_TRANSACTIONS,
    }
}

pub async fn init_producer_id(ctx: &Context, req: InitProducerIdRequest, version: i16) -> InitProducerIdResponse {
    let fail = |c: i16| InitProducerIdResponse::default().with_error_code(c).with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    match req.transactional_id {
        None => {
            // Idempotent producer. A KIP-360 bump (id and epoch given) keeps the id.
            if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
                return InitProducerIdResponse::default().with_producer_id(req.producer_id).with_producer_epoch(req.producer_epoch + 1);
            }
            match ctx.engine.txns.producer_ids.allocate() {
                Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
                Err(e) => {
                    tracing::warn!(error = %e, "producer id allocation failed");
                    fail(codes::COORDINATOR_NOT_AVAILABLE)
                }
            }
        }
        Some(tid) if tid.is_empty() => fail(codes::INVALID_REQUEST),
        Some(tid) => {
            let hint = (version >= 3 && req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
            match ctx.engine.txns.init_producer(&ctx.engine, tid.as_str(), req.transaction_timeout_ms, hint).await {
                Ok((pid, epoch)) => InitProducerIdResponse::default().with_producer_id(ProducerId(pid)).with_producer_epoch(epoch),
                Err(e) => fail(code(&e, version >= 4)),
            }
        }
    }
}

pub async fn add_partitions(ctx: &Context, req: AddPartitionsToTxnRequest, version: i16) -> AddPartitionsToTxnResponse {
    // v0–3: one transaction at the top level; v4+ (between brokers): a
    // batch of them, each maybe only a partition leader's verification.
    let transactions: Vec<(TransactionalId, i64, i16, bool, Vec<(TopicName, Vec<i32>)>)> = if version <= 3 {
        vec![(
            req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            false,
            req.v3_and_below_topics.into_iter().map(|t| (t.name, t.partitions)).collect(),
        )]
    } else {
        req.transactions
            .into_iter()
            .map(|t| (t.transactional_id, t.producer_id.0, t.producer_epoch, t.verify_only, t.topics.into_iter().map(|t| (t.name, t.partitions)).collect()))
            .collect()
    };
    let mut results = Vec::new();
    for (tid, pid, epoch, verify_only, topics) in transactions {
        let wanted: Vec<(String, i32)> =
            topics.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.to_string(), *p))).collect();
        let mut verified: Vec<((String, i32), Result<(), TxnError>)> = Vec::new();
        if verify_only {
            for (t, p) in &wanted {
                verified.push(((t.clone(), *p), ctx.engine.txns.verify_partition(tid.as_str(), pid, epoch, t, *p).await));
            }
        }
        let outcome = if verify_only { Ok(()) } else { ctx.engine.txns.add_partitions(&ctx.engine, tid.as_str(), pid, epoch, &wanted).await };
        let per_partition = |t: &str, p: i32| -> i16 {
            if let Some((_, answer)) = verified.iter().find(|((vt, vp), _)| vt == t && *vp == p) {
                return answer.as_ref().err().map_or(codes::NONE, |e| code(e, true));
            }
            match &outcome {
                Ok(()) => codes::NONE,
                Err(TxnError::UnknownTopicOrPartition(ut, up)) if ut == t && *up == p => codes::UNKNOWN_TOPIC_OR_PARTITION,
                Err(TxnError::UnknownTopicOrPartition(..)) => codes::OPERATION_NOT_ATTEMPTED,
                Err(e) => code(e, version >= 2),
            }
        };
        let topic_results = topics
            .iter()
            .map(|(name, parts)| {
                AddPartitionsToTxnTopicResult::default().with_name(name.clone()).with_results_by_partition(
                    parts
                        .iter()
                        .map(|p| AddPartitionsToTxnPartitionResult::default().with_partition_index(*p).with_partition_error_code(per_partition(name.as_str(), *p)))
                        .collect(),
                )
            })
            .collect::<Vec<_>>();
        results.push((tid, topic_results));
    }
    if version <= 3 {
        let (_, topic_results) = results.pop().unwrap_or_else(|| (TransactionalId::default(), Vec::new()));
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topic_results);
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(
        results
            .into_iter()
            .map(|(tid, topic_results)| AddPartitionsToTxnResult::default().with_transactional_id(tid).with_topic_results(topic_results))
            .collect(),
    )
}

pub async fn add_offsets(ctx: &Context, req: AddOffsetsToTxnRequest, version: i16) -> AddOffsetsToTxnResponse {
    let r = ctx.engine.txns.add_offsets(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, req.group_id.as_str()).await;
    AddOffsetsToTxnResponse::default().with_error_code(r.err().map_or(codes::NONE, |e| code(&e, version >= 2)))
}

pub async fn txn_offset_commit(ctx: &Context, req: TxnOffsetCommitRequest, version: i16) -> TxnOffsetCommitResponse {
    let group = req.group_id.to_string();
    // KIP-447: a consumer's generation and member id fence zombie producers
    // of consume-transform-produce loops.
    let check = if version >= 3 && (req.generation_id >= 0 || !req.member_id.is_empty()) {
        ctx.engine
            .groups
            .check_commit(&group, req.generation_id, req.member_id.as_str(), req.group_instance_id.as_ref().map(|s| s.as_str()))
            .map_err(TxnError::Group)
    } else {
        Ok(())
    };
    let now = ferry_broker::now_ms();
    let mut offsets = Vec::new();
    let mut unknown = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            if ctx.engine.topic(t.name.as_str()).and_then(|topic| topic.partition(p.partition_index)).is_none() {
                unknown.push((t.name.to_string(), p.partition_index));
                continue;
            }
            offsets.push((
                (t.name.to_string(), p.partition_index),
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_ms: now,
                },
            ));
        }
    }
    let result = match check {
        Err(e) => Err(e),
        Ok(()) => ctx.engine.txns.add_offset_commits(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, &group, offsets).await,
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.to_string();
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let c = if unknown.contains(&(name.clone(), p.partition_index)) {
                        codes::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        result.as_ref().err().map_or(codes::NONE, |e| code(e, version >= 3))
                    };
                    TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(c)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub async fn end_txn(ctx: &Context, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let r = ctx.engine.txns.end_txn(&ctx.engine, req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, req.committed).await;
    if let Err(e) = &r {
        tracing::debug!(transactional_id = %req.transactional_id.as_str(), error = %e, "EndTxn refused");
    }
    EndTxnResponse::default().with_error_code(r.err().map_or(codes::NONE, |e| code(&e, version >= 2)))
}

pub async fn describe_transactions(ctx: &Context, req: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let all = ctx.engine.txns.snapshot().await;
    let states = req
        .transactional_ids
        .into_iter()
        .map(|tid| match all.iter().find(|m| m.transactional_id == tid.as_str()) {
            None => TransactionState::default().with_transactional_id(tid).with_error_code(codes::TRANSACTIONAL_ID_NOT_FOUND),
            Some(m) => {
                let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                for (t, p) in &m.partitions {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
                TransactionState::default()
                    .with_transactional_id(tid)
                    .with_transaction_state(str_bytes(m.state.kafka_name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.txn_start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.epoch)
                    .with_topics(by_topic.into_iter().map(|(t, ps)| TopicData::default().with_topic(TopicName(str_bytes(t))).with_partitions(ps)).collect())
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub async fn list_transactions(ctx: &Context, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let now = ferry_broker::now_ms();
    let states: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    let list = ctx
        .engine
        .txns
        .snapshot()
        .await
        .into_iter()
        .filter(|m| states.is_empty() || states.iter().any(|s| s == m.state.kafka_name()))
        .filter(|m| req.producer_id_filters.is_empty() || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id))
        .filter(|m| req.duration_filter < 0 || (m.txn_start_ms >= 0 && now - m.txn_start_ms >= req.duration_filter))
        .map(|m| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.kafka_name()))
        })
        .collect();
    ListTransactionsResponse::default().with_transaction_states(list)
}

pub fn describe_producers(ctx: &Context, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = ctx.engine.topic(t.name.as_str());
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(|p| match topic.as_ref().and_then(|tp| tp.partition(p)) {
                    None => PartitionResponse::default().with_partition_index(p).with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(partition) => PartitionResponse::default().with_partition_index(p).with_active_producers(
                        partition
                            .producers()
                            .into_iter()
                            .map(|s| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(s.producer_id))
                                    .with_producer_epoch(s.epoch as i32)
                                    .with_last_sequence(s.last_sequence)
                                    .with_last_timestamp(s.last_update_ms)
                                    .with_coordinator_epoch(0)
                                    .with_current_txn_start_offset(s.txn_first_offset.unwrap_or(-1))
                            })
                            .collect(),
                    ),
                })
                .collect();
            TopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
