//! Transactions on a cluster. The coordinator's COMMIT/ABORT markers go to
//! each partition's leader, which writes them through the partition's Raft
//! group (WriteTxnMarkers when the leader is another broker, as Kafka's
//! coordinator does). A leader takes a transactional batch only once the
//! coordinator confirmed the partition is in the producer's ongoing
//! transaction (KIP-890's verification: AddPartitionsToTxn v4 with
//! verifyOnly), so a batch arriving after its transaction ended never
//! opens a transaction nobody will close.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_broker::now_ms;
use ferry_broker::txn::{Marker, MarkerWriter};
use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::write_txn_markers_response::{WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProduceRequest, ProducerId, TopicName, TransactionalId, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};

use super::str_bytes;
use crate::client::forward;
use crate::codes;
use crate::server::Context;

/// How long one marker is retried (leader changes, an unreachable leader)
/// before the coordinator gives up for now; it tries again at its next tick
/// or when the producer retries EndTxn.
const MARKER_DEADLINE: Duration = Duration::from_secs(10);
/// Bounds a call to another broker (the coordinator, a leader).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

type Refusal = (i16, String);

/// The coordinator's marker writer on a cluster.
#[derive(Clone)]
pub struct ClusterMarkers {
    ctx: Context,
}

impl std::fmt::Debug for ClusterMarkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterMarkers")
    }
}

/// Has this broker's transaction coordinator send markers to partition
/// leaders (call once, on a cluster).
pub fn route_markers(ctx: &Context) {
    ctx.engine.txns.route_markers(std::sync::Arc::new(ClusterMarkers { ctx: ctx.clone() }));
}

impl MarkerWriter for ClusterMarkers {
    fn write_marker(&self, marker: Marker) -> BoxFuture<'static, Result<(), String>> {
        let ctx = self.ctx.clone();
        async move {
            let deadline = Instant::now() + MARKER_DEADLINE;
            loop {
                match write_once(&ctx, &marker).await {
                    Ok(()) => return Ok(()),
                    Err((code, message)) if Instant::now() >= deadline || !retriable(code) => {
                        return Err(format!("error {code}: {message}"));
                    }
                    Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
                }
            }
        }
        .boxed()
    }
}

fn retriable(code: i16) -> bool {
    matches!(
        code,
        codes::NOT_LEADER_OR_FOLLOWER | codes::REQUEST_TIMED_OUT | codes::NOT_ENOUGH_REPLICAS | codes::COORDINATOR_NOT_AVAILABLE | codes::KAFKA_STORAGE_ERROR
    )
}

async fn write_once(ctx: &Context, m: &Marker) -> Result<(), Refusal> {
    let cluster = ctx.cluster.as_ref().ok_or((codes::UNKNOWN_SERVER_ERROR, "not a cluster".to_string()))?;
    if cluster.state().partition(&m.topic, m.partition).is_none() {
        // Deleted during the transaction: nothing is left to mark (as a
        // single node skips a partition that is gone, and Kafka drops it).
        tracing::warn!(topic = %m.topic, partition = m.partition, "partition of a transaction is gone; no marker written");
        return Ok(());
    }
    match crate::cluster::leader_of(ctx, cluster, &m.topic, m.partition) {
        None => Err((codes::NOT_LEADER_OR_FOLLOWER, format!("{}-{} has no leader", m.topic, m.partition))),
        Some((leader, _)) if leader == cluster.node_id() => write_here(ctx, m).await,
        Some((leader, _)) => write_at(ctx, leader, m).await,
    }
}

/// Writes a marker into a partition this broker leads; returns once it is
/// durable: committed on a majority of replicas, or fsynced on a partition
/// that is not replicated (a memory topic has nothing to wait for).
pub async fn write_here(ctx: &Context, m: &Marker) -> Result<(), Refusal> {
    crate::cluster::check_leader(ctx, &m.topic, m.partition).map_err(|code| (code, "this broker does not lead the partition".to_string()))?;
    let partition = ctx
        .engine
        .topic(&m.topic)
        .and_then(|t| t.partition(m.partition))
        .ok_or((codes::UNKNOWN_TOPIC_OR_PARTITION, format!("unknown partition {}-{}", m.topic, m.partition)))?;
    let now = now_ms();
    if !partition.is_replicated() {
        let offset = partition.write_marker(m.producer_id, m.epoch, m.commit, now).map_err(|e| (codes::for_engine_error(&e), e.to_string()))?;
        ctx.engine.notify_data_arrived();
        return partition.wait_durable(offset + 1).await.map_err(|e| (codes::for_engine_error(&e), e.to_string()));
    }
    let cluster = ctx.cluster.as_ref().ok_or((codes::UNKNOWN_SERVER_ERROR, "a replicated partition on a single node".to_string()))?;
    let (group, _) = cluster
        .state()
        .partition(&m.topic, m.partition)
        .ok_or((codes::UNKNOWN_TOPIC_OR_PARTITION, format!("unknown partition {}-{}", m.topic, m.partition)))?;
    let batch = ferry_log::batch::control_batch(m.producer_id, m.epoch, m.commit, 0, now);
    match tokio::time::timeout(MARKER_DEADLINE, cluster.append(group, batch, -1)).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(super::produce::append_error(&e)),
        Ok(Err(_)) => Err((codes::NOT_LEADER_OR_FOLLOWER, "the cluster layer stopped".to_string())),
        Err(_) => Err((codes::REQUEST_TIMED_OUT, "the marker was not committed on a majority of replicas in time".to_string())),
    }
}

/// Sends a marker to the broker leading its partition (WriteTxnMarkers).
async fn write_at(ctx: &Context, leader: u64, m: &Marker) -> Result<(), Refusal> {
    let cluster = ctx.cluster.as_ref().ok_or((codes::UNKNOWN_SERVER_ERROR, "not a cluster".to_string()))?;
    let addr = crate::cluster::endpoint(cluster, leader, 0)
        .map(|e| format!("{}:{}", e.host, e.port))
        .ok_or((codes::NOT_LEADER_OR_FOLLOWER, format!("broker {leader} has not registered an endpoint")))?;
    let topic = WritableTxnMarkerTopic::default().with_name(TopicName(str_bytes(m.topic.clone()))).with_partition_indexes(vec![m.partition]);
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.epoch)
        .with_transaction_result(m.commit)
        .with_topics(vec![topic]);
    let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
    let answer: WriteTxnMarkersResponse = forward(&addr, ApiKey::WriteTxnMarkers, 1, &request, MARKER_DEADLINE + CALL_TIMEOUT)
        .await
        .map_err(|e| (codes::NOT_LEADER_OR_FOLLOWER, format!("leader {leader} is not reachable: {e}")))?;
    let code = answer
        .markers
        .iter()
        .flat_map(|r| r.topics.iter())
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == m.partition)
        .map_or(codes::UNKNOWN_SERVER_ERROR, |p| p.error_code);
    match code {
        codes::NONE => Ok(()),
        code => Err((code, format!("leader {leader} refused the marker"))),
    }
}

/// WriteTxnMarkers (an inter-broker API): writes each marker into the
/// partitions this broker leads and answers per partition once durable.
pub async fn write_txn_markers(ctx: &Context, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut results = Vec::new();
    for marker in req.markers {
        let mut topics = Vec::new();
        for t in marker.topics {
            let mut partitions = Vec::new();
            for p in t.partition_indexes {
                let m = Marker {
                    topic: t.name.to_string(),
                    partition: p,
                    producer_id: marker.producer_id.0,
                    epoch: marker.producer_epoch,
                    commit: marker.transaction_result,
                };
                let code = match write_here(ctx, &m).await {
                    Ok(()) => codes::NONE,
                    Err((code, message)) => {
                        tracing::debug!(topic = %m.topic, partition = p, code, %message, "marker refused");
                        code
                    }
                };
                partitions.push(WritableTxnMarkerPartitionResult::default().with_partition_index(p).with_error_code(code));
            }
            topics.push(WritableTxnMarkerTopicResult::default().with_name(t.name).with_partitions(partitions));
        }
        results.push(WritableTxnMarkerResult::default().with_producer_id(marker.producer_id).with_topics(topics));
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

/// Every partition of every marker refused with `code` (the caller may not
/// act as a broker of the cluster).
pub fn refused(req: &WriteTxnMarkersRequest, code: i16) -> WriteTxnMarkersResponse {
    let markers = req.markers.iter().map(|m| {
        let topics = m.topics.iter().map(|t| {
            let partitions = t.partition_indexes.iter().map(|p| WritableTxnMarkerPartitionResult::default().with_partition_index(*p).with_error_code(code));
            WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(partitions.collect())
        });
        WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics.collect())
    });
    WriteTxnMarkersResponse::default().with_markers(markers.collect())
}

/// Before a produce is appended (in request order, in the connection's
/// reader): for each transactional batch bound for a replicated partition
/// this broker leads whose producer has no word from the coordinator yet,
/// asks the coordinator. A confirmed partition takes the producer's
/// transactional writes until its marker; the answer is what to refuse: a
/// partition not in the transaction INVALID_TXN_STATE, a coordinator out
/// of reach NOT_ENOUGH_REPLICAS (retriable, as Kafka answers then).
pub async fn verify_transactional(ctx: &Context, req: &ProduceRequest) -> HashMap<(String, i32), Refusal> {
    let mut refused = HashMap::new();
    let (Some(cluster), Some(tid)) = (&ctx.cluster, req.transactional_id.as_ref()) else { return refused };
    let mut unverified = Vec::new();
    for t in &req.topic_data {
        for p in &t.partition_data {
            let Some(header) = p.records.as_deref().and_then(|r| ferry_log::batch::BatchHeader::parse(r).ok()) else { continue };
            if !header.is_transactional() || header.is_control() {
                continue;
            }
            let Some(partition) = ctx.engine.topic(t.name.as_str()).and_then(|topic| topic.partition(p.index)) else { continue };
            if crate::cluster::check_leader(ctx, t.name.as_str(), p.index).is_err() {
                continue;
            }
            let (allowed, txn_events) = partition.txn_allowed(header.producer_id, header.producer_epoch);
            if !allowed {
                unverified.push((partition, header.producer_id, header.producer_epoch, txn_events));
            }
        }
    }
    if unverified.is_empty() {
        return refused;
    }
    let asked: Vec<(String, i32, i64, i16)> = unverified.iter().map(|(p, pid, epoch, _)| (p.topic.clone(), p.index, *pid, *epoch)).collect();
    let answers = match crate::cluster::coordinator(ctx) {
        Some((id, _, _)) if id as u64 == cluster.node_id() => {
            let mut answers = Vec::new();
            for (topic, partition, pid, epoch) in &asked {
                let verified = ctx.engine.txns.verify_partition(tid.as_str(), *pid, *epoch, topic, *partition);
                // The transaction's lock may be held by a completion waiting on markers.
                let answer = match tokio::time::timeout(CALL_TIMEOUT, verified).await {
                    Ok(answer) => answer.map_err(|e| (super::txn::code(&e, true), e.to_string())),
                    Err(_) => Err((codes::NOT_ENOUGH_REPLICAS, "the transaction is busy completing; retry".to_string())),
                };
                answers.push(answer);
            }
            answers
        }
        Some((_, host, port)) => ask_coordinator(&format!("{host}:{port}"), tid, &asked).await,
        None => asked.iter().map(|_| Err((codes::NOT_ENOUGH_REPLICAS, "no transaction coordinator is known".to_string()))).collect(),
    };
    let now = now_ms();
    for ((partition, pid, epoch, txn_events), answer) in unverified.into_iter().zip(answers) {
        let key = (partition.topic.clone(), partition.index);
        match answer.map(|()| partition.allow_txn_since(pid, epoch, txn_events, now)) {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                refused.insert(key, (codes::NOT_ENOUGH_REPLICAS, "a transaction marker arrived during the verification; retry".to_string()));
            }
            Ok(Err(e)) => {
                refused.insert(key, (codes::for_engine_error(&e), e.to_string()));
            }
            Err((code, message)) => {
                refused.insert(key, (produce_code(code), message));
            }
        }
    }
    refused
}

/// What a producer is told when the coordinator did not confirm: its own
/// errors as Produce carries them, and anything else (the coordinator out
/// of reach, or refusing this broker's call) as NOT_ENOUGH_REPLICAS, which
/// every producer retries, never as the producer's own authorization error.
fn produce_code(coordinator_code: i16) -> i16 {
    match coordinator_code {
        codes::INVALID_TXN_STATE | codes::INVALID_PRODUCER_EPOCH | codes::INVALID_PRODUCER_ID_MAPPING => coordinator_code,
        codes::PRODUCER_FENCED => codes::INVALID_PRODUCER_EPOCH,
        _ => codes::NOT_ENOUGH_REPLICAS,
    }
}

/// AddPartitionsToTxn v4 with verifyOnly, to the coordinator on another
/// broker: one answer per partition asked, in order.
async fn ask_coordinator(addr: &str, tid: &TransactionalId, asked: &[(String, i32, i64, i16)]) -> Vec<Result<(), Refusal>> {
    let transactions = asked
        .iter()
        .map(|(topic, partition, pid, epoch)| {
            let topic = AddPartitionsToTxnTopic::default().with_name(TopicName(str_bytes(topic.clone()))).with_partitions(vec![*partition]);
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(tid.clone())
                .with_producer_id(ProducerId(*pid))
                .with_producer_epoch(*epoch)
                .with_verify_only(true)
                .with_topics(vec![topic])
        })
        .collect();
    let request = AddPartitionsToTxnRequest::default().with_transactions(transactions);
    let answer: AddPartitionsToTxnResponse = match forward(addr, ApiKey::AddPartitionsToTxn, 4, &request, CALL_TIMEOUT).await {
        Ok(a) => a,
        Err(e) => {
            let refusal = (codes::NOT_ENOUGH_REPLICAS, format!("the transaction coordinator at {addr} is not reachable: {e}"));
            return asked.iter().map(|_| Err(refusal.clone())).collect();
        }
    };
    asked
        .iter()
        .map(|(topic, partition, _, _)| {
            let code = answer
                .results_by_transaction
                .iter()
                .flat_map(|t| t.topic_results.iter())
                .filter(|t| t.name.as_str() == topic)
                .flat_map(|t| t.results_by_partition.iter())
                .find(|p| p.partition_index == *partition)
                .map_or(codes::NOT_ENOUGH_REPLICAS, |p| p.partition_error_code);
            match code {
                codes::NONE => Ok(()),
                code => Err((code, format!("the transaction coordinator did not confirm {topic}-{partition} is in an ongoing transaction"))),
            }
        })
        .collect()
}
