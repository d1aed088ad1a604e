//! Produce and fetch through librdkafka at each acks level, against the
//! real binary.

use std::time::Duration;

use ferry_tests::kafka::{produce_all, producer, read_partition};
use ferry_tests::Ferry;
use rdkafka::producer::{FutureRecord, Producer};

async fn roundtrip(acks: &str, compression: &str) {
    let ferry = Ferry::start();
    let topic = format!("t-acks{}-{compression}", acks.replace('-', "m"));
    let p = producer(&ferry.bootstrap(), &[("acks", acks), ("compression.type", compression)]);
    let values: Vec<String> = (0..5000).map(|i| format!("value-{i}")).collect();
    let offsets = produce_all(&p, &topic, &values).await;
    if acks != "0" {
        let first_gap = offsets.iter().enumerate().find(|(i, o)| **o != *i as i64);
        assert_eq!(first_gap, None, "acknowledged offsets are consecutive; log:\n{}", ferry.log());
    }
    let read = read_partition(&ferry.bootstrap(), &topic, 0, Duration::from_secs(3));
    assert_eq!(read.len(), 5000);
    for (i, (offset, value)) in read.iter().enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(value, &values[i]);
    }
}

#[tokio::test]
async fn acks_all_roundtrip_zstd() {
    roundtrip("all", "zstd").await;
}

#[tokio::test]
async fn acks_1_roundtrip_gzip() {
    roundtrip("1", "gzip").await;
}

#[tokio::test]
async fn acks_0_roundtrip_lz4() {
    roundtrip("0", "lz4").await;
}

#[tokio::test]
async fn acks_all_survives_clean_restart_snappy() {
    let mut ferry = Ferry::start();
    let p = producer(&ferry.bootstrap(), &[("acks", "all"), ("compression.type", "snappy")]);
    let values: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
    produce_all(&p, "restart", &values).await;
    p.flush(Duration::from_secs(5)).expect("flush");
    drop(p);
    assert_eq!(ferry.terminate(), Some(0), "clean exit on SIGTERM");
    ferry.spawn_and_wait();
    let read = read_partition(&ferry.bootstrap(), "restart", 0, Duration::from_secs(3));
    assert_eq!(read.len(), 1000);
    assert_eq!(read.get(&999).map(String::as_str), Some("v999"));
}

#[tokio::test]
async fn memory_topic_is_bounded_and_empty_after_restart() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let mut ferry = Ferry::start();
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().expect("admin");
    let topic = NewTopic::new("metrics", 1, TopicReplication::Fixed(1))
        .set("ferry.storage", "memory")
        .set("retention.bytes", "20000");
    let res = admin.create_topics([&topic], &AdminOptions::new()).await.expect("create");
    assert!(res[0].is_ok(), "{res:?}");
    let p = producer(&ferry.bootstrap(), &[("acks", "1"), ("linger.ms", "0"), ("batch.num.messages", "1")]);
    let values: Vec<String> = (0..1000).map(|i| format!("metric-{i:04}")).collect();
    let offsets = produce_all(&p, "metrics", &values).await;
    assert_eq!(offsets.last(), Some(&999));
    // Bounded: the oldest batches were dropped.
    let read = ferry_tests::kafka::read_from_log_start(&ferry.bootstrap(), "metrics", Duration::from_secs(2));
    assert!(!read.is_empty() && read.len() < 1000, "memory topic kept {} records", read.len());
    assert_eq!(read.values().last().map(String::as_str), Some("metric-0999"));
    assert!(!ferry.partition_dir("metrics", 0).exists(), "memory topic wrote a partition directory");
    ferry.restart();
    let p2 = producer(&ferry.bootstrap(), &[("acks", "1")]);
    let offsets = produce_all(&p2, "metrics", &["after-restart".to_string()]).await;
    assert_eq!(offsets, vec![0], "memory topic starts empty after a restart");
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_time() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let ferry = Ferry::start();
    let p = producer(&ferry.bootstrap(), &[("acks", "1")]);
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    produce_all(&p, "times", &first).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t1 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let second: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    let second_offsets = produce_all(&p, "times", &second).await;
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).set("group.id", "g").create().expect("c");
    let (low, high) = c.fetch_watermarks("times", 0, Duration::from_secs(5)).expect("watermarks");
    assert_eq!((low, high), (0, 20));
    let at = |ts: i64| {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, rdkafka::Offset::Offset(ts)).expect("tpl");
        let r = c.offsets_for_times(tpl, Duration::from_secs(5)).expect("offsets_for_times");
        r.find_partition("times", 0).expect("partition").offset()
    };
    assert_eq!(at(t0 - 1000), rdkafka::Offset::Offset(0));
    assert_eq!(at(t1), rdkafka::Offset::Offset(second_offsets[0]));
    assert_eq!(at(t1 + 3_600_000), rdkafka::Offset::End);
    let _ = p.send_result(FutureRecord::<str, str>::to("times").payload("x"));
}

/// Attribute codec of every batch stored in a partition's segments.
fn stored_codecs(dir: &std::path::Path) -> Vec<i16> {
    let mut codecs = Vec::new();
    for path in ferry_tests::segment_files(dir) {
        let bytes = std::fs::read(&path).expect("read segment");
        let mut pos = 0;
        while pos + 61 <= bytes.len() {
            let batch_len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
            codecs.push(i16::from_be_bytes(bytes[pos + 21..pos + 23].try_into().unwrap()) & 0x07);
            pos += 12 + batch_len;
        }
    }
    codecs
}

#[tokio::test]
async fn topic_compression_type_recompresses_what_producers_send() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let ferry = Ferry::start();
    let admin: AdminClient<DefaultClientContext> = rdkafka::config::ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().expect("admin");
    for (topic, codec) in [("stored-gzip", "gzip"), ("stored-plain", "uncompressed")] {
        let t = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("compression.type", codec);
        let r = admin.create_topics([&t], &AdminOptions::new()).await.expect("create");
        assert!(r[0].is_ok(), "{r:?}");
    }
    let bad = NewTopic::new("stored-bad", 1, TopicReplication::Fixed(1)).set("compression.type", "brotli");
    let r = admin.create_topics([&bad], &AdminOptions::new()).await.expect("create");
    assert!(r[0].is_err(), "an unknown codec is refused: {r:?}");

    // The client sends uncompressed batches to the gzip topic and lz4 ones to the plain one.
    for (topic, sent_codec, stored) in [("stored-gzip", "none", 1i16), ("stored-plain", "lz4", 0i16)] {
        let p = producer(&ferry.bootstrap(), &[("compression.codec", sent_codec)]);
        let values: Vec<String> = (0..200).map(|i| format!("{topic}-value-{i}-{}", "x".repeat(i % 37))).collect();
        let offsets = produce_all(&p, topic, &values).await;
        assert_eq!(offsets, (0..200).collect::<Vec<i64>>());
        let read = read_partition(&ferry.bootstrap(), topic, 0, Duration::from_secs(2));
        assert_eq!(read.values().cloned().collect::<Vec<_>>(), values, "{topic}: every record intact, in order");
        let codecs = stored_codecs(&ferry.partition_dir(topic, 0));
        assert!(!codecs.is_empty() && codecs.iter().all(|c| *c == stored), "{topic}: stored codecs {codecs:?}, expected all {stored}");
    }
}
