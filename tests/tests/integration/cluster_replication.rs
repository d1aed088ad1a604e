//! Partition replication on three real brokers: a topic with three replicas
//! per partition keeps every acknowledged record, exactly once and at its
//! acknowledged offset, while partition leaders are SIGKILLed again and
//! again; leadership returns to the preferred replicas; the replicas hold
//! the same bytes; and with two brokers of three down nothing is
//! acknowledged until one returns.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_tests::cluster::{create_topic_when_ready, in_sync, leaders, wait_for_leaders, wait_until};
use ferry_tests::kafka::{producer, read_partition};
use ferry_tests::{segment_files, Ferry};
use rdkafka::producer::FutureRecord;

const PARTITIONS: i32 = 3;

/// Every replica's segments of a partition, concatenated.
fn replica_bytes(broker: &Ferry, topic: &str, partition: i32) -> Vec<u8> {
    segment_files(&broker.partition_dir(topic, partition)).iter().flat_map(|f| std::fs::read(f).expect("segment")).collect()
}

/// OffsetForLeaderEpoch v4 for one partition: (epoch, end offset).
fn epoch_end_offset(addr: &str, topic: &str, partition: i32, leader_epoch: i32) -> (i32, i64) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName};
    let part = OffsetForLeaderPartition::default().with_partition(partition).with_current_leader_epoch(-1).with_leader_epoch(leader_epoch);
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![OffsetForLeaderTopic::default().with_topic(TopicName(topic.to_string().into())).with_partitions(vec![part])]);
    let resp: OffsetForLeaderEpochResponse = ferry_tests::raw::call(addr, ApiKey::OffsetForLeaderEpoch, 4, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "OffsetForLeaderEpoch error");
    (p.leader_epoch, p.end_offset)
}

/// A live broker's bootstrap address.
fn live(brokers: &mut [Ferry]) -> String {
    brokers.iter_mut().find_map(|b| b.is_running().then(|| b.bootstrap())).expect("a live broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_leader_kills() {
    let mut brokers = Ferry::start_cluster(3, &[]);
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    create_topic_when_ready(&brokers[0].bootstrap(), "acked", PARTITIONS, 3).await;
    wait_for_leaders(&all, "acked", PARTITIONS as usize);

    // An idempotent producer writes without pause while leaders die.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, all) = (stop.clone(), all.clone());
        tokio::spawn(async move {
            let p = producer(&all, &[("enable.idempotence", "true"), ("message.timeout.ms", "60000")]);
            let mut acked: Vec<(i32, i64, String)> = Vec::new();
            let mut failed = 0usize;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let round: Vec<_> = (i..i + 500)
                    .map(|n| {
                        let v = format!("v{n}");
                        let f = p.send_result(FutureRecord::<str, str>::to("acked").partition(n as i32 % PARTITIONS).payload(&v)).expect("queued");
                        (v, f)
                    })
                    .collect();
                i += 500;
                for (v, f) in round {
                    match f.await.expect("delivery report") {
                        Ok(d) => acked.push((d.partition, d.offset, v)),
                        Err(_) => failed += 1,
                    }
                }
            }
            (acked, failed)
        })
    };

    let mut kills = 0;
    let mut stalls = Vec::new();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = wait_for_leaders(&live(&mut brokers), "acked", PARTITIONS as usize);
        let victim = before[round % PARTITIONS as usize];
        let killed_at = Instant::now();
        brokers[victim as usize - 1].kill9();
        kills += 1;
        let survivor = live(&mut brokers);
        wait_until("a new leader", Duration::from_secs(15), || {
            let now = leaders(&survivor, "acked");
            now.len() == PARTITIONS as usize && now.iter().all(|l| *l > 0 && *l != victim)
        });
        stalls.push(killed_at.elapsed());
        if round == 0 {
            // The new leaders report that the dead broker fell out of sync.
            wait_until("the killed broker out of every ISR", Duration::from_secs(40), || {
                let isr = in_sync(&survivor, "acked");
                isr.len() == PARTITIONS as usize && isr.iter().all(|r| !r.contains(&victim) && r.len() == 2)
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        brokers[victim as usize - 1].spawn_and_wait();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.await.expect("writer");
    eprintln!("{kills} leader kills; new leaders known after {stalls:?}; {} records acknowledged, {failed} not", acked.len());
    assert!(acked.len() >= 5_000, "too few records acknowledged: {}", acked.len());

    // Every acknowledged record is where it was acknowledged, and no value twice.
    let mut seen_values = BTreeSet::new();
    for partition in 0..PARTITIONS {
        let read = read_partition(&all, "acked", partition, Duration::from_secs(5));
        for v in read.values() {
            assert!(seen_values.insert(v.clone()), "{v} read twice");
        }
        let expected: BTreeMap<i64, &String> = acked.iter().filter(|(p, _, _)| *p == partition).map(|(_, o, v)| (*o, v)).collect();
        for (offset, v) in &expected {
            assert_eq!(read.get(offset), Some(*v), "partition {partition} offset {offset}");
        }
    }

    // Leadership goes back to each partition's preferred (first) replica,
    // so the leaders stay spread over the brokers after restarts.
    wait_until("leaders back on their preferred replicas", Duration::from_secs(30), || leaders(&all, "acked") == vec![1, 2, 3]);
    wait_until("every replica back in sync", Duration::from_secs(30), || in_sync(&all, "acked") == vec![vec![1, 2, 3]; 3]);

    // OffsetForLeaderEpoch: an epoch older than any ends nowhere; the newest
    // epoch that wrote data ends at the high watermark (nothing more since).
    let leader0 = &brokers[0].bootstrap();
    let (epoch, end) = epoch_end_offset(leader0, "acked", 0, i32::MAX - 1);
    assert!(epoch >= 1, "the newest data epoch is a Raft term: {epoch}");
    let acked_end = acked.iter().filter(|(p, _, _)| *p == 0).map(|(_, o, _)| o + 1).max().unwrap_or(0);
    assert!(end >= acked_end, "epoch {epoch} ends at {end}, below acknowledged offset {acked_end}");
    assert_eq!(epoch_end_offset(leader0, "acked", 0, 0), (-1, -1));

    // Once every replica caught up, they hold the same bytes.
    for partition in 0..PARTITIONS {
        wait_until(&format!("replicas of partition {partition} agree"), Duration::from_secs(20), || {
            let copies: Vec<Vec<u8>> = brokers.iter().map(|b| replica_bytes(b, "acked", partition)).collect();
            copies.windows(2).all(|w| w[0] == w[1])
        });
    }
    for b in &mut brokers {
        assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_down_means_no_acknowledgement() {
    let mut brokers = Ferry::start_cluster(3, &[]);
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    create_topic_when_ready(&brokers[0].bootstrap(), "majority", 1, 3).await;
    let leader = wait_for_leaders(&all, "majority", 1)[0];
    let p = producer(&all, &[("message.timeout.ms", "6000")]);
    let send = |v: &str| p.send_result(FutureRecord::<str, str>::to("majority").partition(0).payload(v)).expect("queued");
    let first = send("before").await.expect("report").expect("acknowledged");
    // Leader changes take no offset: a new topic's first record is at 0, as in Kafka.
    assert_eq!(first.offset, 0);

    // The leader stays; both followers die: it cannot reach a majority.
    let followers: Vec<usize> = (1..=3).filter(|id| *id != leader).map(|id| id as usize - 1).collect();
    for f in &followers {
        brokers[*f].kill9();
    }
    let refused = send("without-majority").await.expect("report");
    assert!(refused.is_err(), "acknowledged without a majority: {refused:?}");

    // One follower returns: a majority again, producing resumes.
    brokers[followers[0]].spawn_and_wait();
    let mut resumed = false;
    for _ in 0..10 {
        if send("after").await.expect("report").is_ok() {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "producing did not resume with two brokers of three");
    // (The reader treats a broker it cannot reach as an error.)
    brokers[followers[1]].spawn_and_wait();
    let read = read_partition(&all, "majority", 0, Duration::from_secs(3));
    let values: Vec<&String> = read.values().collect();
    assert!(values.contains(&&"before".to_string()) && values.contains(&&"after".to_string()), "{values:?}");
}
