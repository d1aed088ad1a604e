//! OffsetForLeaderEpoch (KIP-320): where a leader epoch's data ends, so a
//! consumer that fetched from an earlier leader can tell whether the log it
//! read from was truncated since (its position past the answer means it
//! was). Epochs are the partitions' Raft terms on a cluster, 0 on a single
//! node.

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::codes;
use crate::server::Context;

pub fn handle(ctx: &Context, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.to_string();
            let topic = ctx.engine.topic(&name);
            let describable = crate::acl::topic(ctx, crate::acl::Op::Describe, &name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = EpochEndOffset::default().with_partition(p.partition).with_leader_epoch(-1).with_end_offset(-1);
                    if !describable {
                        return base.with_error_code(codes::TOPIC_AUTHORIZATION_FAILED);
                    }
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition)) else {
                        return base.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    if let Err(code) = crate::cluster::check_leader(ctx, &name, p.partition) {
                        return base.with_error_code(code);
                    }
                    if let Err(code) = check_current_epoch(ctx, &name, p.partition, p.current_leader_epoch) {
                        return base.with_error_code(code);
                    }
                    match partition.epoch_end_offset(p.leader_epoch) {
                        Some((epoch, end)) => base.with_leader_epoch(epoch).with_end_offset(end),
                        None => base,
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// Kafka's fencing: a caller that knows a newer epoch than this leader is
/// ahead of it (UNKNOWN_LEADER_EPOCH), one that knows an older one is
/// behind (FENCED_LEADER_EPOCH); -1 asks for no check.
fn check_current_epoch(ctx: &Context, topic: &str, partition: i32, current: i32) -> Result<(), i16> {
    if current < 0 {
        return Ok(());
    }
    let ours = match &ctx.cluster {
        Some(cluster) => crate::cluster::leader_of(ctx, cluster, topic, partition).map_or(-1, |(_, epoch)| epoch),
        None => 0,
    };
    match current.cmp(&ours) {
        std::cmp::Ordering::Greater => Err(codes::UNKNOWN_LEADER_EPOCH),
        std::cmp::Ordering::Less => Err(codes::FENCED_LEADER_EPOCH),
        std::cmp::Ordering::Equal => Ok(()),
    }
}
