//! Whatever the acks level, a partition's offsets never go back: after a
//! SIGKILL with a torn tail, or a restart after failed fsyncs, the log
//! continues where the surviving data ends, and no offset holds two records.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use ferry_tests::kafka::{produce_all, producer, read_partition};
use ferry_tests::{segment_files, Ferry};
use rdkafka::producer::FutureRecord;

const ROUNDS: usize = 8;
const PER_ROUND: usize = 500;

/// Appends what a power cut mid-write leaves: a batch header promising
/// more bytes than follow (as `ferry verify --faults torn-tail` does).
fn tear_tail(ferry: &Ferry, topic: &str, round: usize) {
    let seg = segment_files(&ferry.partition_dir(topic, 0)).pop().expect("segment");
    let mut torn = Vec::new();
    torn.extend_from_slice(&0i64.to_be_bytes());
    torn.extend_from_slice(&1000i32.to_be_bytes());
    torn.extend(std::iter::repeat_n(0x5A, 1 + (round * 37) % 200));
    std::fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&torn).unwrap();
}

/// Every offset 0..n holds one record, no record is stored twice, and each
/// round's records lie after every earlier round's.
fn assert_offsets_dense_and_monotonic(read: &BTreeMap<i64, String>, expected_min: usize) {
    assert!(read.len() >= expected_min, "only {} records survived", read.len());
    let offsets: Vec<i64> = read.keys().copied().collect();
    assert_eq!(offsets, (0..read.len() as i64).collect::<Vec<_>>(), "offsets are dense from 0");
    let mut seen: HashMap<&str, i64> = HashMap::new();
    let mut last_round_max: BTreeMap<usize, i64> = BTreeMap::new();
    for (offset, value) in read {
        if let Some(earlier) = seen.insert(value, *offset) {
            panic!("{value} stored at offsets {earlier} and {offset}");
        }
        let round: usize = value.split('-').nth(1).and_then(|r| r.parse().ok()).expect("round in value");
        if let Some((later_round, later_offset)) = last_round_max.range(round + 1..).next() {
            panic!("{value} (round {round}) at offset {offset}, after round {later_round}'s offset {later_offset}: offsets went back");
        }
        last_round_max.insert(round, *offset);
    }
}

#[tokio::test]
async fn acks0_writes_then_torn_tails_never_reuse_offsets() {
    let mut ferry = Ferry::start();
    let topic = "amo-torn";
    for round in 0..ROUNDS {
        let p = producer(&ferry.bootstrap(), &[("acks", "0"), ("message.send.max.retries", "0")]);
        let values: Vec<String> = (0..PER_ROUND).map(|i| format!("r-{round}-{i}")).collect();
        produce_all(&p, topic, &values).await;
        drop(p);
        // acks=0 gives no answer: let the broker write what it was sent.
        tokio::time::sleep(Duration::from_millis(300)).await;
        ferry.kill9();
        tear_tail(&ferry, topic, round);
        ferry.spawn_and_wait();
    }
    assert!(ferry.log().contains("truncating torn tail"), "the torn tails were seen");
    let read = read_partition(&ferry.bootstrap(), topic, 0, Duration::from_secs(2));
    assert_offsets_dense_and_monotonic(&read, ROUNDS * PER_ROUND * 9 / 10);
}

#[tokio::test]
async fn restart_after_failed_fsyncs_never_reuses_offsets() {
    let topic = "amo-fsync";
    let mut ferry = Ferry::start_with(&[], &[("FERRY_FAULT_INJECT", "fsync-error:amo-fsync:3")]);
    for round in 0..ROUNDS {
        let p = producer(&ferry.bootstrap(), &[("acks", "0"), ("message.send.max.retries", "0")]);
        let values: Vec<String> = (0..PER_ROUND).map(|i| format!("r-{round}-{i}")).collect();
        produce_all(&p, topic, &values).await;
        drop(p);
        // An acks=all write makes the partition fsync, and the armed seam fail it.
        let durable = producer(&ferry.bootstrap(), &[("acks", "all"), ("message.timeout.ms", "3000")]);
        let value = format!("r-{round}-sync");
        let sent = durable.send_result(FutureRecord::<str, str>::to(topic).partition(0).payload(&value)).expect("enqueue");
        // Acknowledged or refused with KAFKA_STORAGE_ERROR: either is fine here.
        let _ = tokio::time::timeout(Duration::from_secs(5), sent).await;
        ferry.kill9();
        // Every other restart keeps the fault armed, as `ferry verify --faults fsync-error` does.
        if round % 2 == 1 {
            ferry.envs.clear();
        } else {
            ferry.envs = vec![("FERRY_FAULT_INJECT".into(), "fsync-error:amo-fsync:3".into())];
        }
        ferry.spawn_and_wait();
    }
    ferry.kill9();
    ferry.envs.clear();
    ferry.spawn_and_wait();
    let read = read_partition(&ferry.bootstrap(), topic, 0, Duration::from_secs(2));
    assert_offsets_dense_and_monotonic(&read, ROUNDS * PER_ROUND / 2);
}
