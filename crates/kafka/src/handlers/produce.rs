//! Produce: validate every batch, append, then keep the acks promise:
//! acks=0 answers nothing, acks=1 answers once the write reached the OS,
//! acks=all answers only after fsync (shared through group commit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_broker::{now_ms, EngineError, Partition};
use ferry_cluster::partition::{AppendError, Placed, ReplicaError};
use tokio::sync::oneshot;
use ferry_log::batch::{set_log_append_time, split_and_validate, BatchHeader};
use ferry_log::records::{decode_records, has_keyless_record, recompress_batch, records_section};
use futures::future::join_all;
use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::cluster::LeaderEndpoint;
use crate::codes;
use crate::server::Context;

pub enum Outcome {
    Respond(ProduceResponse),
    Silent,
    Close(String),
}

/// One partition's result while the request is being worked on.
struct PartResult {
    index: i32,
    error: Option<(i16, String)>,
    base_offset: i64,
    log_start_offset: i64,
    /// The broker's append time on a LogAppendTime topic, else -1.
    log_append_time_ms: i64,
    /// For acks=all: the partition and the offset that must become durable.
    pending_sync: Option<(Arc<Partition>, i64)>,
    /// A replicated partition's answer from its Raft group.
    pending_replica: Option<oneshot::Receiver<Result<Placed, AppendError>>>,
    /// With NOT_LEADER_OR_FOLLOWER: who leads (KIP-951).
    leader: Option<LeaderEndpoint>,
}

impl PartResult {
    fn failed(index: i32, code: i16, message: String) -> PartResult {
        PartResult {
            index,
            error: Some((code, message)),
            base_offset: -1,
            log_start_offset: -1,
            log_append_time_ms: -1,
            pending_sync: None,
            pending_replica: None,
            leader: None,
        }
    }
}

/// A produce request whose batches are appended, waiting for its promise.
pub struct Appended {
    cluster: Option<Arc<ferry_cluster::Cluster>>,
    acks: i16,
    timeout: Duration,
    topics: Vec<(kafka_protocol::messages::TopicName, uuid::Uuid, Vec<PartResult>)>,
}

/// Validates and appends every partition's batches. Runs in the
/// connection's reader, in request order, so pipelined produces land in the
/// order they were sent; the wait for durability happens in [`finish`].
/// `refused`: partitions whose transactional batch the coordinator did not
/// confirm (see `markers::verify_transactional`), answered with that error.
pub fn append(ctx: &Context, req: ProduceRequest, version: i16, refused: &HashMap<(String, i32), (i16, String)>) -> Appended {
    let acks = req.acks;
    let mut topics: Vec<(kafka_protocol::messages::TopicName, uuid::Uuid, Vec<PartResult>)> = Vec::new();
    let mut any_appended = false;
    for topic_data in req.topic_data {
        let topic = if version >= 13 {
            ctx.engine.topic_by_id(topic_data.topic_id)
        } else {
            ctx.engine.topic(topic_data.name.as_str())
        };
        let name = topic.as_ref().map_or(topic_data.name.as_str(), |t| t.name.as_str());
        if let Some((code, message)) = crate::acl::checks::produce(ctx, req.transactional_id.as_deref().map(|s| s.as_str()), name) {
            let results = topic_data.partition_data.iter().map(|p| PartResult::failed(p.index, code, message.clone())).collect();
            topics.push((topic_data.name, topic_data.topic_id, results));
            continue;
        }
        let mut results = Vec::new();
        for p in topic_data.partition_data {
            let result = if !matches!(acks, 0 | 1 | -1) {
                PartResult::failed(p.index, codes::INVALID_REQUIRED_ACKS, format!("acks={acks} is not 0, 1 or -1"))
            } else {
                let leader_here = match &topic {
                    Some(t) => crate::cluster::check_leader(ctx, &t.name, p.index),
                    None => Ok(()),
                };
                match topic.as_ref().and_then(|t| t.partition(p.index).map(|part| (t, part))) {
                    _ if let Err(code) = leader_here => PartResult {
                        leader: topic.as_ref().and_then(|t| crate::cluster::leader_endpoint(ctx, &t.name, p.index)),
                        ..PartResult::failed(p.index, code, "this broker does not lead the partition".into())
                    },
                    None => PartResult::failed(p.index, codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic or partition".into()),
                    Some((topic, partition)) => {
                        let rules = {
                            let config = topic.config.read();
                            BatchRules {
                                max_message_bytes: config.max_message_bytes,
                                keys_required: config.log.compact,
                                log_append_time: config.log_append_time,
                                compression: config.compression,
                                timestamp_window_ms: (!config.log_append_time)
                                    .then_some((config.timestamp_before_max_ms, config.timestamp_after_max_ms)),
                            }
                        };
                        let now = now_ms();
                        let records = p.records.as_deref().unwrap_or(&[]);
                        // Nearly always empty: no key is built on the hot path then.
                        let refusal = if refused.is_empty() { None } else { refused.get(&(topic.name.clone(), p.index)) };
                        if let Some((code, message)) = refusal {
                            results.push(PartResult::failed(p.index, *code, message.clone()));
                            continue;
                        }
                        if partition.is_replicated() {
                            results.push(append_replicated(ctx, &partition, p.index, records, rules, now, acks));
                            continue;
                        }
                        match append_partition(&partition, records, rules, now) {
                            Ok(appended) => {
                                let info = appended.info;
                                any_appended |= !appended.duplicate;
                                PartResult {
                                    index: p.index,
                                    error: None,
                                    base_offset: info.base_offset,
                                    log_start_offset: info.log_start_offset,
                                    log_append_time_ms: if rules.log_append_time { now } else { -1 },
                                    pending_sync: (acks == -1).then(|| (partition.clone(), info.last_offset + 1)),
                                    pending_replica: None,
                                    leader: None,
                                }
                            }
                            Err(e) => PartResult::failed(p.index, codes::for_engine_error(&e), e.to_string()),
                        }
                    }
                }
            };
            results.push(result);
        }
        topics.push((topic_data.name, topic_data.topic_id, results));
    }
    if any_appended {
        ctx.engine.notify_data_arrived();
    }
    Appended { cluster: ctx.cluster.clone(), acks, timeout: Duration::from_millis(req.timeout_ms.max(0) as u64), topics }
}

/// Keeps the acks promise: nothing for acks=0, the answer at once for
/// acks=1, and after fsync (group commit) for acks=all.
pub async fn finish(appended: Appended) -> Outcome {
    let Appended { cluster, acks, timeout, mut topics } = appended;
    if acks == 0 {
        let failure = topics.iter().flat_map(|(_, _, r)| r).find_map(|r| r.error.clone());
        return match failure {
            Some((code, message)) => Outcome::Close(format!("acks=0 produce failed with error {code}: {message}")),
            None => Outcome::Silent,
        };
    }

    let replies = topics.iter_mut().flat_map(|(_, _, r)| r.iter_mut()).filter(|r| r.pending_replica.is_some()).map(|r| {
        let rx = r.pending_replica.take().expect("filtered");
        let cluster = cluster.clone();
        async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(placed))) => r.base_offset = placed.base_offset,
                Ok(Ok(Err(e))) => {
                    r.leader = not_leader_endpoint(cluster.as_deref(), &e);
                    r.error = Some(append_error(&e));
                }
                Ok(Err(_)) => r.error = Some((codes::NOT_LEADER_OR_FOLLOWER, "the cluster layer stopped".into())),
                Err(_) => r.error = Some((codes::REQUEST_TIMED_OUT, "not committed on a majority of replicas in time".into())),
            }
        }
    });
    join_all(replies).await;

    if acks == -1 {
        let waits = topics.iter_mut().flat_map(|(_, _, r)| r.iter_mut()).filter(|r| r.pending_sync.is_some()).map(|r| {
            let (partition, offset) = r.pending_sync.take().expect("filtered");
            async move {
                let outcome = match tokio::time::timeout(timeout, partition.wait_durable(offset)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some((codes::for_engine_error(&e), e.to_string())),
                    Err(_) => Some((codes::REQUEST_TIMED_OUT, EngineError::Timeout.to_string())),
                };
                if let Some(err) = outcome {
                    r.error = Some(err);
                    r.base_offset = -1;
                }
            }
        });
        join_all(waits).await;
    }

    let mut leaders: Vec<LeaderEndpoint> = Vec::new();
    let responses = topics
        .into_iter()
        .map(|(name, topic_id, results)| {
            TopicProduceResponse::default().with_name(name).with_topic_id(topic_id).with_partition_responses(
                results
                    .into_iter()
                    .map(|r| {
                        let (code, message) = r.error.map_or((codes::NONE, None), |(c, m)| (c, Some(m)));
                        let current_leader = match r.leader {
                            Some(l) => {
                                let id = LeaderIdAndEpoch::default().with_leader_id(BrokerId(l.id)).with_leader_epoch(l.epoch);
                                if !leaders.iter().any(|x| x.id == l.id) {
                                    leaders.push(l);
                                }
                                id
                            }
                            None => LeaderIdAndEpoch::default().with_leader_id(BrokerId(-1)).with_leader_epoch(-1),
                        };
                        PartitionProduceResponse::default()
                            .with_current_leader(current_leader)
                            .with_index(r.index)
                            .with_error_code(code)
                            .with_error_message(message.map(|m: String| -> StrBytes { str_bytes(m) }))
                            .with_base_offset(r.base_offset)
                            .with_log_append_time_ms(r.log_append_time_ms)
                            .with_log_start_offset(r.log_start_offset)
                    })
                    .collect(),
            )
        })
        .collect();
    let node_endpoints = leaders
        .into_iter()
        .map(|l| NodeEndpoint::default().with_node_id(BrokerId(l.id)).with_host(str_bytes(l.host)).with_port(l.port))
        .collect();
    Outcome::Respond(ProduceResponse::default().with_responses(responses).with_node_endpoints(node_endpoints))
}

/// What a topic's configs ask of an incoming batch.
#[derive(Clone, Copy)]
struct BatchRules {
    /// `max.message.bytes`
    max_message_bytes: usize,
    /// `cleanup.policy` includes `compact`: the cleaner would drop a
    /// keyless record anyway, so Kafka refuses it up front.
    keys_required: bool,
    /// `message.timestamp.type=LogAppendTime`
    log_append_time: bool,
    /// `compression.type` other than `producer`: the codec to store in.
    compression: Option<i16>,
    /// CreateTime topics: `message.timestamp.before.max.ms` and
    /// `message.timestamp.after.max.ms`.
    timestamp_window_ms: Option<(i64, i64)>,
}

/// Refuses a batch with a record timestamped too far behind or ahead of
/// `now_ms`, as Kafka does for CreateTime topics. The header's max
/// timestamp bounds the future side; the records are read only when the
/// past side is bounded (by default it is not), so the default costs no
/// decoding.
fn check_timestamps(batch: &[u8], header: &BatchHeader, now_ms: i64, (before_ms, after_ms): (i64, i64)) -> Result<(), EngineError> {
    let latest_allowed = now_ms.saturating_add(after_ms);
    let earliest_allowed = now_ms.saturating_sub(before_ms);
    let out_of_range = |ts: i64| {
        EngineError::InvalidTimestamp(format!("timestamp {ts} is out of range: it must be within [{earliest_allowed}, {latest_allowed}]"))
    };
    if header.max_timestamp > latest_allowed {
        return Err(out_of_range(header.max_timestamp));
    }
    if before_ms == i64::MAX {
        return Ok(());
    }
    let section = records_section(batch, header).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
    let records = decode_records(header, &section).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
    // -1 is "no timestamp", which Kafka does not check either.
    match records.iter().map(|r| r.timestamp).find(|ts| *ts != -1 && *ts < earliest_allowed) {
        Some(ts) => Err(out_of_range(ts)),
        None => Ok(()),
    }
}

/// Validates the partition's record batch: the bytes to append and their
/// header. Kafka's rule since Produce v3: exactly one batch per partition.
fn validate_partition_batch(partition: &Partition, records: &[u8], rules: BatchRules, append_time_ms: i64) -> Result<(BytesMut, BatchHeader), EngineError> {
    let batches = split_and_validate(records).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
    let [(range, header)] = batches.as_slice() else {
        return Err(EngineError::InvalidRecord(format!("{} record batches for one partition; exactly one is allowed", batches.len())));
    };
    if range.len() > rules.max_message_bytes {
        return Err(EngineError::MessageTooLarge { size: range.len(), max: rules.max_message_bytes });
    }
    if header.is_control() {
        return Err(EngineError::InvalidRecord("clients may not write control batches".into()));
    }
    if header.is_transactional() && header.producer_id < 0 {
        return Err(EngineError::InvalidRecord("a transactional batch needs a producer id".into()));
    }
    if rules.keys_required {
        let keyless = has_keyless_record(&records[range.clone()], header).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
        if keyless {
            return Err(EngineError::InvalidRecord(format!(
                "compacted topic cannot accept a record without a key in topic partition {}-{}",
                partition.topic, partition.index
            )));
        }
    }
    if let Some(window) = rules.timestamp_window_ms {
        check_timestamps(&records[range.clone()], header, append_time_ms, window)?;
    }
    let (mut payload, mut header) = match rules.compression {
        Some(codec) if codec != header.compression() => {
            let batch = recompress_batch(&records[range.clone()], header, codec).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
            let header = BatchHeader::parse(&batch).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
            (BytesMut::from(&batch[..]), header)
        }
        _ => (BytesMut::from(&records[range.clone()]), header.clone()),
    };
    if rules.log_append_time {
        set_log_append_time(&mut payload, &mut header, append_time_ms);
    }
    Ok((payload, header))
}

fn append_partition(partition: &Partition, records: &[u8], rules: BatchRules, append_time_ms: i64) -> Result<ferry_broker::Appended, EngineError> {
    let (mut payload, header) = validate_partition_batch(partition, records, rules, append_time_ms)?;
    partition.append(&mut payload, &header, append_time_ms)
}

/// A replicated partition: the batch goes to the partition's Raft group,
/// which answers per acks (see [`finish`]).
fn append_replicated(ctx: &Context, partition: &Partition, index: i32, records: &[u8], rules: BatchRules, now: i64, acks: i16) -> PartResult {
    let Some(cluster) = &ctx.cluster else {
        return PartResult::failed(index, codes::UNKNOWN_SERVER_ERROR, "a replicated partition on a single node".into());
    };
    let Some((group, _)) = cluster.state().partition(&partition.topic, index) else {
        return PartResult::failed(index, codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic or partition".into());
    };
    let payload = match validate_partition_batch(partition, records, rules, now) {
        Ok((payload, _)) => payload,
        Err(e) => return PartResult::failed(index, codes::for_engine_error(&e), e.to_string()),
    };
    let rx = cluster.append(group, payload.to_vec(), acks);
    PartResult {
        index,
        error: None,
        base_offset: -1,
        log_start_offset: partition.offsets().log_start_offset,
        log_append_time_ms: if rules.log_append_time { now } else { -1 },
        pending_sync: None,
        pending_replica: Some(rx),
        leader: None,
    }
}

/// The Kafka error code and message for a refused replicated append.
pub(super) fn append_error(e: &AppendError) -> (i16, String) {
    let code = match e {
        AppendError::NotLeader { .. } | AppendError::UnknownGroup | AppendError::Stopped => codes::NOT_LEADER_OR_FOLLOWER,
        AppendError::Replica(ReplicaError::Refused(inner)) => match inner.downcast_ref::<EngineError>() {
            Some(engine) => codes::for_engine_error(engine),
            None => codes::UNKNOWN_SERVER_ERROR,
        },
        AppendError::Replica(ReplicaError::Storage(_)) => codes::KAFKA_STORAGE_ERROR,
        AppendError::TooManyPending(_) => codes::NOT_ENOUGH_REPLICAS,
        AppendError::OffsetOutOfRange { .. } => codes::OFFSET_OUT_OF_RANGE,
    };
    (code, e.to_string())
}

/// KIP-951: who leads instead, when the group named one.
fn not_leader_endpoint(cluster: Option<&ferry_cluster::Cluster>, e: &AppendError) -> Option<LeaderEndpoint> {
    match e {
        AppendError::NotLeader { leader_id, term } if *leader_id != 0 => crate::cluster::endpoint(cluster?, *leader_id, *term as i32),
        _ => None,
    }
}
