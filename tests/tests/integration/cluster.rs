//! Three real `ferry` processes started with `--cluster-voters`: the
//! metadata group elects a leader, every broker serves the same metadata,
//! partitions are spread over the brokers and served by their leaders, and
//! the metadata leader's SIGKILL does not stop topic administration.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_tests::cluster::{admin, create_topic, wait_for_leaders, wait_until};
use ferry_tests::kafka::read_partition;
use ferry_tests::{raw, Ferry};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// (broker ids, controller id) as `bootstrap` answers Metadata.
fn brokers_seen(bootstrap: &str) -> (Vec<i32>, i32) {
    let md = match admin(bootstrap).inner().fetch_metadata(None, Duration::from_secs(5)) {
        Ok(md) => md,
        Err(_) => return (Vec::new(), -1),
    };
    let mut ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
    ids.sort();
    // librdkafka does not expose the controller; ask DescribeCluster through raw frames.
    (ids, raw::controller_id(bootstrap))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_share_metadata_and_serve_their_partitions() {
    let mut brokers = Ferry::start_cluster(3, &[]);
    let boots: Vec<String> = brokers.iter().map(|b| b.bootstrap()).collect();
    for b in &boots {
        wait_until("every broker registered", Duration::from_secs(20), || brokers_seen(b).0 == vec![1, 2, 3]);
    }

    // Created through one broker, placed over all three, leaders spread.
    assert_eq!(create_topic(&boots[1], "spread", 6, 1).await, None);
    assert_eq!(create_topic(&boots[0], "spread", 6, 1).await, Some(RDKafkaErrorCode::TopicAlreadyExists));
    assert_eq!(create_topic(&boots[0], "too-many", 1, 4).await, Some(RDKafkaErrorCode::InvalidReplicationFactor));
    // A single-replica partition's group elects its only member: the placement's leader.
    wait_for_leaders(&boots[2], "spread", 6);
    let md = admin(&boots[2]).inner().fetch_metadata(Some("spread"), Duration::from_secs(5)).unwrap();
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    for p in md.topics()[0].partitions() {
        *leaders.entry(p.leader()).or_default() += 1;
    }
    assert_eq!(leaders, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));

    // librdkafka produces to each partition's leader and reads it back there.
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &boots[2]).create().unwrap();
    let values: Vec<String> = (0..3000).map(|i| format!("v{i}")).collect();
    let pending: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| producer.send_result(FutureRecord::<str, str>::to("spread").partition(i as i32 % 6).payload(v)).expect("queued"))
        .collect();
    let mut acked: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for (i, delivery) in pending.into_iter().enumerate() {
        let delivery = delivery.await.expect("delivery report").expect("acknowledged");
        assert_eq!(delivery.partition, i as i32 % 6);
        acked.insert((delivery.partition, delivery.offset), values[i].clone());
    }
    assert_eq!(acked.len(), values.len(), "every record at its own offset");
    for partition in 0..6 {
        let read = read_partition(&boots[0], "spread", partition, Duration::from_secs(3));
        let expected: BTreeMap<i64, String> = acked.iter().filter(|((p, _), _)| *p == partition).map(|((_, o), v)| (*o, v.clone())).collect();
        assert_eq!(read, expected, "partition {partition}");
    }

    // A broker that does not lead a partition refuses to take its records.
    let follower = md.topics()[0].partitions().iter().find(|p| p.id() == 0).map(|p| p.leader()).unwrap() % 3 + 1;
    raw::ensure_topic(&boots[0], "spread");
    let answer = ferry_tests::raw_roundtrip(&boots[follower as usize - 1], &raw::produce_frame("spread", raw::record_batch(&[b"x"]), -1, 7)).unwrap();
    assert_eq!(raw::produce_result(&answer).0, 6, "NOT_LEADER_OR_FOLLOWER from broker {follower}");
    // Produce v10+ names the leader and its endpoint (KIP-951).
    let leader0 = md.topics()[0].partitions().iter().find(|p| p.id() == 0).map(|p| p.leader()).unwrap();
    let frame = raw::produce_frame_at(11, "spread", raw::record_batch(&[b"x"]), -1, 8);
    let answer = raw::produce_response(&ferry_tests::raw_roundtrip(&boots[follower as usize - 1], &frame).unwrap(), 11);
    let part = &answer.responses[0].partition_responses[0];
    assert_eq!((part.error_code, part.current_leader.leader_id.0), (6, leader0));
    let endpoint = answer.node_endpoints.iter().find(|n| n.node_id.0 == leader0).expect("the leader's endpoint");
    assert_eq!(format!("{}:{}", endpoint.host.as_str(), endpoint.port), boots[leader0 as usize - 1]);

    // Idempotent producers on two brokers never get the same producer id.
    let (pid_a, _) = raw::init_producer_id(&boots[0]);
    let (pid_b, _) = raw::init_producer_id(&boots[1]);
    assert_ne!(pid_a, pid_b);

    // SIGKILL the metadata leader: the other two elect one and take changes.
    let controller = raw::controller_id(&boots[0]);
    assert!((1..=3).contains(&controller), "controller {controller}");
    let killed = controller as usize - 1;
    let killed_at = Instant::now();
    brokers[killed].kill9();
    let survivor = (killed + 1) % 3;
    wait_until("a new metadata leader", Duration::from_secs(10), || {
        let c = raw::controller_id(&boots[survivor]);
        c > 0 && c != controller
    });
    eprintln!("metadata leader replaced {:?} after its SIGKILL", killed_at.elapsed());
    assert_eq!(create_topic(&boots[survivor], "after-failover", 3, 1).await, None);

    // The killed broker comes back from its own log and catches up.
    brokers[killed].spawn_and_wait();
    wait_until("the restarted broker sees the new topic", Duration::from_secs(20), || {
        admin(&boots[killed]).inner().fetch_metadata(Some("after-failover"), Duration::from_secs(5)).is_ok_and(|md| {
            md.topics().first().is_some_and(|t| t.error().is_none() && t.partitions().len() == 3)
        })
    });
    for b in &mut brokers {
        assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
    }
}
