//! SIGKILL the broker while a producer writes; after restart every
//! acknowledged record is at its acknowledged offset, exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_tests::kafka::{producer, read_partition};
use ferry_tests::Ferry;
use rdkafka::producer::FutureRecord;

fn pseudo_random_ms(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    lo + nanos % (hi - lo)
}

async fn crash_while_producing(acks: &str) {
    let mut ferry = Ferry::start();
    let topic = format!("crash-{}", if acks == "all" { "all" } else { "one" });
    // No retries: a retried batch could be written twice, which is the
    // at-least-once contract, not what this test checks.
    let p = producer(
        &ferry.bootstrap(),
        &[("acks", acks), ("message.send.max.retries", "0"), ("message.timeout.ms", "5000"), ("linger.ms", "1")],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = stop.clone();
    let topic_writer = topic.clone();
    let writer = tokio::spawn(async move {
        let mut acked: BTreeMap<i64, String> = BTreeMap::new();
        let mut failed = 0usize;
        let mut i = 0u64;
        while !stop_writer.load(Ordering::SeqCst) {
            let mut inflight = Vec::new();
            for _ in 0..200 {
                let value = format!("record-{i}");
                i += 1;
                match p.send_result(FutureRecord::<str, str>::to(&topic_writer).partition(0).payload(&value)) {
                    Ok(f) => inflight.push((value, f)),
                    Err(_) => failed += 1,
                }
            }
            for (value, f) in inflight {
                match f.await {
                    Ok(Ok(d)) => {
                        assert!(acked.insert(d.offset, value).is_none(), "offset {} acknowledged twice", d.offset);
                    }
                    _ => failed += 1,
                }
            }
        }
        (acked, failed)
    });
    tokio::time::sleep(Duration::from_millis(pseudo_random_ms(400, 1500))).await;
    ferry.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = writer.await.expect("writer");
    assert!(acked.len() > 100, "too few acknowledged records ({}) to mean anything", acked.len());
    ferry.spawn_and_wait();
    let read = read_partition(&ferry.bootstrap(), &topic, 0, Duration::from_secs(3));
    let mut seen_values = std::collections::HashSet::new();
    for value in read.values() {
        assert!(seen_values.insert(value.clone()), "{value} present twice");
    }
    for (offset, value) in &acked {
        assert_eq!(read.get(offset), Some(value), "acknowledged record at offset {offset} lost or changed");
    }
    eprintln!("acks={acks}: {} acknowledged, {failed} failed around the kill, {} read back", acked.len(), read.len());
}

#[tokio::test]
async fn acks_all_survives_sigkill() {
    crash_while_producing("all").await;
}

#[tokio::test]
async fn acks_1_survives_process_kill() {
    crash_while_producing("1").await;
}
