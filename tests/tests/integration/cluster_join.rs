//! A fourth broker joins a running three-broker cluster (it is not among
//! `--cluster-voters`: Kafka's broker that is not a controller) and a
//! partition's replicas move onto it while a producer writes. It must then
//! be a real replica: the partition's leader moves to it, it survives its
//! own SIGKILL, and with one of the old replicas killed it is part of the
//! majority that acknowledges new records.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_tests::cluster::{admin, create_topic_when_ready, leaders, wait_for_leaders, wait_until};
use ferry_tests::kafka::{produce_all, producer, read_partition};
use ferry_tests::reassign::{moves, reassign, replicas, spawn_writer};
use ferry_tests::{http_get, raw, segment_files, Ferry};
use serde_json::{json, Value};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{ApiKey, DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

/// The metadata group's voters and observers, as `addr` describes them
/// in DescribeQuorum `version`.
fn quorum(addr: &str, version: i16) -> (Vec<i32>, Vec<i32>) {
    let topic = TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)]);
    let resp: DescribeQuorumResponse = raw::call(addr, ApiKey::DescribeQuorum, version, &DescribeQuorumRequest::default().with_topics(vec![topic]));
    let Some(p) = resp.topics.first().and_then(|t| t.partitions.first()) else { return (Vec::new(), Vec::new()) };
    let ids = |v: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| v.iter().map(|r| r.replica_id.0).collect::<Vec<_>>();
    (ids(&p.current_voters), ids(&p.observers))
}

/// The brokers Metadata lists, sorted.
fn brokers_listed(bootstrap: &str) -> Vec<i32> {
    let Ok(md) = admin(bootstrap).inner().fetch_metadata(None, Duration::from_secs(3)) else { return Vec::new() };
    let mut ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_broker_joins_and_takes_over_a_replica() {
    let mut brokers = Ferry::start_cluster(3, &[]);
    let first = brokers[0].bootstrap();
    let voters = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    create_topic_when_ready(&first, "grow", 1, 3).await;
    let leader = wait_for_leaders(&voters, "grow", 1)[0];
    let (stop, writer) = spawn_writer(&voters, &["grow"]);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Broker 4 joins while the producer writes: the metadata leader admits
    // it as a learner, it replays the metadata log and registers.
    brokers.push(Ferry::join_cluster(&brokers, 4, &[]));
    wait_until("broker 4 to be listed by every broker", Duration::from_secs(30), || {
        brokers.iter().all(|b| brokers_listed(&b.bootstrap()) == vec![1, 2, 3, 4])
    });
    assert_eq!(brokers_listed(&brokers[3].bootstrap()), vec![1, 2, 3, 4], "the joiner's own Metadata");
    let mut seen = (Vec::new(), Vec::new());
    wait_until("DescribeQuorum to list broker 4 as an observer", Duration::from_secs(10), || {
        seen = quorum(&first, 2);
        seen.1 == vec![4]
    });
    for version in [0, 1] {
        assert_eq!(quorum(&first, version).1, vec![4], "DescribeQuorum v{version}");
    }
    let mut voter_ids = seen.0.clone();
    voter_ids.sort();
    assert_eq!(voter_ids, vec![1, 2, 3], "the voters stay the configured ones");

    // The partition's leader leaves; broker 4 takes its place, first.
    let kept: Vec<i32> = replicas(&voters, "grow").into_iter().filter(|r| *r != leader).collect();
    let target = vec![4, kept[0], kept[1]];
    assert_eq!(reassign(&brokers[3].bootstrap(), "grow", Some(target.clone())), 0, "asked at the new broker");
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    // The move is committed before the answer, but each broker applies it
    // from the metadata log in its own time: wait until all of them have
    // seen it both start and finish.
    wait_until("the move onto broker 4 to finish on every broker", Duration::from_secs(60), || {
        brokers.iter().all(|b| moves(&b.bootstrap()).is_empty() && replicas(&b.bootstrap(), "grow") == target)
    });
    wait_until("broker 4, the preferred replica, to lead", Duration::from_secs(30), || leaders(&all, "grow") == vec![4]);
    // Any broker's console and /metrics show the partition as the cluster has it.
    wait_until("broker 1's /api/cluster to show broker 4 leading with three in sync", Duration::from_secs(20), || {
        let view = http_get(brokers[0].http_addr().expect("console"), "/api/cluster").and_then(|b| serde_json::from_str::<Value>(&b).ok());
        let grow = view.as_ref().and_then(|v| v["partitions"].as_array()?.iter().find(|p| p["topic"] == "grow").cloned());
        grow.is_some_and(|p| p["leader"] == 4 && p["replicas"] == json!(target) && p["in_sync_replicas"].as_array().map(Vec::len) == Some(3) && p["under_replicated"] == false)
    });
    assert_eq!(brokers[0].metric("ferry_partition_leader{topic=\"grow\",partition=\"0\"}"), vec![("ferry_partition_leader{topic=\"grow\",partition=\"0\"}".to_string(), 4.0)]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = writer.await.expect("writer");
    assert!(acked.len() >= 1_000, "too few records acknowledged: {}", acked.len());
    let left = &brokers[leader as usize - 1];
    wait_until("the replica that left to be emptied", Duration::from_secs(10), || {
        segment_files(&left.partition_dir("grow", 0)).iter().all(|f| std::fs::metadata(f).map_or(0, |m| m.len()) == 0)
    });

    // A topic created now places replicas on the new broker too.
    create_topic_when_ready(&first, "spread", 4, 1).await;
    wait_for_leaders(&all, "spread", 4);
    let spread: BTreeSet<i32> = leaders(&all, "spread").into_iter().collect();
    assert_eq!(spread, BTreeSet::from([1, 2, 3, 4]), "one partition on each broker");

    // Broker 4 is SIGKILLed and comes back from its own disk; then one of
    // the old replicas dies, so no majority forms without broker 4.
    brokers[3].kill9();
    brokers[3].spawn_and_wait();
    brokers[kept[0] as usize - 1].kill9();
    let live: String = brokers.iter_mut().filter_map(|b| b.is_running().then(|| b.bootstrap())).collect::<Vec<_>>().join(",");
    wait_for_leaders(&live, "grow", 1);
    let p = producer(&live, &[("message.timeout.ms", "60000")]);
    let values: Vec<String> = (0..2_000).map(|i| format!("after{i}")).collect();
    let offsets = produce_all(&p, "grow", &values).await;
    acked.extend(offsets.into_iter().zip(values).map(|(o, v)| ("grow", o, v)));

    // The killed replica drops out of the ISR; its leader counts the
    // partition under-replicated (Kafka's UnderReplicatedPartitions).
    wait_until("the partition to be counted under-replicated", Duration::from_secs(40), || {
        let led: f64 = brokers.iter().flat_map(|b| b.metric("ferry_under_replicated_partitions ")).map(|(_, v)| v).sum();
        led == 1.0 && brokers[3].metric("ferry_partition_under_replicated{topic=\"grow\"").first().map(|(_, v)| *v) == Some(1.0)
    });

    let read = read_partition(&live, "grow", 0, Duration::from_secs(5));
    for (_, offset, v) in &acked {
        assert_eq!(read.get(offset), Some(v), "offset {offset}");
    }
    assert_eq!(read.len(), read.values().collect::<BTreeSet<_>>().len(), "a value read twice");
    eprintln!("{} acknowledged records at their offsets; replicas {target:?}, killed broker {}", acked.len(), kept[0]);
    for b in &mut brokers {
        if b.is_running() {
            assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
        }
    }
}

/// With `--cluster-secret-file`, a process that reaches the cluster
/// listener but does not know the secret is refused before any of its
/// messages is taken: it does not join, and the cluster carries on. A
/// broker given the same secret joins as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_the_cluster_secret_cannot_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (good, wrong) = (dir.path().join("secret"), dir.path().join("wrong"));
    std::fs::write(&good, "8c1f0e4b6d2a9c7e5f3b1d0a2c4e6f8a\n").expect("write");
    std::fs::write(&wrong, "0000000000000000000000000000000000\n").expect("write");
    let (good, wrong) = (good.to_str().expect("utf-8"), wrong.to_str().expect("utf-8"));
    let mut brokers = Ferry::start_cluster(3, &["--cluster-secret-file", good]);
    let first = brokers[0].bootstrap();
    create_topic_when_ready(&first, "guarded", 1, 3).await;
    let voters = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    wait_for_leaders(&voters, "guarded", 1);

    let mut strangers = vec![Ferry::join_cluster(&brokers, 4, &["--cluster-secret-file", wrong]), Ferry::join_cluster(&brokers, 5, &[])];
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(brokers_listed(&first), vec![1, 2, 3], "a broker without the secret was let in");
    let refusals = brokers.iter().map(|b| b.log()).collect::<String>();
    assert!(refusals.contains("node 4 at") && refusals.contains("does not know the cluster secret"), "the wrong secret is named:\n{refusals}");
    assert!(refusals.contains("node 5 at"), "a hello without a proof is refused too:\n{refusals}");
    assert!(strangers[1].log().contains("cluster connections are not authenticated"), "the broker without a secret is warned:\n{}", strangers[1].log());

    // The cluster carries on, and the right secret lets a broker in.
    let p = producer(&voters, &[]);
    let values: Vec<String> = (0..100).map(|i| format!("g{i}")).collect();
    produce_all(&p, "guarded", &values).await;
    brokers.push(Ferry::join_cluster(&brokers, 6, &["--cluster-secret-file", good]));
    wait_until("broker 6, with the secret, to be listed", Duration::from_secs(30), || brokers_listed(&first) == vec![1, 2, 3, 6]);
    for b in brokers.iter_mut().chain(strangers.iter_mut()) {
        assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
    }
}
