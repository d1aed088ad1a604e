//! Log compaction run by the broker: the cleaner thread keeps the last
//! record of every key at its original offset, removes tombstones past
//! `delete.retention.ms`, survives SIGKILL, never cleans past an open
//! transaction; compacted topics refuse keyless records.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ferry_tests::kafka::{producer, read_keyed, Keyed};
use ferry_tests::raw::{produce_frame, produce_result, record_batch};
use ferry_tests::{raw_roundtrip, segment_bytes, segment_files, Ferry};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

const IDLE: Duration = Duration::from_millis(700);

async fn create_compacted(ferry: &Ferry, topic: &str, extra: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", ferry.bootstrap()).create().expect("admin");
    let mut t = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact").set("segment.bytes", "1024");
    for (k, v) in extra {
        t = t.set(k, v);
    }
    let r = admin.create_topics([&t], &AdminOptions::new()).await.expect("create");
    assert!(r[0].is_ok(), "{r:?}");
}

/// One record per batch, so segments roll often and the last values are
/// sealed (the cleaner never touches the active segment).
fn one_per_batch(ferry: &Ferry, extra: &[(&str, &str)]) -> FutureProducer {
    let mut settings = vec![("batch.num.messages", "1"), ("linger.ms", "0")];
    settings.extend_from_slice(extra);
    producer(&ferry.bootstrap(), &settings)
}

/// Sends `(key, value)` pairs in order; a None value is a tombstone.
/// Returns offset → (key, value) as acknowledged.
async fn put_all(p: &FutureProducer, topic: &str, records: &[(String, Option<String>)]) -> BTreeMap<i64, Keyed> {
    let mut pending = Vec::new();
    for (k, v) in records {
        let mut r = FutureRecord::<str, str>::to(topic).partition(0).key(k);
        if let Some(v) = v {
            r = r.payload(v);
        }
        pending.push((k.clone(), v.clone(), p.send_result(r).expect("enqueue")));
    }
    let mut acked = BTreeMap::new();
    for (k, v, f) in pending {
        let d = f.await.expect("delivery future").expect("delivered");
        acked.insert(d.offset, (Some(k), v));
    }
    acked
}

/// What a fully compacted log shows: each key's last record at its offset,
/// deleted keys gone.
fn latest_per_key(acked: &BTreeMap<i64, Keyed>) -> BTreeMap<i64, Keyed> {
    let mut last: HashMap<&Option<String>, (i64, &Keyed)> = HashMap::new();
    for (offset, rec) in acked {
        last.insert(&rec.0, (*offset, rec));
    }
    last.into_values().filter(|(_, rec)| rec.1.is_some()).map(|(o, rec)| (o, rec.clone())).collect()
}

/// Reads until `ok` holds or `limit` passes; returns the last view.
fn wait_for_view(ferry: &Ferry, topic: &str, limit: Duration, ok: impl Fn(&BTreeMap<i64, Keyed>) -> bool) -> BTreeMap<i64, Keyed> {
    let deadline = Instant::now() + limit;
    loop {
        let view = read_keyed(&ferry.bootstrap(), topic, 0, "read_uncommitted", IDLE);
        if ok(&view) || Instant::now() > deadline {
            return view;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn cleaner_keeps_the_latest_value_per_key_and_survives_sigkill() {
    // Written with the cleaner off, so the uncompacted size can be measured.
    let mut ferry = Ferry::start_with(&["--log-cleaner-enable", "false"], &[]);
    create_compacted(&ferry, "compacted", &[("delete.retention.ms", "0")]).await;
    let mut records: Vec<(String, Option<String>)> = Vec::new();
    for round in 0..60 {
        for k in 0..5 {
            records.push((format!("k{k}"), Some(format!("k{k}-v{round}"))));
        }
    }
    records.push(("k0".into(), None));
    // Unique keys after the tombstone roll the segments holding the last values.
    records.extend((0..30).map(|i| (format!("f{i}"), Some(format!("filler-{i}")))));
    let acked = put_all(&one_per_batch(&ferry, &[]), "compacted", &records).await;
    assert_eq!(acked.len(), records.len());
    let expected = latest_per_key(&acked);
    let dir = ferry.partition_dir("compacted", 0);

    std::thread::sleep(Duration::from_secs(1));
    let before = read_keyed(&ferry.bootstrap(), "compacted", 0, "read_uncommitted", IDLE);
    assert_eq!(before, acked, "log.cleaner.enable=false cleans nothing");
    let (bytes_before, segments_before) = (segment_bytes(&dir), segment_files(&dir).len());
    assert!(segments_before > 10, "segment.bytes=1024 rolled only {segments_before} segments");

    ferry.extra_args = vec!["--log-cleaner-backoff-ms".into(), "200".into()];
    ferry.restart();
    let started = Instant::now();
    let view = wait_for_view(&ferry, "compacted", Duration::from_secs(30), |v| *v == expected);
    assert_eq!(view, expected, "compacted view: the last value of every key at its offset, k0 deleted\n{}", ferry.log());
    let (bytes_after, segments_after) = (segment_bytes(&dir), segment_files(&dir).len());
    eprintln!(
        "compacted in {:?}: {bytes_before} B in {segments_before} segments -> {bytes_after} B in {segments_after} segments",
        started.elapsed()
    );
    assert!(bytes_after * 3 < bytes_before, "on-disk size {bytes_before} -> {bytes_after}");

    ferry.restart();
    let view = read_keyed(&ferry.bootstrap(), "compacted", 0, "read_uncommitted", IDLE);
    assert_eq!(view, expected, "the same view after SIGKILL and restart");
    let next = put_all(&one_per_batch(&ferry, &[]), "compacted", &[("k1".into(), Some("after".into()))]).await;
    let last_acked = *acked.keys().next_back().expect("records");
    assert_eq!(next.keys().next(), Some(&(last_acked + 1)), "offsets go on from the log end; nothing was renumbered");
}

#[tokio::test]
async fn compacted_topic_refuses_keyless_records() {
    let ferry = Ferry::start();
    create_compacted(&ferry, "keys-required", &[]).await;
    let addr = ferry.bootstrap();
    let (code, _) = produce_result(&raw_roundtrip(&addr, &produce_frame("keys-required", record_batch(&[b"v"]), -1, 1)).expect("answer"));
    assert_eq!(code, 87, "INVALID_RECORD");

    let p = producer(&addr, &[("message.send.max.retries", "0")]);
    let keyless = p.send(FutureRecord::<str, str>::to("keys-required").partition(0).payload("no key"), Duration::from_secs(10)).await;
    match keyless {
        Err((KafkaError::MessageProduction(code), _)) => assert_eq!(code, RDKafkaErrorCode::InvalidRecord),
        other => panic!("keyless record to a compacted topic: {other:?}"),
    }
    let keyed = p.send(FutureRecord::<str, str>::to("keys-required").partition(0).key("k").payload("v"), Duration::from_secs(10)).await;
    assert_eq!(keyed.expect("keyed record accepted").offset, 0, "nothing of the refused batches was written");

    // A delete topic takes keyless records as before.
    let plain = p.send(FutureRecord::<str, str>::to("plain").partition(0).payload("no key"), Duration::from_secs(10)).await;
    assert!(plain.is_ok(), "{plain:?}");
}

fn txn_producer(ferry: &Ferry) -> FutureProducer {
    one_per_batch(ferry, &[("transactional.id", "compact-txn"), ("transaction.timeout.ms", "60000")])
}

fn values_of<'a>(view: &'a BTreeMap<i64, Keyed>, key: &str) -> Vec<(i64, &'a str)> {
    view.iter()
        .filter(|(_, (k, _))| k.as_deref() == Some(key))
        .map(|(o, (_, v))| (*o, v.as_deref().unwrap_or("<null>")))
        .collect()
}

#[tokio::test]
async fn open_transaction_is_not_cleaned_past_the_last_stable_offset() {
    let ferry = Ferry::start_with(&["--log-cleaner-backoff-ms", "200"], &[]);
    create_compacted(&ferry, "txn-compacted", &[]).await;
    let plain: Vec<(String, Option<String>)> = (0..40).map(|i| ("a".to_string(), Some(format!("a-{i}")))).collect();
    let plain_acked = put_all(&one_per_batch(&ferry, &[]), "txn-compacted", &plain).await;

    let txn = txn_producer(&ferry);
    txn.init_transactions(Duration::from_secs(10)).expect("init");
    txn.begin_transaction().expect("begin");
    let open: Vec<(String, Option<String>)> = (0..40).map(|i| ("t".to_string(), Some(format!("t-{i}")))).collect();
    let txn_acked = put_all(&txn, "txn-compacted", &open).await;
    let txn_written: Vec<(i64, &str)> = txn_acked.iter().map(|(o, (_, v))| (*o, v.as_deref().unwrap_or_default())).collect();

    // Below the last stable offset the cleaner works: "a" keeps its last value.
    let last_a = *plain_acked.keys().next_back().expect("acked");
    let view = wait_for_view(&ferry, "txn-compacted", Duration::from_secs(30), |v| values_of(v, "a") == vec![(last_a, "a-39")]);
    assert_eq!(values_of(&view, "a"), vec![(last_a, "a-39")], "{}", ferry.log());
    // Several cleaner rounds later the open transaction is still whole.
    std::thread::sleep(Duration::from_secs(2));
    let view = read_keyed(&ferry.bootstrap(), "txn-compacted", 0, "read_uncommitted", IDLE);
    assert_eq!(values_of(&view, "t"), txn_written, "an open transaction's records are not cleaned");

    txn.commit_transaction(Duration::from_secs(10)).expect("commit");
    let view = wait_for_view(&ferry, "txn-compacted", Duration::from_secs(30), |v| values_of(v, "t").len() < txn_written.len());
    let survivors = values_of(&view, "t");
    assert!(survivors.len() < txn_written.len(), "the committed transaction is compacted too\n{}", ferry.log());
    assert_eq!(survivors.last(), txn_written.last(), "its last value stays");
    assert!(survivors.iter().all(|s| txn_written.contains(s)), "survivors keep their offsets: {survivors:?}");
}
