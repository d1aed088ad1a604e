//! DeleteRecords and DescribeLogDirs through the real binary: the log
//! start moves, reads below it are refused, consumers reset to it, and it
//! survives SIGKILL.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use ferry_tests::kafka::{produce_all, producer, read_partition_from};
use ferry_tests::raw::call;
use ferry_tests::{ferry_bin, segment_files, Ferry};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create_topic(f: &Ferry, topic: &str, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", f.bootstrap()).create().unwrap();
    let mut t = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = admin.create_topics([&t], &AdminOptions::new()).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

/// One record per batch (each send awaited), so small segments roll often.
async fn produce_n(f: &Ferry, topic: &str, from: usize, n: usize) {
    let p = producer(&f.bootstrap(), &[("acks", "all")]);
    for i in from..from + n {
        produce_all(&p, topic, &[format!("record-{i:04}")]).await;
    }
}

/// DeleteRecords v2 for partition 0: (error code, low watermark).
fn delete_records(f: &Ferry, topic: &str, offset: i64) -> (i16, i64) {
    let req = DeleteRecordsRequest::default().with_timeout_ms(5000).with_topics(vec![DeleteRecordsTopic::default()
        .with_name(name(topic))
        .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(offset)])]);
    let resp: DeleteRecordsResponse = call(&f.bootstrap(), ApiKey::DeleteRecords, 2, &req);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

fn earliest(f: &Ferry, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(name(topic))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-2)])]);
    let resp: ListOffsetsResponse = call(&f.bootstrap(), ApiKey::ListOffsets, 2, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

/// Fetch v11 of partition 0 from `offset`: (error code, log start offset).
fn fetch_from(f: &Ferry, topic: &str, offset: i64) -> (i16, i64) {
    let req = FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![
        FetchTopic::default().with_topic(name(topic)).with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20)]),
    ]);
    let resp: FetchResponse = call(&f.bootstrap(), ApiKey::Fetch, 11, &req);
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.log_start_offset)
}

#[tokio::test]
async fn delete_records_moves_the_log_start_durably() {
    let mut f = Ferry::start();
    create_topic(&f, "dr", &[("segment.bytes", "2048")]).await;
    produce_n(&f, "dr", 0, 100).await;
    let dir = f.partition_dir("dr", 0);
    let segments_before = segment_files(&dir).len();
    assert!(segments_before > 2, "small segments: {segments_before}");

    assert_eq!(delete_records(&f, "dr", 40), (0, 40));
    assert!(segment_files(&dir).len() < segments_before, "segments wholly below 40 are deleted");
    assert_eq!(fetch_from(&f, "dr", 0), (OFFSET_OUT_OF_RANGE, 40));
    assert_eq!(fetch_from(&f, "dr", 40).0, 0);
    assert_eq!(earliest(&f, "dr"), 40);
    // auto.offset.reset=earliest after the out-of-range fetch from 0.
    let read: BTreeMap<i64, String> = read_partition_from(&f.bootstrap(), "dr", 0, 0, Duration::from_secs(3));
    assert_eq!(read.keys().next(), Some(&40), "a consumer starts at the new log start");
    assert_eq!(read.len(), 60);
    assert_eq!(read[&40], "record-0040");

    f.kill9();
    f.spawn_and_wait();
    assert_eq!(earliest(&f, "dr"), 40, "the log start survives SIGKILL");
    assert_eq!(fetch_from(&f, "dr", 39).0, OFFSET_OUT_OF_RANGE);
    assert_eq!(delete_records(&f, "dr", 30), (0, 40), "never moves back");
    assert_eq!(delete_records(&f, "dr", 101).0, OFFSET_OUT_OF_RANGE, "above the high watermark");
    assert_eq!(delete_records(&f, "dr", -7).0, OFFSET_OUT_OF_RANGE);
    assert_eq!(delete_records(&f, "nope", 1).0, UNKNOWN_TOPIC_OR_PARTITION);
    // v0 (not flexible) answers the same.
    let v0 = DeleteRecordsRequest::default().with_timeout_ms(5000).with_topics(vec![DeleteRecordsTopic::default()
        .with_name(name("dr"))
        .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(41)])]);
    let resp: DeleteRecordsResponse = call(&f.bootstrap(), ApiKey::DeleteRecords, 0, &v0);
    assert_eq!((resp.topics[0].partitions[0].error_code, resp.topics[0].partitions[0].low_watermark), (0, 41));
    assert_eq!(delete_records(&f, "dr", -1), (0, 100), "-1 is the high watermark");
    produce_n(&f, "dr", 100, 5).await;
    let read = read_partition_from(&f.bootstrap(), "dr", 0, 0, Duration::from_secs(3));
    assert_eq!(read.keys().copied().collect::<Vec<_>>(), (100..105).collect::<Vec<_>>());
}

#[tokio::test]
async fn delete_records_on_a_memory_topic() {
    let f = Ferry::start();
    create_topic(&f, "mem", &[("ferry.storage", "memory")]).await;
    produce_n(&f, "mem", 0, 20).await;
    assert_eq!(delete_records(&f, "mem", 15), (0, 15));
    assert_eq!(earliest(&f, "mem"), 15);
    assert_eq!(fetch_from(&f, "mem", 3).0, OFFSET_OUT_OF_RANGE);
    assert_eq!(delete_records(&f, "mem", 5), (0, 15));
}

fn describe_log_dirs(f: &Ferry, topics: Option<&[&str]>) -> DescribeLogDirsResponse {
    describe_log_dirs_at(f, topics, 4)
}

fn describe_log_dirs_at(f: &Ferry, topics: Option<&[&str]>, version: i16) -> DescribeLogDirsResponse {
    let topics = topics.map(|ts| ts.iter().map(|t| DescribableLogDirTopic::default().with_topic(name(t)).with_partitions(vec![0])).collect());
    call(&f.bootstrap(), ApiKey::DescribeLogDirs, version, &DescribeLogDirsRequest::default().with_topics(topics))
}

fn size_of(resp: &DescribeLogDirsResponse, topic: &str) -> Option<i64> {
    let t = resp.results[0].topics.iter().find(|t| t.name.as_str() == topic)?;
    Some(t.partitions[0].partition_size)
}

#[tokio::test]
async fn describe_log_dirs_reports_partition_sizes() {
    let f = Ferry::start();
    create_topic(&f, "sized", &[]).await;
    create_topic(&f, "other", &[]).await;
    produce_n(&f, "sized", 0, 10).await;
    let first = describe_log_dirs(&f, None);
    assert_eq!(first.results.len(), 1);
    let dir = &first.results[0];
    assert_eq!(dir.error_code, 0);
    assert_eq!(dir.log_dir.as_str(), std::path::absolute(&f.data_dir).unwrap().display().to_string());
    assert!(dir.total_bytes > 0 && dir.usable_bytes > 0 && dir.usable_bytes <= dir.total_bytes, "{dir:?}");
    let before = size_of(&first, "sized").expect("listed");
    assert!(before > 0);
    assert_eq!(size_of(&first, "other"), Some(0));
    assert!(dir.topics.iter().all(|t| t.partitions.iter().all(|p| p.offset_lag == 0 && !p.is_future_key)));

    produce_n(&f, "sized", 10, 10).await;
    let filtered = describe_log_dirs(&f, Some(&["sized"]));
    assert!(size_of(&filtered, "sized").unwrap() > before, "the size grows with the data");
    assert_eq!(size_of(&filtered, "other"), None, "the filter leaves other topics out");
    for version in 1..=3 {
        let older = describe_log_dirs_at(&f, None, version);
        assert_eq!(size_of(&older, "sized"), size_of(&filtered, "sized"), "v{version}");
    }
}

#[tokio::test]
async fn cli_delete_records() {
    let f = Ferry::start();
    create_topic(&f, "cli-dr", &[]).await;
    produce_n(&f, "cli-dr", 0, 10).await;
    let run = |args: &[&str]| Command::new(ferry_bin()).args(args).args(["--bootstrap-server", &f.bootstrap()]).output().unwrap();
    let out = run(&["topic", "delete-records", "--topic", "cli-dr", "--partition", "0", "--offset", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("log start offset is now 4"));
    let out = run(&["topic", "delete-records", "--topic", "cli-dr", "--offset", "-1", "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["log_start_offset"], 10);
    let out = run(&["topic", "delete-records", "--topic", "cli-dr", "--offset", "99"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("above the high watermark"), "{}", String::from_utf8_lossy(&out.stderr));
    let help = Command::new(ferry_bin()).args(["topic", "delete-records", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("high watermark"));
}
