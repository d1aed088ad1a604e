//! Moving replicas through the Kafka protocol (AlterPartitionReassignments
//! and ListPartitionReassignments, KIP-455), and a producer writing while
//! they move.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;

use crate::cluster::admin;
use crate::kafka::producer;
use crate::raw;

/// Asks `addr` to move `topic`'s partition 0 to `target` (None: cancel);
/// the partition's error code.
pub fn reassign(addr: &str, topic: &str, target: Option<Vec<i32>>) -> i16 {
    let partition = ReassignablePartition::default().with_partition_index(0).with_replicas(target.map(|t| t.into_iter().map(BrokerId).collect()));
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![ReassignableTopic::default().with_name(TopicName(StrBytes::from_string(topic.into()))).with_partitions(vec![partition])]);
    let resp: AlterPartitionReassignmentsResponse = raw::call(addr, ApiKey::AlterPartitionReassignments, 0, &req);
    assert_eq!(resp.error_code, 0, "top-level error: {:?}", resp.error_message);
    resp.responses[0].partitions[0].error_code
}

/// The moves under way as `addr` lists them: (topic, replicas, adding, removing).
pub fn moves(addr: &str) -> Vec<(String, Vec<i32>, Vec<i32>, Vec<i32>)> {
    let resp: ListPartitionReassignmentsResponse = raw::call(addr, ApiKey::ListPartitionReassignments, 0, &ListPartitionReassignmentsRequest::default());
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), ids(&p.replicas), ids(&p.adding_replicas), ids(&p.removing_replicas))))
        .collect()
}

/// Partition 0's replicas as Metadata lists them.
pub fn replicas(bootstrap: &str, topic: &str) -> Vec<i32> {
    let Ok(md) = admin(bootstrap).inner().fetch_metadata(Some(topic), Duration::from_secs(3)) else { return Vec::new() };
    md.topics().first().and_then(|t| t.partitions().first()).map(|p| p.replicas().to_vec()).unwrap_or_default()
}

/// An idempotent producer writing to partition 0 of each topic in turn
/// until told to stop; what it acknowledged: (topic, offset, value).
pub type Writer = tokio::task::JoinHandle<Vec<(&'static str, i64, String)>>;

pub fn spawn_writer(bootstrap: &str, topics: &'static [&'static str]) -> (Arc<AtomicBool>, Writer) {
    let stop = Arc::new(AtomicBool::new(false));
    let (stopped, bootstrap) = (stop.clone(), bootstrap.to_string());
    let writer = tokio::spawn(async move {
        let p = producer(&bootstrap, &[("enable.idempotence", "true"), ("message.timeout.ms", "60000")]);
        let mut acked = Vec::new();
        let mut i = 0usize;
        while !stopped.load(Ordering::Relaxed) {
            let round: Vec<_> = (i..i + 200)
                .map(|n| {
                    let (topic, v) = (topics[n % topics.len()], format!("v{n}"));
                    (topic, v.clone(), p.send_result(FutureRecord::<str, str>::to(topic).partition(0).payload(&v)).expect("queued"))
                })
                .collect();
            i += 200;
            for (topic, v, f) in round {
                let d = f.await.expect("delivery report").unwrap_or_else(|(e, _)| panic!("{v} to {topic} not delivered: {e}"));
                acked.push((topic, d.offset, v));
            }
        }
        acked
    });
    (stop, writer)
}
