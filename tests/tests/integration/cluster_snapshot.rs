//! Retention on a replicated partition, and a follower so far behind that
//! its leader no longer holds what it lacks: the leader's log head is gone,
//! so the follower gets a snapshot (where the leader's log starts) and its
//! own log starts over there. It must then be a full replica: it
//! acknowledges new records as part of the majority and, once the old
//! leader dies, serves every record from the log start on at its offset.

use std::collections::BTreeSet;
use std::time::Duration;

use ferry_tests::cluster::{admin, in_sync, leaders, wait_for_leaders, wait_until};
use ferry_tests::kafka::{produce_all, producer, read_from_log_start};
use ferry_tests::{segment_bytes, segment_files, Ferry};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};

/// The partition's log start and high watermark as `bootstrap` answers.
fn watermarks(bootstrap: &str, topic: &str) -> Option<(i64, i64)> {
    admin(bootstrap).inner().fetch_watermarks(topic, 0, Duration::from_secs(3)).ok()
}

/// The base offset of a replica's first segment file.
fn first_segment_base(b: &Ferry, topic: &str) -> Option<i64> {
    let files = segment_files(&b.partition_dir(topic, 0));
    files.iter().filter_map(|f| f.file_stem()?.to_str()?.parse::<i64>().ok()).min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_installs_a_snapshot() {
    let mut brokers = Ferry::start_cluster(3, &["--log-retention-check-interval-ms", "500"]);
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    let first = brokers[0].bootstrap();
    wait_until("a metadata leader", Duration::from_secs(30), || ferry_tests::raw::controller_id(&first) > 0);
    let topic = NewTopic::new("snap", 1, TopicReplication::Fixed(3)).set("segment.bytes", "16384").set("retention.bytes", "65536");
    // Until all three brokers registered, a factor of 3 is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let created = admin(&all).create_topics([&topic], &AdminOptions::new()).await.expect("CreateTopics");
        if created[0].is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{created:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let leader = wait_for_leaders(&all, "snap", 1)[0];
    let behind = (1..=3).find(|id| *id != leader).expect("a follower");
    let third = (1..=3).find(|id| *id != leader && *id != behind).expect("another follower");
    let at = |id: i32| id as usize - 1;

    // The follower dies before anything is written; 20,000 records later the
    // other two hold only the last ~64 KiB of them.
    brokers[at(behind)].kill9();
    let live = [leader, third].map(|id| brokers[at(id)].bootstrap()).join(",");
    let p = producer(&live, &[("message.timeout.ms", "60000")]);
    // In rounds, so batches stay small next to the 16 KiB segments.
    let mut acked: Vec<(i64, String)> = Vec::new();
    for round in 0..100 {
        let values: Vec<String> = (0..200).map(|i| format!("{:0>90}", round * 200 + i)).collect();
        acked.extend(produce_all(&p, "snap", &values).await.into_iter().zip(values));
    }
    // Retention keeps at least 64 KiB, and drops whole 16 KiB segments.
    let kept = |id: i32| segment_bytes(&brokers[at(id)].partition_dir("snap", 0));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(kept(leader) < 200_000 && kept(third) < 200_000) {
        let files = [leader, third].map(|id| segment_files(&brokers[at(id)].partition_dir("snap", 0)).len());
        let bytes = [leader, third].map(kept);
        assert!(std::time::Instant::now() < deadline, "retention did not drop the head on both live replicas: {files:?} segments, {bytes:?} bytes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (start, _) = watermarks(&live, "snap").expect("watermarks");
    assert!(start > 0, "the log start moved: {start}");

    // Back, it has nothing the leader still holds: a snapshot, then the rest.
    brokers[at(behind)].spawn_and_wait();
    wait_until("the follower to install a snapshot", Duration::from_secs(60), || brokers[at(behind)].log().contains("installing the leader's snapshot"));
    let base = first_segment_base(&brokers[at(behind)], "snap").expect("segments");
    assert!(base >= start, "the follower's log starts at {base}, at or past the leader's start {start} when it came back");
    wait_until("the follower to rejoin the in-sync replicas", Duration::from_secs(60), || in_sync(&all, "snap") == vec![vec![1, 2, 3]]);

    // Without the third broker, nothing is acknowledged unless the
    // follower that installed the snapshot takes it.
    brokers[at(third)].kill9();
    let two = [leader, behind].map(|id| brokers[at(id)].bootstrap()).join(",");
    let p = producer(&two, &[("message.timeout.ms", "60000")]);
    let more: Vec<String> = (0..2_000).map(|i| format!("after{i}")).collect();
    acked.extend(produce_all(&p, "snap", &more).await.into_iter().zip(more));

    // The old leader dies; the snapshot follower leads and the third,
    // restarted from its own disk, follows it.
    brokers[at(leader)].kill9();
    brokers[at(third)].spawn_and_wait();
    let survivors = [behind, third].map(|id| brokers[at(id)].bootstrap()).join(",");
    wait_until("the snapshot follower to lead", Duration::from_secs(30), || leaders(&survivors, "snap") == vec![behind]);
    let (start, end) = watermarks(&survivors, "snap").expect("watermarks");
    let read = read_from_log_start(&survivors, "snap", Duration::from_secs(5));
    let expected: Vec<&(i64, String)> = acked.iter().filter(|(o, _)| *o >= start).collect();
    assert!(expected.len() >= 1_000, "too few records left above the log start: {}", expected.len());
    for (offset, v) in &expected {
        assert_eq!(read.get(offset), Some(v), "offset {offset} (log start {start}, end {end})");
    }
    assert_eq!(read.keys().next(), Some(&start), "reading starts at the log start");
    assert_eq!(read.len(), read.values().collect::<BTreeSet<_>>().len(), "a value read twice");
    eprintln!("{} records acknowledged, {} read from the log start {start}; the follower's log began at {base}", acked.len(), read.len());
    for b in &mut brokers {
        if b.is_running() {
            assert_eq!(b.terminate(), Some(0), "clean shutdown:\n{}", b.log());
        }
    }
}
