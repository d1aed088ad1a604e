//! A fetch answer stays within the request's `max_bytes` and each
//! partition's `partition_max_bytes`; only the first batch of the first
//! partition with data may exceed them (KIP-74), so a consumer progresses
//! without receiving more than it asked for.

use bytes::Bytes;
use ferry_tests::raw::{frame, record_batch};
use ferry_tests::{raw_roundtrip, Ferry};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

const TOPIC: &str = "big";
const RECORD_BYTES: usize = 300_000;
const FETCH_VERSION: i16 = 11;

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// Three partitions, each holding two batches of one 300 KB record.
async fn big_topic(ferry: &Ferry) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().expect("admin");
    let topic = NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1)).set("max.message.bytes", "1000000");
    let created = admin.create_topics([&topic], &AdminOptions::new()).await.expect("create");
    assert!(created[0].is_ok(), "{created:?}");
    let value = vec![7u8; RECORD_BYTES];
    for partition in 0..3 {
        for _ in 0..2 {
            let req = ProduceRequest::default().with_acks(1).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
                .with_name(name())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(Bytes::from(record_batch(&[&value]))))])]);
            raw_roundtrip(&ferry.bootstrap(), &frame(ApiKey::Produce, 8, 1, &req)).expect("produce answer");
        }
    }
}

/// Fetches all three partitions from offset 0; returns each partition's record bytes.
fn fetch(ferry: &Ferry, max_bytes: i32, partition_max_bytes: i32) -> Vec<usize> {
    let partitions =
        (0..3).map(|p| FetchPartition::default().with_partition(p).with_fetch_offset(0).with_partition_max_bytes(partition_max_bytes)).collect();
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default().with_topic(name()).with_partitions(partitions)]);
    let answer = raw_roundtrip(&ferry.bootstrap(), &frame(ApiKey::Fetch, FETCH_VERSION, 1, &req)).expect("fetch answer");
    let mut body = Bytes::copy_from_slice(&answer[4..]);
    let resp = FetchResponse::decode(&mut body, FETCH_VERSION).expect("fetch response");
    resp.responses[0]
        .partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
            p.records.as_ref().map_or(0, |r| r.len())
        })
        .collect()
}

#[tokio::test]
async fn fetch_max_bytes_bounds_the_whole_answer() {
    let ferry = Ferry::start();
    big_topic(&ferry).await;
    // Room for one batch: the first partition's first batch, nothing from the others.
    let sizes = fetch(&ferry, 400_000, 1_000_000);
    assert!(sizes[0] > RECORD_BYTES && sizes[0] < 2 * RECORD_BYTES, "one batch from partition 0: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), sizes[0], "nothing past max_bytes from later partitions: {sizes:?}");
    // Smaller than one batch: the first batch still comes, so the consumer progresses.
    let sizes = fetch(&ferry, 1000, 1_000_000);
    assert!(sizes[0] > RECORD_BYTES, "{sizes:?}");
    assert_eq!(&sizes[1..], &[0, 0], "{sizes:?}");
    // Room for all: everything.
    let sizes = fetch(&ferry, 10_000_000, 1_000_000);
    assert!(sizes.iter().all(|s| *s > 2 * RECORD_BYTES), "{sizes:?}");
}

#[tokio::test]
async fn partition_max_bytes_bounds_each_partition() {
    let ferry = Ferry::start();
    big_topic(&ferry).await;
    // Each batch is over the partition limit: only the first partition's first batch may come.
    let sizes = fetch(&ferry, 10_000_000, 200_000);
    assert!(sizes[0] > RECORD_BYTES && sizes[0] < 2 * RECORD_BYTES, "one batch from partition 0: {sizes:?}");
    assert_eq!(&sizes[1..], &[0, 0], "later partitions stay within partition_max_bytes: {sizes:?}");
    // Room for one batch per partition.
    let sizes = fetch(&ferry, 10_000_000, 400_000);
    assert!(sizes.iter().all(|s| *s > RECORD_BYTES && *s < 2 * RECORD_BYTES), "one batch each: {sizes:?}");
}
