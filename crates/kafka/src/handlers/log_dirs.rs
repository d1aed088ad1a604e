//! DeleteRecords and DescribeLogDirs: the log-level admin APIs behind
//! `kafka-delete-records.sh` and `kafka-log-dirs.sh`.

use std::collections::HashMap;
use std::path::Path;

use ferry_broker::{EngineError, Topic};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::str_bytes;
use crate::codes;
use crate::server::Context;

/// Moves each named partition's log start. Each one is made durable on a
/// blocking thread (an fsync and a rename), so the answer means it holds
/// after a crash. Single node: nothing to wait for, so `timeout_ms` is met
/// as soon as the local change is done.
pub async fn delete_records(ctx: &Context, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let topic = ctx.engine.topic(t.name.as_str());
        let mut partitions = Vec::new();
        for p in t.partitions {
            let base = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index).with_low_watermark(-1);
            if !crate::acl::topic(ctx, crate::acl::Op::Delete, t.name.as_str()) {
                partitions.push(base.with_error_code(crate::codes::TOPIC_AUTHORIZATION_FAILED));
                continue;
            }
            if let Err(code) = crate::cluster::check_leader(ctx, t.name.as_str(), p.partition_index) {
                partitions.push(base.with_error_code(code));
                continue;
            }
            let result = match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
                Some(partition) if partition.is_replicated() => delete_replicated(ctx, &partition, p.offset, req.timeout_ms).await,
                Some(partition) => tokio::task::spawn_blocking(move || partition.delete_records(p.offset))
                    .await
                    .unwrap_or_else(|e| Err(EngineError::Storage(format!("delete records task failed: {e}"))))
                    .map_err(|e| codes::for_engine_error(&e)),
            };
            partitions.push(match result {
                Ok(low_watermark) => base.with_low_watermark(low_watermark),
                Err(code) => base.with_error_code(code),
            });
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// DeleteRecords on a replicated partition: the move of the log start is
/// an entry of the partition's Raft log, answered once committed, so every
/// replica (and the next leader) has it.
async fn delete_replicated(ctx: &Context, partition: &ferry_broker::Partition, offset: i64, timeout_ms: i32) -> Result<i64, i16> {
    use ferry_cluster::partition::AppendError;
    let cluster = ctx.cluster.as_ref().ok_or(codes::UNKNOWN_SERVER_ERROR)?;
    let (group, _) = cluster.state().partition(&partition.topic, partition.index).ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)?;
    let rx = cluster.delete_records(group, offset);
    match tokio::time::timeout(std::time::Duration::from_millis(timeout_ms.max(0) as u64), rx).await {
        Ok(Ok(Ok(placed))) => Ok(placed.base_offset),
        Ok(Ok(Err(AppendError::OffsetOutOfRange { .. }))) => Err(codes::OFFSET_OUT_OF_RANGE),
        Ok(Ok(Err(_))) | Ok(Err(_)) => Err(codes::NOT_LEADER_OR_FOLLOWER),
        Err(_) => Err(codes::REQUEST_TIMED_OUT),
    }
}

/// One log directory, the data dir, with every disk partition asked for.
/// Memory topics hold nothing on disk and are not listed.
pub fn describe_log_dirs(ctx: &Context, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Option<HashMap<String, Vec<i32>>> =
        req.topics.map(|ts| ts.into_iter().map(|t| (t.topic.to_string(), t.partitions)).collect());
    let mut topics = Vec::new();
    for topic in ctx.engine.topics() {
        let indexes: Vec<i32> = match &wanted {
            None => (0..topic.partition_count()).collect(),
            Some(w) => match w.get(&topic.name) {
                Some(ps) => ps.clone(),
                None => continue,
            },
        };
        // On a cluster, only the partitions placed on this broker are its logs.
        let indexes: Vec<i32> = indexes.into_iter().filter(|i| crate::cluster::holds_replica(ctx, &topic.name, *i)).collect();
        let partitions = partition_sizes(&topic, &indexes);
        if !partitions.is_empty() {
            topics.push(DescribeLogDirsTopic::default().with_name(TopicName(str_bytes(topic.name.clone()))).with_partitions(partitions));
        }
    }
    let dir = std::path::absolute(&ctx.engine.config.data_dir).unwrap_or_else(|_| ctx.engine.config.data_dir.clone());
    let (total_bytes, usable_bytes) = disk_space(&dir);
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// Sizes of the named disk partitions that exist (unknown ones are left
/// out, as Kafka leaves out partitions a log dir does not hold).
fn partition_sizes(topic: &Topic, indexes: &[i32]) -> Vec<DescribeLogDirsPartition> {
    indexes
        .iter()
        .filter_map(|&i| {
            let size = topic.partition(i)?.disk_size_bytes()?;
            Some(
                DescribeLogDirsPartition::default()
                    .with_partition_index(i)
                    .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            )
        })
        .collect()
}

/// Total and usable bytes of the file system holding `dir` (statvfs), or
/// -1 each when it cannot be read; usable is what an unprivileged writer
/// gets (f_bavail), as Kafka reports it.
fn disk_space(dir: &Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return (-1, -1) };
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return (-1, -1);
    }
    let block = stat.f_frsize as u128;
    let clamp = |blocks: u128| i64::try_from(blocks * block).unwrap_or(i64::MAX);
    (clamp(stat.f_blocks as u128), clamp(stat.f_bavail as u128))
}
