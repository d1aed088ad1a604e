//! Topic administration through librdkafka's AdminClient.

use std::time::Duration;

use ferry_tests::kafka::{produce_all, producer};
use ferry_tests::{segment_files, Ferry};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

fn admin(ferry: &Ferry) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().expect("admin")
}

fn error_of(r: &rdkafka::admin::TopicResult) -> Option<RDKafkaErrorCode> {
    r.as_ref().err().map(|(_, code)| *code)
}

#[tokio::test]
async fn create_describe_alter_grow_delete() {
    let ferry = Ferry::start();
    let a = admin(&ferry);
    let opts = AdminOptions::new();
    let t = NewTopic::new("orders", 3, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
    let r = a.create_topics([&t], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let again = a.create_topics([&t], &opts).await.unwrap();
    assert_eq!(error_of(&again[0]), Some(RDKafkaErrorCode::TopicAlreadyExists));

    let md = a.inner().fetch_metadata(Some("orders"), Duration::from_secs(5)).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);

    let cfg = a.describe_configs([&ResourceSpecifier::Topic("orders")], &opts).await.unwrap();
    let cfg = cfg[0].as_ref().unwrap();
    assert_eq!(cfg.get("retention.ms").and_then(|e| e.value.as_deref()), Some("3600000"));
    assert_eq!(cfg.get("segment.bytes").and_then(|e| e.value.as_deref()), Some("1073741824"));

    let alter = AlterConfig::new(ResourceSpecifier::Topic("orders")).set("retention.ms", "60000");
    let r = a.alter_configs([&alter], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let cfg = a.describe_configs([&ResourceSpecifier::Topic("orders")], &opts).await.unwrap();
    assert_eq!(cfg[0].as_ref().unwrap().get("retention.ms").and_then(|e| e.value.as_deref()), Some("60000"));

    let bad = AlterConfig::new(ResourceSpecifier::Topic("orders")).set("retention.ms", "soon");
    // rust-rdkafka drops per-resource AlterConfigs errors, so check the effect:
    // the bad value was refused and the old one stands.
    let _ = a.alter_configs([&bad], &opts).await.unwrap();
    let cfg = a.describe_configs([&ResourceSpecifier::Topic("orders")], &opts).await.unwrap();
    assert_eq!(cfg[0].as_ref().unwrap().get("retention.ms").and_then(|e| e.value.as_deref()), Some("60000"));

    let r = a.create_partitions([&NewPartitions::new("orders", 5)], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let r = a.create_partitions([&NewPartitions::new("orders", 2)], &opts).await.unwrap();
    assert_eq!(error_of(&r[0]), Some(RDKafkaErrorCode::InvalidPartitions));
    let md = a.inner().fetch_metadata(Some("orders"), Duration::from_secs(5)).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);

    let r = a.delete_topics(&["orders"], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    assert!(!ferry.data_dir.join("topics").join("orders").exists());
    let r = a.delete_topics(&["orders"], &opts).await.unwrap();
    assert_eq!(error_of(&r[0]), Some(RDKafkaErrorCode::UnknownTopicOrPartition));
}

#[tokio::test]
async fn invalid_names_configs_and_replication_are_refused() {
    let ferry = Ferry::start();
    let a = admin(&ferry);
    let opts = AdminOptions::new();
    let r = a.create_topics([&NewTopic::new("bad/name", 1, TopicReplication::Fixed(1))], &opts).await.unwrap();
    assert_eq!(error_of(&r[0]), Some(RDKafkaErrorCode::InvalidTopic));
    let r = a
        .create_topics([&NewTopic::new("cfg", 1, TopicReplication::Fixed(1)).set("no.such.config", "1")], &opts)
        .await
        .unwrap();
    assert_eq!(error_of(&r[0]), Some(RDKafkaErrorCode::InvalidConfig));
    let r = a.create_topics([&NewTopic::new("rf", 1, TopicReplication::Fixed(3))], &opts).await.unwrap();
    assert_eq!(error_of(&r[0]), Some(RDKafkaErrorCode::InvalidReplicationFactor));
    let r = a.create_topics([&NewTopic::new("zero", 0, TopicReplication::Fixed(1))], &opts).await.unwrap();
    assert!(r[0].is_err());
}

#[tokio::test]
async fn segments_roll_and_retention_deletes_old_ones() {
    let ferry = Ferry::start_with(&["--log-retention-check-interval-ms", "200"], &[]);
    let a = admin(&ferry);
    let t = NewTopic::new("rolling", 1, TopicReplication::Fixed(1)).set("segment.bytes", "2048").set("retention.bytes", "4096");
    assert!(a.create_topics([&t], &AdminOptions::new()).await.unwrap()[0].is_ok());
    let p = producer(&ferry.bootstrap(), &[("acks", "1"), ("linger.ms", "0"), ("batch.num.messages", "1")]);
    let values: Vec<String> = (0..300).map(|i| format!("{i:04}-{}", "y".repeat(60))).collect();
    for chunk in values.chunks(20) {
        produce_all(&p, "rolling", chunk).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let segments = segment_files(&ferry.partition_dir("rolling", 0));
    assert!(segments.len() >= 2 && segments.len() <= 5, "segments after roll and retention: {segments:?}");
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).set("group.id", "w").create().unwrap();
    let (low, high) = c.fetch_watermarks("rolling", 0, Duration::from_secs(5)).unwrap();
    assert_eq!(high, 300);
    assert!(low > 0, "retention advanced the log start offset");
}
