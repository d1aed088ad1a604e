//! Fetch with long poll: answer as soon as `min_bytes` are available or
//! `max_wait_ms` passed, within the request, partition and response byte
//! limits (at least one whole batch from the first partition with data, so
//! a consumer always progresses).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};

use super::str_bytes;
use crate::codes;
use crate::server::Context;

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT_MS_CAP: u64 = 30_000;

pub async fn handle(ctx: &Context, req: FetchRequest, version: i16) -> FetchResponse {
    let deadline = Instant::now() + Duration::from_millis((req.max_wait_ms.max(0) as u64).min(MAX_WAIT_MS_CAP));
    let min_bytes = req.min_bytes.max(0) as usize;
    loop {
        let notified = ctx.engine.data_arrived().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (response, bytes, errors) = fetch_once(ctx, &req, version).await;
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || errors || now >= deadline {
            return response;
        }
        let _ = tokio::time::timeout(deadline - now, notified).await;
    }
}

async fn fetch_once(ctx: &Context, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let request_max = if version >= 3 { req.max_bytes.max(0) as usize } else { usize::MAX };
    let mut budget = request_max.min(ctx.config.fetch_max_bytes);
    let read_committed = req.isolation_level == 1;
    let mut total = 0usize;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut leaders: Vec<crate::cluster::LeaderEndpoint> = Vec::new();
    for t in &req.topics {
        let topic = if version >= 13 { ctx.engine.topic_by_id(t.topic_id) } else { ctx.engine.topic(t.topic.as_str()) };
        let missing = if version >= 13 { codes::UNKNOWN_TOPIC_ID } else { codes::UNKNOWN_TOPIC_OR_PARTITION };
        let mut partitions = Vec::with_capacity(t.partitions.len());
        let readable = crate::acl::topic(ctx, crate::acl::Op::Read, topic.as_ref().map_or(t.topic.as_str(), |x| x.name.as_str()));
        for p in &t.partitions {
            let base = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica((-1).into())
                .with_records(Some(Bytes::new()));
            if !readable {
                any_error = true;
                partitions.push(base.with_error_code(codes::TOPIC_AUTHORIZATION_FAILED));
                continue;
            }
            let Some(partition) = topic.as_ref().and_then(|topic| topic.partition(p.partition)) else {
                any_error = true;
                partitions.push(base.with_error_code(missing));
                continue;
            };
            if let Err(code) = crate::cluster::check_leader(ctx, &partition.topic, p.partition) {
                any_error = true;
                let leader = crate::cluster::leader_endpoint(ctx, &partition.topic, p.partition);
                let current = match &leader {
                    Some(l) => LeaderIdAndEpoch::default().with_leader_id(BrokerId(l.id)).with_leader_epoch(l.epoch),
                    None => LeaderIdAndEpoch::default(),
                };
                if let Some(l) = leader.filter(|l| !leaders.iter().any(|x| x.id == l.id)) {
                    leaders.push(l);
                }
                partitions.push(base.with_error_code(code).with_current_leader(current));
                continue;
            }
            let offsets = partition.offsets();
            let base = base
                .with_high_watermark(offsets.high_watermark)
                .with_last_stable_offset(offsets.last_stable_offset)
                .with_log_start_offset(offsets.log_start_offset)
                .with_aborted_transactions(read_committed.then(Vec::new));
            // Between the high watermark and the log end (a new leader that
            // has not committed in its term yet) there is nothing to read yet.
            if p.fetch_offset < offsets.log_start_offset || p.fetch_offset > offsets.log_end_offset {
                any_error = true;
                partitions.push(base.with_error_code(codes::OFFSET_OUT_OF_RANGE));
                continue;
            }
            let visible_end = if read_committed { offsets.last_stable_offset } else { offsets.high_watermark };
            if p.fetch_offset >= visible_end || (budget == 0 && total > 0) {
                partitions.push(base);
                continue;
            }
            let max = (p.partition_max_bytes.max(0) as usize).min(budget);
            // Only the first partition with data may go over the limits,
            // by its first batch (KIP-74); later ones stay within them, or
            // the answer outgrows what the client can receive.
            let min_one_batch = total == 0;
            match partition.read(p.fetch_offset, max, visible_end, min_one_batch).await {
                Ok(records) => {
                    total += records.len();
                    budget = budget.saturating_sub(records.len());
                    let base = if read_committed && !records.is_empty() {
                        // The aborted transactions a read_committed client must drop from this range.
                        let aborted = partition
                            .aborted_in(p.fetch_offset, visible_end - 1)
                            .into_iter()
                            .map(|a| AbortedTransaction::default().with_producer_id(ProducerId(a.producer_id)).with_first_offset(a.first_offset))
                            .collect();
                        base.with_aborted_transactions(Some(aborted))
                    } else {
                        base
                    };
                    partitions.push(base.with_records(Some(records)));
                }
                Err(e) => {
                    any_error = true;
                    partitions.push(base.with_error_code(codes::for_engine_error(&e)));
                }
            }
        }
        topics.push(FetchableTopicResponse::default().with_topic(t.topic.clone()).with_topic_id(t.topic_id).with_partitions(partitions));
    }
    // Fetch sessions are not offered: session id 0 makes clients send full requests.
    let node_endpoints = leaders
        .into_iter()
        .map(|l| NodeEndpoint::default().with_node_id(BrokerId(l.id)).with_host(str_bytes(l.host)).with_port(l.port))
        .collect();
    (FetchResponse::default().with_session_id(0).with_responses(topics).with_node_endpoints(node_endpoints), total, any_error)
}
