//! Transactions on three real brokers whose partitions are replicated: the
//! coordinator (broker 1) writes each marker through the partition's
//! leader, wherever it is; a leader takes a transactional batch only for a
//! partition the coordinator confirms is in the producer's ongoing
//! transaction; and a transaction whose partition leader is SIGKILLed
//! before its commit still ends committed, every record once.

use std::time::{Duration, Instant};

use ferry_tests::cluster::{create_topic_when_ready, wait_for_leaders, wait_until};
use ferry_tests::raw::{call, transactional_batch};
use ferry_tests::Ferry;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
const INVALID_TXN_STATE: i16 = 48;

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn txn_producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).set("transactional.id", id).create().expect("producer")
}

/// Every value of the topic visible under `isolation`, read until idle.
fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{isolation}"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            last = Instant::now();
        }
    }
    out.sort();
    out
}

/// Produce v8 of one batch to one partition, with the transactional id:
/// the partition's error code.
fn produce(addr: &str, tid: &str, topic: &str, partition: i32, batch: Vec<u8>) -> i16 {
    let req = ProduceRequest::default().with_transactional_id(Some(TransactionalId(name(tid)))).with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(name(topic)))
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch.into()))]),
    ]);
    let resp: ProduceResponse = call(addr, ApiKey::Produce, 8, &req);
    resp.responses[0].partition_responses[0].error_code
}

fn add_partition(coordinator: &str, tid: &str, pid: i64, epoch: i16, topic: &str, partition: i32) {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(name(tid)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(name(topic))).with_partitions(vec![partition])]);
    let resp: AddPartitionsToTxnResponse = call(coordinator, ApiKey::AddPartitionsToTxn, 3, &req);
    assert_eq!(resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0, "AddPartitionsToTxn");
}

fn end_txn(coordinator: &str, tid: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let req = EndTxnRequest::default().with_transactional_id(TransactionalId(name(tid))).with_producer_id(ProducerId(pid)).with_producer_epoch(epoch).with_committed(commit);
    let resp: EndTxnResponse = call(coordinator, ApiKey::EndTxn, 3, &req);
    resp.error_code
}

/// A partition of `topic` whose leader is not broker 1, the coordinator.
fn partition_led_elsewhere(all: &str, topic: &str) -> (i32, usize) {
    let leaders = wait_for_leaders(all, topic, PARTITIONS as usize);
    let (p, leader) = leaders.iter().enumerate().find(|(_, l)| **l != 1).expect("leaders are spread over the brokers");
    (p as i32, *leader as usize - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_reach_remote_leaders_and_unconfirmed_batches_are_refused() {
    let brokers = Ferry::start_cluster(3, &[]);
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    create_topic_when_ready(&brokers[0].bootstrap(), "ctx", PARTITIONS, 3).await;
    let (partition, leader) = partition_led_elsewhere(&all, "ctx");
    let (coordinator, leader_addr) = (brokers[0].bootstrap(), brokers[leader].bootstrap());

    let req = InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(name("t-raw")))).with_transaction_timeout_ms(60_000);
    let init: InitProducerIdResponse = call(&coordinator, ApiKey::InitProducerId, 3, &req);
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);

    let first = transactional_batch(&[b"in-txn"], pid, epoch, 0);
    assert_eq!(produce(&leader_addr, "t-raw", "ctx", partition, first.clone()), INVALID_TXN_STATE, "a partition not in the transaction");
    add_partition(&coordinator, "t-raw", pid, epoch, "ctx", partition);
    assert_eq!(produce(&leader_addr, "t-raw", "ctx", partition, first), 0, "confirmed by the coordinator");
    assert!(read_all(&all, "ctx", "read_committed").is_empty(), "open on the remote leader: held back");
    assert_eq!(end_txn(&coordinator, "t-raw", pid, epoch, true), 0, "the commit marker committed on the remote leader");
    assert_eq!(read_all(&all, "ctx", "read_committed"), vec!["in-txn"]);
    // After the marker the partition is out of the transaction again.
    let late = transactional_batch(&[b"late"], pid, epoch, 1);
    assert_eq!(produce(&leader_addr, "t-raw", "ctx", partition, late), INVALID_TXN_STATE, "a batch after its transaction ended");

    // librdkafka: one committed and one aborted transaction over every partition.
    let p = txn_producer(&all, "t-client");
    p.init_transactions(Duration::from_secs(30)).expect("init");
    for (round, commit) in [("kept", true), ("dropped", false)] {
        p.begin_transaction().expect("begin");
        for i in 0..30 {
            let v = format!("{round}-{i:02}");
            p.send(BaseRecord::<(), str>::to("ctx").partition(i % PARTITIONS).payload(&v)).map_err(|(e, _)| e).expect("queued");
        }
        p.flush(Duration::from_secs(30)).expect("flushed");
        if commit {
            p.commit_transaction(Duration::from_secs(30)).expect("commit");
        } else {
            p.abort_transaction(Duration::from_secs(30)).expect("abort");
        }
    }
    let committed = read_all(&all, "ctx", "read_committed");
    assert_eq!(committed.len(), 31, "{committed:?}");
    assert!(committed.iter().all(|v| !v.starts_with("dropped")), "no aborted record read_committed");
    let uncommitted = read_all(&all, "ctx", "read_uncommitted");
    assert_eq!(uncommitted.iter().filter(|v| v.starts_with("dropped")).count(), 30, "read_uncommitted sees the aborted ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_survives_its_partition_leader_killed() {
    let mut brokers = Ferry::start_cluster(3, &[]);
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    create_topic_when_ready(&brokers[0].bootstrap(), "ktx", PARTITIONS, 3).await;
    let (_, leader) = partition_led_elsewhere(&all, "ktx");
    let p = txn_producer(&all, "t-kill");
    p.init_transactions(Duration::from_secs(30)).expect("init");
    let mut sent = Vec::new();
    for txn in 0..6 {
        p.begin_transaction().expect("begin");
        for i in 0..60 {
            let v = format!("t{txn}-{i:02}");
            p.send(BaseRecord::<(), str>::to("ktx").partition(i % PARTITIONS).payload(&v)).map_err(|(e, _)| e).expect("queued");
            sent.push(v);
        }
        p.flush(Duration::from_secs(60)).expect("flushed");
        if txn == 2 {
            // Its records are in; the leader of one of its partitions dies before the commit.
            brokers[leader].kill9();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match p.commit_transaction(Duration::from_secs(30)) {
                Ok(()) => break,
                Err(e) if e.rdkafka_error_code().is_some() && Instant::now() < deadline && !format!("{e:?}").contains("Fatal") => {
                    eprintln!("commit retried: {e:?}");
                }
                Err(e) => panic!("commit of transaction {txn} failed: {e:?}"),
            }
        }
        if txn == 3 {
            brokers[leader].spawn_and_wait();
        }
    }
    sent.sort();
    let mut committed = Vec::new();
    wait_until("every committed record readable read_committed", Duration::from_secs(30), || {
        committed = read_all(&all, "ktx", "read_committed");
        committed.len() >= sent.len()
    });
    assert_eq!(committed, sent, "every committed record exactly once");
}
