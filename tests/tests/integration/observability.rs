//! `--http-listen`: /metrics and /api/... scraped over a real socket from
//! the real binary, checked against what librdkafka produced, committed
//! and left open; `none`; the default port taken; an explicit port taken.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ferry_tests::kafka::{produce_all, producer, read_partition};
use ferry_tests::raw::{produce_frame, produce_result, record_batch};
use ferry_tests::{free_port, raw_roundtrip, Ferry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// GET over a plain socket; returns (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head and body");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    (status, body.to_string())
}

fn api(addr: &str, path: &str) -> Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// The value of one sample, `name{labels}` exactly as exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn txn_producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", "obs-txn-id")
        .set("transaction.timeout.ms", "60000")
        .create()
        .expect("transactional producer")
}

/// Commits `offset` for `group` on partition 0 of `topic`, without joining.
fn commit(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset)).expect("tpl");
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// A subscribed member of `group`, once it has its assignment.
fn member(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no assignment for {group}");
        let _ = c.poll(Duration::from_millis(100));
    }
    c
}

#[tokio::test]
async fn metrics_and_api_agree_with_what_clients_did() {
    let http_port = free_port();
    let http = format!("127.0.0.1:{http_port}");
    let f = Ferry::start_with(&["--http-listen", &http, "--group-initial-rebalance-delay-ms", "0"], &[]);
    const N: i64 = 100;
    const COMMITTED: i64 = 40;
    let p = producer(&f.bootstrap(), &[("acks", "all")]);
    produce_all(&p, "obs", &(0..N).map(|i| format!("value-{i:03}")).collect::<Vec<_>>()).await;
    commit(&f.bootstrap(), "obs-group", "obs", COMMITTED);
    let _member = member(&f.bootstrap(), "obs-live", "obs");
    // One refused produce: a topic that does not exist.
    let refused = raw_roundtrip(&f.bootstrap(), &produce_frame("obs-missing", record_batch(&[b"x".as_slice()]), 1, 7)).expect("answer");
    assert_eq!(produce_result(&refused).0, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let txn = txn_producer(&f.bootstrap());
    txn.init_transactions(Duration::from_secs(10)).expect("init");
    txn.begin_transaction().expect("begin");
    for i in 0..5 {
        txn.send(BaseRecord::<(), str>::to("obs-txn").partition(0).payload(&format!("t{i}"))).map_err(|(e, _)| e).expect("send");
    }
    txn.flush(Duration::from_secs(10)).expect("flush");
    let read = read_partition(&f.bootstrap(), "obs", 0, Duration::from_secs(2));
    assert_eq!(read.len() as i64, N);

    let (status, text) = http_get(&http, "/metrics");
    assert_eq!(status, 200);
    check_metrics(&text, N, COMMITTED);
    check_api(&http, N, COMMITTED, &text);

    txn.commit_transaction(Duration::from_secs(10)).expect("commit");
    let (_, text) = http_get(&http, "/metrics");
    assert_eq!(must(&text, "ferry_open_transactions"), 0.0);
    assert_eq!(must(&text, "ferry_transaction_oldest_age_seconds"), 0.0);
    let txns = api(&http, "/api/transactions");
    assert_eq!(txns[0]["state"], "CompleteCommit", "{txns}");
    assert_eq!(http_get(&http, "/api/nothing-here").0, 404);
    let (status, page) = http_get(&http, "/");
    assert_eq!(status, 200);
    assert!(page.contains("/api/groups") && page.contains("<table"), "the console page polls the JSON API");
}

fn check_metrics(text: &str, n: i64, committed: i64) {
    assert_eq!(must(text, r#"ferry_records_in_total{topic="obs"}"#), n as f64);
    assert_eq!(must(text, r#"ferry_records_in_total{topic="obs-txn"}"#), 5.0);
    assert_eq!(must(text, r#"ferry_consumer_group_lag{group="obs-group",topic="obs",partition="0"}"#), (n - committed) as f64);
    assert_eq!(must(text, r#"ferry_consumer_group_members{group="obs-group"}"#), 0.0);
    assert_eq!(must(text, r#"ferry_consumer_group_members{group="obs-live"}"#), 1.0);
    assert_eq!(must(text, "ferry_open_transactions"), 1.0);
    let age = must(text, "ferry_transaction_oldest_age_seconds");
    assert!(age > 0.0 && age < 60.0, "oldest open transaction age {age}");
    assert_eq!(must(text, r#"ferry_request_errors_total{api="Produce",error="UNKNOWN_TOPIC_OR_PARTITION"}"#), 1.0);
    // Every produce but the refused one (acks=1) was acks=all, the
    // transactional ones included.
    let produces = must(text, r#"ferry_requests_total{api="Produce"}"#);
    assert_eq!(must(text, r#"ferry_produce_latency_seconds_count{acks="1"}"#), 1.0);
    assert_eq!(must(text, r#"ferry_produce_latency_seconds_count{acks="all"}"#), produces - 1.0);
    assert!(must(text, "ferry_fsync_duration_seconds_count") >= 1.0);
    assert!(must(text, r#"ferry_requests_total{api="OffsetCommit"}"#) >= 1.0);
    assert!(must(text, "ferry_connections") >= 2.0, "the member and the transactional producer are connected");
}

fn check_api(http: &str, n: i64, committed: i64, metrics: &str) {
    let topics = api(http, "/api/topics");
    let obs = topics.as_array().expect("array").iter().find(|t| t["name"] == "obs").expect("topic obs");
    let p0 = &obs["partitions"][0];
    assert_eq!((p0["log_start_offset"].as_i64(), p0["log_end_offset"].as_i64()), (Some(0), Some(n)), "{obs}");
    // Segments hold the appended batches verbatim, and the reader fetched each once.
    let size = p0["size_bytes"].as_f64().expect("size_bytes");
    assert_eq!(must(metrics, r#"ferry_bytes_in_total{topic="obs"}"#), size);
    assert!(must(metrics, r#"ferry_bytes_out_total{topic="obs"}"#) >= size);

    let groups = api(http, "/api/groups");
    let g = groups.as_array().expect("array").iter().find(|g| g["group_id"] == "obs-group").expect("group obs-group");
    let o = &g["offsets"][0];
    assert_eq!((o["committed_offset"].as_i64(), o["high_watermark"].as_i64(), o["lag"].as_i64()), (Some(committed), Some(n), Some(n - committed)));
    let live = groups.as_array().expect("array").iter().find(|g| g["group_id"] == "obs-live").expect("group obs-live");
    assert_eq!((live["state"].as_str(), live["members"].as_array().map(Vec::len)), (Some("Stable"), Some(1)), "{live}");

    let txns = api(http, "/api/transactions");
    let t = &txns[0];
    assert_eq!((t["transactional_id"].as_str(), t["state"].as_str()), (Some("obs-txn-id"), Some("Ongoing")), "{txns}");
    assert!(t["age_ms"].as_i64().is_some_and(|a| a >= 0), "{t}");
    let tp = &t["partitions"][0];
    assert_eq!((tp["topic"].as_str(), tp["first_offset"].as_i64(), tp["last_stable_offset"].as_i64(), tp["high_watermark"].as_i64()), (Some("obs-txn"), Some(0), Some(0), Some(5)), "{t}");
}

#[tokio::test]
async fn http_listen_none_serves_kafka_without_http() {
    let f = Ferry::start_with(&["--http-listen", "none"], &[]);
    let p = producer(&f.bootstrap(), &[("acks", "all")]);
    assert_eq!(produce_all(&p, "quiet", &["a".to_string()]).await, vec![0]);
    assert!(!f.log().contains("over HTTP"), "{}", f.log());
}

#[tokio::test]
async fn default_http_port_taken_is_a_warning() {
    // Whoever holds the default port (this first broker, or anything else
    // on the host), the second broker warns and serves Kafka.
    let first = Ferry::start();
    wait_for_log(&first, "HTTP");
    let second = Ferry::start();
    wait_for_log(&second, "default HTTP address is unavailable");
    let p = producer(&second.bootstrap(), &[("acks", "all")]);
    assert_eq!(produce_all(&p, "shared-host", &["a".to_string()]).await, vec![0]);
}

fn wait_for_log(f: &Ferry, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f.log().contains(text) {
        assert!(Instant::now() < deadline, "no `{text}` in the log:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn explicit_http_port_taken_is_a_startup_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(ferry_tests::ferry_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--http-listen", &addr, "--data-dir"])
        .arg(tmp.path())
        .output()
        .expect("run ferry");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen for HTTP on {addr}")), "{stderr}");
}
