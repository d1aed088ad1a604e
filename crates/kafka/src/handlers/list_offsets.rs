use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::codes;
use crate::server::Context;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(ctx: &Context, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let read_committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = ctx.engine.topic(t.name.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_timestamp(-1).with_offset(-1);
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                        return base.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    let offsets = partition.offsets();
                    let latest = if read_committed { offsets.last_stable_offset } else { offsets.high_watermark };
                    let found = match p.timestamp {
                        LATEST => Ok(Some(latest)),
                        EARLIEST => Ok(Some(offsets.log_start_offset)),
                        MAX_TIMESTAMP => Ok(Some((latest - 1).max(offsets.log_start_offset))),
                        ts => partition.offset_for_timestamp(ts).map(|o| o.filter(|o| *o < latest)),
                    };
                    match found {
                        Ok(Some(offset)) => base.with_offset(offset),
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
