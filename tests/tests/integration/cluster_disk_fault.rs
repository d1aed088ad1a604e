//! A replica whose disk fails (the storage seam's fsync-error on broker 1)
//! steps out of its partitions' groups: the other two replicas elect a
//! leader among themselves, producing goes on, every acknowledged record
//! stays readable at its offset, and broker 1 keeps serving the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_tests::cluster::{create_topic_when_ready, in_sync, leaders, wait_until};
use ferry_tests::kafka::{produce_all, producer, read_partition};
use ferry_tests::Ferry;
use rdkafka::producer::FutureRecord;

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_fails_steps_down_and_the_partition_stays_available() {
    let mut brokers = Ferry::start_cluster(3, &[]);
    // Broker 1 again, with its fsyncs of topic `disky` failing after a few.
    brokers[0].kill9();
    brokers[0].envs.push(("FERRY_FAULT_INJECT".into(), "fsync-error:disky:20".into()));
    brokers[0].spawn_and_wait();
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    create_topic_when_ready(&brokers[1].bootstrap(), "disky", PARTITIONS, 3).await;
    wait_until("leaders on their preferred replicas", Duration::from_secs(30), || leaders(&all, "disky") == vec![1, 2, 3]);

    let p = producer(&all, &[("enable.idempotence", "true"), ("message.timeout.ms", "60000")]);
    let mut acked: Vec<(i32, i64, String)> = Vec::new();
    for round in 0..20 {
        let sends: Vec<_> = (0..100)
            .map(|i| {
                let v = format!("r{round}-{i}");
                let f = p.send_result(FutureRecord::<str, str>::to("disky").partition(i % PARTITIONS).payload(&v)).expect("queued");
                (v, f)
            })
            .collect();
        for (v, f) in sends {
            let d = f.await.expect("delivery report").unwrap_or_else(|(e, _)| panic!("{v} not acknowledged: {e}"));
            acked.push((d.partition, d.offset, v));
        }
    }

    // Broker 1 failed its fsyncs long ago: partition 0 is led elsewhere,
    // and broker 1 left every ISR of the topic.
    let now = leaders(&brokers[1].bootstrap(), "disky");
    assert!(now[0] == 2 || now[0] == 3, "partition 0 still led by the failed replica: {now:?}");
    wait_until("broker 1 out of every ISR", Duration::from_secs(30), || {
        in_sync(&brokers[1].bootstrap(), "disky").iter().all(|r| !r.contains(&1) && r.len() == 2)
    });
    assert!(brokers[0].is_running(), "a failed disk stops the replica, not the broker:\n{}", brokers[0].log());
    assert!(brokers[0].log().contains("partition replica cannot persist its log"), "{}", brokers[0].log());

    for partition in 0..PARTITIONS {
        let read = read_partition(&all, "disky", partition, Duration::from_secs(3));
        let expected: BTreeMap<i64, &String> = acked.iter().filter(|(p, _, _)| *p == partition).map(|(_, o, v)| (*o, v)).collect();
        for (offset, v) in expected {
            assert_eq!(read.get(&offset), Some(v), "partition {partition} offset {offset}");
        }
    }

    // The broker still serves a topic its disk can write.
    create_topic_when_ready(&brokers[1].bootstrap(), "healthy", 1, 3).await;
    let p1 = producer(&brokers[0].bootstrap(), &[]);
    assert_eq!(produce_all(&p1, "healthy", &["fine".into()]).await.len(), 1);
    for b in &mut brokers {
        b.kill9();
    }
}
