//! Preferred leaders on a three-broker cluster: with
//! `--auto-leader-rebalance-enable false` a restarted broker does not get
//! its leadership back by itself; ElectLeaders (what
//! `kafka-leader-election.sh --election-type PREFERRED` sends) gives it back,
//! through whichever broker is asked.

use std::time::Duration;

use ferry_tests::cluster::{create_topic_when_ready, in_sync, leaders, wait_until};
use ferry_tests::{raw, Ferry};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

const PARTITIONS: i32 = 3;
const ELECTION_NOT_NEEDED: i16 = 84;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn elect(addr: &str, election_type: i8, partitions: Option<&[i32]>) -> Vec<(i32, i16)> {
    let topics = partitions.map(|ps| {
        vec![TopicPartitions::default().with_topic(TopicName(StrBytes::from_static_str("led"))).with_partitions(ps.to_vec())]
    });
    let req = ElectLeadersRequest::default().with_election_type(election_type).with_topic_partitions(topics).with_timeout_ms(15_000);
    let resp: ElectLeadersResponse = raw::call(addr, ApiKey::ElectLeaders, 2, &req);
    assert_eq!(resp.error_code, 0, "{resp:?}");
    let mut results: Vec<(i32, i16)> =
        resp.replica_election_results.iter().flat_map(|t| t.partition_result.iter().map(|p| (p.partition_id, p.error_code))).collect();
    results.sort();
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_moves_leadership_back_to_the_preferred_replica() {
    let mut brokers = Ferry::start_cluster(3, &["--auto-leader-rebalance-enable", "false"]);
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    create_topic_when_ready(&brokers[0].bootstrap(), "led", PARTITIONS, 3).await;
    wait_until("leaders on their preferred replicas", Duration::from_secs(30), || leaders(&all, "led") == vec![1, 2, 3]);

    // Broker 1 dies and returns: partition 0 stays led elsewhere.
    brokers[0].kill9();
    let survivor = brokers[2].bootstrap();
    wait_until("a new leader for partition 0", Duration::from_secs(15), || {
        let now = leaders(&survivor, "led");
        now.len() == PARTITIONS as usize && now[0] > 1
    });
    brokers[0].spawn_and_wait();
    wait_until("broker 1 back in sync", Duration::from_secs(30), || in_sync(&all, "led") == vec![vec![1, 2, 3]; 3]);
    std::thread::sleep(Duration::from_secs(6));
    let moved = leaders(&all, "led");
    assert_ne!(moved[0], 1, "leadership came back without an election though auto rebalance is off");

    // Asked for everything, through broker 1 (which leads nothing now, so
    // the election is forwarded): only partition 0 needed one.
    assert_eq!(elect(&brokers[0].bootstrap(), 0, None), vec![(0, 0)]);
    wait_until("every broker names broker 1 the leader again", Duration::from_secs(10), || {
        brokers.iter().all(|b| leaders(&b.bootstrap(), "led") == vec![1, 2, 3])
    });

    // Named partitions that already have their preferred leader; one that does not exist.
    assert_eq!(elect(&brokers[1].bootstrap(), 0, Some(&[0, 1, 2])), vec![(0, ELECTION_NOT_NEEDED), (1, ELECTION_NOT_NEEDED), (2, ELECTION_NOT_NEEDED)]);
    assert_eq!(elect(&brokers[1].bootstrap(), 0, Some(&[7])), vec![(7, UNKNOWN_TOPIC_OR_PARTITION)]);
    // Unclean: Raft always has a clean leader while a majority lives.
    assert_eq!(elect(&brokers[2].bootstrap(), 1, Some(&[1])), vec![(1, ELECTION_NOT_NEEDED)]);

    for b in &mut brokers {
        assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
    }
}
