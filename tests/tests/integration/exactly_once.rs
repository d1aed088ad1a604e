//! Exactly-once: idempotent produce (retries answered with the original
//! offset), transactions through librdkafka, fencing, timeouts, and crash
//! points inside the coordinator.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferry_tests::raw::{self, ensure_topic, produce_frame, produce_result, producer_batch};
use ferry_tests::{raw_roundtrip, Ferry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

#[test]
fn retried_batch_gets_its_original_offset_and_is_stored_once() {
    let ferry = Ferry::start();
    let addr = ferry.bootstrap();
    ensure_topic(&addr, "idem");
    let (pid, epoch) = raw::init_producer_id(&addr);
    let first = producer_batch(&[b"a", b"b"], pid, epoch, 0);
    assert_eq!(produce_result(&raw_roundtrip(&addr, &produce_frame("idem", first.clone(), -1, 1)).unwrap()), (0, 0));
    let second = producer_batch(&[b"c"], pid, epoch, 2);
    assert_eq!(produce_result(&raw_roundtrip(&addr, &produce_frame("idem", second.clone(), -1, 2)).unwrap()), (0, 2));
    // The connection drops after the broker wrote the batch and before the
    // client read the answer; the client retries on a new connection.
    let third = producer_batch(&[b"d", b"e"], pid, epoch, 3);
    {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&produce_frame("idem", third.clone(), -1, 3)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    for retry in [first, second, third] {
        let (code, _) = produce_result(&raw_roundtrip(&addr, &produce_frame("idem", retry, -1, 4)).unwrap());
        assert_eq!(code, 0, "a retry inside the window succeeds");
    }
    assert_eq!(
        produce_result(&raw_roundtrip(&addr, &produce_frame("idem", producer_batch(&[b"d", b"e"], pid, epoch, 3), -1, 5)).unwrap()),
        (0, 3),
        "answered with the original base offset"
    );
    // Nothing was stored twice: the next new batch lands at offset 5.
    let fourth = producer_batch(&[b"f"], pid, epoch, 5);
    assert_eq!(produce_result(&raw_roundtrip(&addr, &produce_frame("idem", fourth, -1, 6)).unwrap()), (0, 5));
    // A gap is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch INVALID_PRODUCER_EPOCH.
    let gap = producer_batch(&[b"x"], pid, epoch, 9);
    assert_eq!(produce_result(&raw_roundtrip(&addr, &produce_frame("idem", gap, -1, 7)).unwrap()).0, 45);
    let bumped = producer_batch(&[b"y"], pid, epoch + 1, 0);
    assert_eq!(produce_result(&raw_roundtrip(&addr, &produce_frame("idem", bumped, -1, 8)).unwrap()), (0, 6));
    let stale = producer_batch(&[b"z"], pid, epoch, 6);
    assert_eq!(produce_result(&raw_roundtrip(&addr, &produce_frame("idem", stale, -1, 9)).unwrap()).0, 47);
}

#[test]
fn idempotence_state_survives_restart() {
    let mut ferry = Ferry::start();
    let addr = ferry.bootstrap();
    ensure_topic(&addr, "idem-restart");
    let (pid, epoch) = raw::init_producer_id(&addr);
    let batch = producer_batch(&[b"a"], pid, epoch, 0);
    assert_eq!(produce_result(&raw_roundtrip(&addr, &produce_frame("idem-restart", batch.clone(), -1, 1)).unwrap()), (0, 0));
    ferry.restart();
    assert_eq!(
        produce_result(&raw_roundtrip(&ferry.bootstrap(), &produce_frame("idem-restart", batch, -1, 2)).unwrap()),
        (0, 0),
        "the retry after a crash is still recognised"
    );
    let (pid2, _) = raw::init_producer_id(&ferry.bootstrap());
    assert!(pid2 > pid, "producer ids are never reused across restarts");
}

fn txn_producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "10000")
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

/// Reads every visible value of a topic's partitions with the given isolation.
fn read_all(bootstrap: &str, topic: &str, partitions: i32, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "eos-reader")
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            last = Instant::now();
        }
    }
    out
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, partition: i32, value: &str) {
    p.send(BaseRecord::<(), str>::to(topic).partition(partition).payload(value)).map_err(|(e, _)| e).unwrap();
}

async fn create(ferry: &Ferry, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().unwrap();
    let r = admin.create_topics([&NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()).await.unwrap();
    assert!(r[0].is_ok());
}

#[tokio::test]
async fn committed_visible_aborted_hidden_for_read_committed() {
    let ferry = Ferry::start();
    create(&ferry, "tx", 2).await;
    let p = txn_producer(&ferry.bootstrap(), "t-vis");
    p.init_transactions(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    for i in 0..20 {
        send(&p, "tx", i % 2, &format!("commit-{i}"));
    }
    p.commit_transaction(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    for i in 0..10 {
        send(&p, "tx", i % 2, &format!("abort-{i}"));
    }
    p.flush(Duration::from_secs(10)).unwrap();
    p.abort_transaction(Duration::from_secs(10)).unwrap();
    let committed = read_all(&ferry.bootstrap(), "tx", 2, "read_committed");
    let uncommitted = read_all(&ferry.bootstrap(), "tx", 2, "read_uncommitted");
    assert_eq!(committed.len(), 20);
    assert!(committed.iter().all(|v| v.starts_with("commit-")), "no aborted record is visible read_committed");
    assert_eq!(uncommitted.iter().filter(|v| v.starts_with("abort-")).count(), 10, "read_uncommitted sees the aborted records");
}

#[tokio::test]
async fn open_transaction_holds_back_read_committed_until_it_ends() {
    let ferry = Ferry::start();
    create(&ferry, "lso", 1).await;
    let p = txn_producer(&ferry.bootstrap(), "t-lso");
    p.init_transactions(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "lso", 0, "in-txn");
    p.flush(Duration::from_secs(10)).unwrap();
    let plain: ThreadedProducer<DefaultProducerContext> = ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().unwrap();
    send(&plain, "lso", 0, "after");
    plain.flush(Duration::from_secs(10)).unwrap();
    assert!(read_all(&ferry.bootstrap(), "lso", 1, "read_committed").is_empty(), "data after an open transaction waits for it");
    assert_eq!(read_all(&ferry.bootstrap(), "lso", 1, "read_uncommitted").len(), 2);
    p.commit_transaction(Duration::from_secs(10)).unwrap();
    assert_eq!(read_all(&ferry.bootstrap(), "lso", 1, "read_committed"), vec!["in-txn", "after"]);
}

#[tokio::test]
async fn zombie_is_fenced_and_its_transaction_aborted() {
    let ferry = Ferry::start();
    create(&ferry, "zombie", 1).await;
    let old = txn_producer(&ferry.bootstrap(), "t-zombie");
    old.init_transactions(Duration::from_secs(10)).unwrap();
    old.begin_transaction().unwrap();
    send(&old, "zombie", 0, "from-zombie");
    old.flush(Duration::from_secs(10)).unwrap();
    let new = txn_producer(&ferry.bootstrap(), "t-zombie");
    new.init_transactions(Duration::from_secs(10)).unwrap();
    let err = old.commit_transaction(Duration::from_secs(10)).expect_err("the zombie must not commit");
    assert!(format!("{err:?}").to_lowercase().contains("fenced"), "PRODUCER_FENCED surfaced: {err:?}");
    new.begin_transaction().unwrap();
    send(&new, "zombie", 0, "from-new");
    new.commit_transaction(Duration::from_secs(10)).unwrap();
    assert_eq!(read_all(&ferry.bootstrap(), "zombie", 1, "read_committed"), vec!["from-new"]);
    assert!(ferry.log().contains("fencing previous producer"));
}

#[tokio::test]
async fn hanging_transaction_times_out_and_is_aborted() {
    let ferry = Ferry::start();
    create(&ferry, "hang", 1).await;
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", ferry.bootstrap())
        .set("transactional.id", "t-hang")
        .set("transaction.timeout.ms", "2000")
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "hang", 0, "never-committed");
    p.flush(Duration::from_secs(10)).unwrap();
    let plain: ThreadedProducer<DefaultProducerContext> = ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().unwrap();
    send(&plain, "hang", 0, "later");
    plain.flush(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(read_all(&ferry.bootstrap(), "hang", 1, "read_committed"), vec!["later"], "the broker aborted the hanging transaction");
    assert!(ferry.log().contains("transaction timed out"));
}

/// Crash points inside the coordinator: after restart every transaction
/// ends wholly committed (the decision was durable) and nothing hangs.
async fn crash_at(failpoint: &str) {
    let mut ferry = Ferry::start_with(&[], &[("FERRY_FAILPOINT", failpoint)]);
    create(&ferry, "crashtx", 3).await;
    let p = txn_producer(&ferry.bootstrap(), "t-crash");
    p.init_transactions(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    for i in 0..30 {
        send(&p, "crashtx", i % 3, &format!("v{i}"));
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let result = p.commit_transaction(Duration::from_secs(5));
    assert!(result.is_err(), "the broker died during the commit");
    drop(p);
    ferry.kill9();
    ferry.envs.clear();
    ferry.spawn_and_wait();
    let committed = read_all(&ferry.bootstrap(), "crashtx", 3, "read_committed");
    assert_eq!(committed.len(), 30, "{failpoint}: the durable commit decision was completed after restart");
    // Nothing hangs: new transactions work and the LSO moves.
    let p = txn_producer(&ferry.bootstrap(), "t-crash");
    p.init_transactions(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "crashtx", 0, "next");
    p.commit_transaction(Duration::from_secs(10)).unwrap();
    assert_eq!(read_all(&ferry.bootstrap(), "crashtx", 3, "read_committed").len(), 31);
}

#[tokio::test]
async fn crash_after_prepare_record() {
    crash_at("txn-after-prepare").await;
}

#[tokio::test]
async fn crash_between_markers() {
    crash_at("txn-between-markers").await;
}

#[tokio::test]
async fn crash_before_complete_record() {
    crash_at("txn-before-complete").await;
}
