//! Faults injected through the storage seam (FERRY_FAULT_INJECT): the
//! failing partition answers KAFKA_STORAGE_ERROR, the rest keep serving,
//! and nothing acknowledged is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_tests::kafka::{produce_all, producer, read_partition};
use ferry_tests::Ferry;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

/// Produces one record at a time until one fails; returns the acknowledged
/// records and the error.
async fn produce_until_error(bootstrap: &str, topic: &str, acks: &str) -> (BTreeMap<i64, String>, KafkaError) {
    let p = producer(
        bootstrap,
        &[("acks", acks), ("message.send.max.retries", "0"), ("message.timeout.ms", "5000"), ("linger.ms", "0")],
    );
    let mut acked = BTreeMap::new();
    for i in 0..1000 {
        let value = format!("{topic}-{i:04}-{}", "x".repeat(80));
        let f = p.send_result(FutureRecord::<str, str>::to(topic).partition(0).payload(&value)).expect("enqueue");
        match f.await.expect("future") {
            Ok(d) => {
                acked.insert(d.offset, value);
            }
            Err((e, _)) => return (acked, e),
        }
    }
    panic!("no error after 1000 records: the fault was not injected");
}

fn assert_storage_error(e: &KafkaError) {
    assert_eq!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::KafkaStorageError), "expected KAFKA_STORAGE_ERROR, got {e:?}");
}

async fn check_fault(spec: &str, topic: &str, acks: &str) {
    let mut ferry = Ferry::start_with(&[], &[("FERRY_FAULT_INJECT", spec)]);
    let (acked, err) = produce_until_error(&ferry.bootstrap(), topic, acks).await;
    assert_storage_error(&err);
    assert!(acked.len() >= 3, "some records were acknowledged before the fault ({})", acked.len());
    // Other partitions keep taking writes; the failed one keeps serving reads.
    let p = producer(&ferry.bootstrap(), &[("acks", "all")]);
    assert_eq!(produce_all(&p, "healthy", &["fine".into()]).await, vec![0]);
    let read = read_partition(&ferry.bootstrap(), topic, 0, Duration::from_secs(2));
    for (o, v) in &acked {
        assert_eq!(read.get(o), Some(v), "acknowledged record {o} unreadable while faulty");
    }
    // After a restart without faults, every acknowledged record is there.
    ferry.kill9();
    ferry.envs.clear();
    ferry.spawn_and_wait();
    let read = read_partition(&ferry.bootstrap(), topic, 0, Duration::from_secs(2));
    for (o, v) in &acked {
        assert_eq!(read.get(o), Some(v), "acknowledged record {o} lost after restart");
    }
}

#[tokio::test]
async fn failed_fsync_fails_acks_all_and_loses_nothing() {
    check_fault("fsync-error:fsyncfail:5", "fsyncfail", "all").await;
}

#[tokio::test]
async fn failed_write_is_a_storage_error() {
    check_fault("write-error:writefail:5", "writefail", "1").await;
}

#[tokio::test]
async fn full_disk_is_a_storage_error() {
    check_fault("disk-full:diskfull:3000", "diskfull", "all").await;
}

#[tokio::test]
async fn after_failed_fsync_partition_takes_no_writes_until_restart() {
    let ferry = Ferry::start_with(&[], &[("FERRY_FAULT_INJECT", "fsync-error:poison:2")]);
    let (_, err) = produce_until_error(&ferry.bootstrap(), "poison", "all").await;
    assert_storage_error(&err);
    // acks=1 does not fsync, yet the poisoned partition refuses it too.
    let (acked, err) = produce_until_error(&ferry.bootstrap(), "poison", "1").await;
    assert!(acked.is_empty());
    assert_storage_error(&err);
}
