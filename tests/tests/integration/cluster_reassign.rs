//! Moving partitions' replicas (AlterPartitionReassignments, KIP-455) on
//! three real brokers while a producer writes: a one-replica partition
//! moves to another broker, a two-replica partition swaps one replica for
//! the third broker. New replicas catch up as Raft learners, the leader
//! hands over when it is the one leaving, and every acknowledged record is
//! still at its offset afterwards, with the broker they left SIGKILLed and
//! the moved replicas restarted. Kafka's refusals come back as Kafka's codes.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_tests::cluster::{create_topic_when_ready, leaders, wait_for_leaders, wait_until};
use ferry_tests::kafka::read_partition;
use ferry_tests::reassign::{moves, reassign, replicas, spawn_writer};
use ferry_tests::{segment_files, Ferry};

fn replica_bytes(broker: &Ferry, topic: &str) -> usize {
    segment_files(&broker.partition_dir(topic, 0)).iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len() as usize)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_move_while_producing_and_nothing_acknowledged_is_lost() {
    let mut brokers = Ferry::start_cluster(3, &[]);
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    let first = brokers[0].bootstrap();
    create_topic_when_ready(&first, "single", 1, 1).await;
    create_topic_when_ready(&first, "pair", 1, 2).await;
    wait_for_leaders(&all, "single", 1);
    wait_for_leaders(&all, "pair", 1);
    let single_from = replicas(&all, "single");
    let pair_from = replicas(&all, "pair");
    // "single" goes to a broker that holds neither; "pair" swaps its
    // preferred (leading) replica for the broker it lacks.
    let single_to = vec![(1..=3).find(|id| *id != single_from[0] && *id != pair_from[0]).expect("a free broker")];
    let outsider = (1..=3).find(|id| !pair_from.contains(id)).expect("a free broker");
    let pair_to = vec![outsider, pair_from[1]];

    // Kafka's refusals, before anything moves.
    assert_eq!(reassign(&first, "single", Some(vec![9])), 39, "an unknown broker: INVALID_REPLICA_ASSIGNMENT");
    assert_eq!(reassign(&first, "single", Some(vec![1, 1])), 39, "a broker twice: INVALID_REPLICA_ASSIGNMENT");
    assert_eq!(reassign(&first, "single", None), 85, "cancel without a move: NO_REASSIGNMENT_IN_PROGRESS");
    assert_eq!(reassign(&first, "missing", Some(vec![1])), 3, "UNKNOWN_TOPIC_OR_PARTITION");

    let (stop, writer) = spawn_writer(&all, &["single", "pair"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reassign(&brokers[2].bootstrap(), "single", Some(single_to.clone())), 0);
    assert_eq!(reassign(&brokers[1].bootstrap(), "pair", Some(pair_to.clone())), 0);
    let listed = moves(&first);
    eprintln!("moves under way: {listed:?}");
    // Each broker applies the moves from the metadata log in its own time;
    // the one asked has them before it answers, the others may not yet.
    wait_until("both moves to finish on every broker", Duration::from_secs(60), || {
        brokers.iter().all(|b| moves(&b.bootstrap()).is_empty() && replicas(&b.bootstrap(), "single") == single_to && replicas(&b.bootstrap(), "pair") == pair_to)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    assert!(acked.len() >= 1_000, "too few records acknowledged: {}", acked.len());
    assert_eq!(replicas(&all, "single"), single_to);
    assert_eq!(replicas(&all, "pair"), pair_to);
    wait_until("the moved partitions led by their new preferred replicas", Duration::from_secs(30), || {
        leaders(&all, "single") == vec![single_to[0] as i32] && leaders(&all, "pair") == vec![outsider]
    });
    // The brokers the replicas left hold none of their data any more.
    wait_until("the left replicas emptied", Duration::from_secs(10), || {
        replica_bytes(&brokers[single_from[0] as usize - 1], "single") == 0 && replica_bytes(&brokers[pair_from[0] as usize - 1], "pair") == 0
    });

    // Kill the broker "pair" left and restart the replicas that moved: the
    // one-replica group must come back knowing it is now on its new broker.
    brokers[pair_from[0] as usize - 1].kill9();
    for id in BTreeSet::from([single_to[0], outsider]) {
        let b = &mut brokers[id as usize - 1];
        assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
        b.spawn_and_wait();
    }
    let live: String = brokers.iter_mut().filter_map(|b| b.is_running().then(|| b.bootstrap())).collect::<Vec<_>>().join(",");
    wait_for_leaders(&live, "single", 1);
    wait_for_leaders(&live, "pair", 1);
    for topic in ["single", "pair"] {
        let read = read_partition(&live, topic, 0, Duration::from_secs(5));
        let expected: Vec<_> = acked.iter().filter(|(t, _, _)| *t == topic).collect();
        for (_, offset, v) in &expected {
            assert_eq!(read.get(offset), Some(v), "{topic} offset {offset}");
        }
        assert_eq!(read.len(), read.values().collect::<BTreeSet<_>>().len(), "{topic}: a value read twice");
        eprintln!("{topic}: {} acknowledged records all at their offsets after the move", expected.len());
    }
    for b in &mut brokers {
        if b.is_running() {
            assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
        }
    }
}

/// A three-replica partition shrinks to the two replicas that do not lead
/// it, and its leader is SIGKILLed as the move starts: the others finish
/// the move, the producer goes on, and the killed broker, restarted, holds
/// no replica and none of the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_finishes_when_its_leader_is_killed_midway() {
    let mut brokers = Ferry::start_cluster(3, &[]);
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    create_topic_when_ready(&brokers[0].bootstrap(), "shrink", 1, 3).await;
    let leader = wait_for_leaders(&all, "shrink", 1)[0];
    let target: Vec<i32> = replicas(&all, "shrink").into_iter().filter(|r| *r != leader).collect();
    let (stop, writer) = spawn_writer(&all, &["shrink"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked_at = target[0] as usize - 1;
    assert_eq!(reassign(&brokers[asked_at].bootstrap(), "shrink", Some(target.clone())), 0);
    brokers[leader as usize - 1].kill9();
    let survivor = brokers[asked_at].bootstrap();
    wait_until("the move to finish without its first leader", Duration::from_secs(60), || moves(&survivor).is_empty());
    assert_eq!(replicas(&survivor, "shrink"), target);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    assert!(acked.len() >= 1_000, "too few records acknowledged: {}", acked.len());

    let killed = &mut brokers[leader as usize - 1];
    killed.spawn_and_wait();
    wait_until("the restarted broker to drop the replica it lost", Duration::from_secs(20), || replica_bytes(killed, "shrink") == 0);
    let read = read_partition(&all, "shrink", 0, Duration::from_secs(5));
    for (_, offset, v) in &acked {
        assert_eq!(read.get(offset), Some(v), "offset {offset}");
    }
    assert_eq!(read.len(), read.values().collect::<BTreeSet<_>>().len(), "a value read twice");
    eprintln!("{} acknowledged records at their offsets; replicas now {target:?}", acked.len());
    for b in &mut brokers {
        assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
    }
}
