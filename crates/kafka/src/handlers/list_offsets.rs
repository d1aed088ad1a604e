use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use ferry_log::TimestampOffset;

use crate::codes;
use crate::server::Context;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-1005 (v8+): the earliest offset on local disk; without tiered
/// storage that is the log start.
const EARLIEST_LOCAL: i64 = -4;

pub async fn handle(ctx: &Context, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let read_committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = ctx.engine.topic(t.name.as_str());
            let describable = crate::acl::topic(ctx, crate::acl::Op::Describe, t.name.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_timestamp(-1).with_offset(-1);
                    if !describable {
                        return base.with_error_code(codes::TOPIC_AUTHORIZATION_FAILED);
                    }
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                        return base.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    if let Err(code) = crate::cluster::check_leader_settled(ctx, t.name.as_str(), p.partition_index) {
                        return base.with_error_code(code);
                    }
                    let offsets = partition.offsets();
                    let latest = if read_committed { offsets.last_stable_offset } else { offsets.high_watermark };
                    let offset_only = |offset| Ok(Some(TimestampOffset { offset, timestamp: -1 }));
                    let found = match p.timestamp {
                        LATEST => offset_only(latest),
                        EARLIEST | EARLIEST_LOCAL => offset_only(offsets.log_start_offset),
                        MAX_TIMESTAMP => partition.max_timestamp_offset().map(|o| o.filter(|o| o.offset < latest)),
                        ts => partition.offset_for_timestamp(ts).map(|o| o.filter(|o| o.offset < latest)),
                    };
                    match found {
                        Ok(Some(found)) => base.with_offset(found.offset).with_timestamp(found.timestamp),
                        Ok(None) => base,
                        Err(e) => base.with_error_code(codes::for_engine_error(&e)),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
