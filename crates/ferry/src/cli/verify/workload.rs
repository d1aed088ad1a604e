//! What a verify run does to the brokers: producers and consumers of one
//! semantics, each recording what it sent, got acknowledged and processed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use ferry_verify::{Event, TxnOutcome};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::{name_of, ProduceUntil, Semantics};

/// The history being recorded.
pub struct Recorder {
    pub(super) events: Mutex<Vec<Event>>,
    /// Begin-to-commit time of each committed transaction.
    pub(super) txn_latencies_us: Mutex<Vec<u64>>,
    /// Values the broker acknowledged, and values the consumers processed
    /// (delivered, or committed in a transaction): the consumers stop early
    /// once the second holds the first.
    acked: Mutex<HashSet<String>>,
    processed: Mutex<HashSet<String>>,
    start: Instant,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            events: Mutex::new(Vec::new()),
            txn_latencies_us: Mutex::new(Vec::new()),
            acked: Mutex::new(HashSet::new()),
            processed: Mutex::new(HashSet::new()),
            start: Instant::now(),
        }
    }
    pub fn push(&self, e: Event) {
        self.events.lock().expect("recorder lock").push(e);
    }
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn processed<'a>(&self, values: impl IntoIterator<Item = &'a String>) {
        self.processed.lock().expect("recorder lock").extend(values.into_iter().cloned());
    }
    /// Every acknowledged value has been processed: nothing is left to wait for.
    fn caught_up(&self) -> bool {
        let acked = self.acked.lock().expect("recorder lock");
        let processed = self.processed.lock().expect("recorder lock");
        acked.iter().all(|v| processed.contains(v))
    }
}


struct DeliveryLogger {
    recorder: Arc<Recorder>,
    /// False for acks=0: the broker sends no answer, so librdkafka's
    /// delivery report carries a made-up offset (-1001 counting up) that
    /// must not be taken for the record's place in the log.
    offsets_known: bool,
}
impl ClientContext for DeliveryLogger {}
impl ProducerContext for DeliveryLogger {
    type DeliveryOpaque = Box<(u32, String, Instant)>;
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (producer, value, sent) = *opaque;
        match result {
            Ok(m) => {
                self.recorder.acked.lock().expect("recorder lock").insert(value.clone());
                self.recorder.push(Event::Ack {
                    producer,
                    partition: m.partition(),
                    value,
                    offset: if self.offsets_known { m.offset() } else { -1 },
                    latency_us: sent.elapsed().as_micros() as u64,
                })
            }
            Err((e, _)) => self.recorder.push(Event::SendFailed { producer, value, error: e.to_string() }),
        }
    }
}

/// Counts rebalances, so a consume-transform-produce batch that spans one
/// is aborted instead of committed (as Kafka Streams does on revocation).
struct RebalanceCounter {
    rebalances: Arc<AtomicU64>,
}
impl ClientContext for RebalanceCounter {}
impl rdkafka::consumer::ConsumerContext for RebalanceCounter {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &rdkafka::consumer::Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
    }
}


/// Where the clients connect, and how: the bootstrap servers and the TLS
/// and SASL properties every client of the run gets.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub bootstrap: String,
    pub properties: Vec<(String, String)>,
}

impl Endpoint {
    /// A librdkafka configuration reaching the brokers.
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Creates the topics and waits until each partition has a leader. A
/// cluster just started may still be electing its metadata leader or
/// registering brokers: creation is retried meanwhile.
pub fn create_topics(endpoint: &Endpoint, topics: &[&str], partitions: i32, replication_factor: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let new: Vec<NewTopic> = topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor))).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // A client a try: librdkafka sends CreateTopics to the controller, and
    // one that saw none at first waits for it until the request times out.
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    loop {
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = endpoint.config().create()?;
        let failed: Vec<(String, RDKafkaErrorCode)> = match rt.block_on(admin.create_topics(new.iter(), &options)) {
            Ok(results) => results.into_iter().filter_map(Result::err).filter(|(_, c)| *c != RDKafkaErrorCode::TopicAlreadyExists).collect(),
            Err(e) => vec![(topics.join(","), e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail))],
        };
        match failed.first() {
            None => break,
            Some((t, code)) if Instant::now() >= deadline => bail!("cannot create topic {t}: {code}"),
            Some(_) => {
                // A refused login or TLS handshake does not go away by retrying.
                if !endpoint.properties.is_empty() {
                    if let Some(refusal) = crate::cli::security_refusal(&endpoint.config()) {
                        bail!("the broker at {} refused the connection: {refusal}", endpoint.bootstrap);
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    let c: BaseConsumer = endpoint.config().create()?;
    for topic in topics {
        loop {
            let led = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok().is_some_and(|md| {
                md.topics().iter().any(|t| t.name() == *topic && t.partitions().len() == partitions as usize && t.partitions().iter().all(|p| p.leader() > 0))
            });
            if led {
                break;
            }
            if Instant::now() >= deadline {
                bail!("topic {topic} has partitions without a leader after 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn produce(s: Semantics, p: u32, endpoint: &Endpoint, topic: &str, partitions: i32, until: &ProduceUntil, pause: Duration, seed: u64, recorder: &Arc<Recorder>) -> anyhow::Result<()> {
    let mut config = endpoint.config();
    config.set("linger.ms", "5").set("message.timeout.ms", "30000");
    match s {
        Semantics::AtMostOnce => {
            config.set("acks", "0").set("message.send.max.retries", "0").set("enable.idempotence", "false");
        }
        Semantics::AtLeastOnce => {
            config.set("acks", "all").set("enable.idempotence", "false").set("retries", "1000000");
        }
        _ => {
            config.set("transactional.id", format!("verify-{seed}-p{p}")).set("transaction.timeout.ms", "30000");
        }
    }
    let make = || -> anyhow::Result<BaseProducer<DeliveryLogger>> {
        let producer: BaseProducer<DeliveryLogger> = config.create_with_context(DeliveryLogger { recorder: recorder.clone(), offsets_known: s != Semantics::AtMostOnce })?;
        if s == Semantics::ExactlyOnce {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match producer.init_transactions(Duration::from_secs(10)) {
                    Ok(()) => break,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("verify: init_transactions retry: {e}");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(producer)
    };
    let mut producer = make()?;
    let txn_size = 50u64;
    let mut seq = 0u64;
    let mut txn_id = 0u64;
    while until.more(seq) {
        let batch_end = match s {
            Semantics::ExactlyOnce if seq < until.count => (seq + txn_size).min(until.count),
            Semantics::ExactlyOnce => seq + txn_size,
            _ => seq + 1,
        };
        let txn_started = Instant::now();
        if s == Semantics::ExactlyOnce {
            if let Err(e) = producer.begin_transaction() {
                eprintln!("verify: begin_transaction failed ({e}); recreating the producer");
                producer = make()?;
                continue;
            }
        }
        let mut values = Vec::new();
        while seq < batch_end {
            let value = format!("p{p}-{seq}");
            let partition = (seq % partitions as u64) as i32;
            recorder.push(Event::Send { producer: p, seq, partition, value: value.clone(), time_ms: recorder.now_ms() });
            let mut record = BaseRecord::<(), str, Box<(u32, String, Instant)>>::with_opaque_to(topic, Box::new((p, value.clone(), Instant::now()))).partition(partition).payload(&value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                            producer.poll(Duration::from_millis(10));
                            record = r;
                        } else {
                            recorder.push(Event::SendFailed { producer: p, value: value.clone(), error: e.to_string() });
                            break;
                        }
                    }
                }
            }
            values.push(value);
            seq += 1;
            producer.poll(Duration::ZERO);
            std::thread::sleep(pause);
        }
        if s == Semantics::ExactlyOnce {
            txn_id += 1;
            let outcome = match producer.commit_transaction(Duration::from_secs(30)) {
                Ok(()) => TxnOutcome::Commit,
                Err(e) => {
                    eprintln!("verify: commit failed ({e}); aborting");
                    match producer.abort_transaction(Duration::from_secs(30)) {
                        Ok(()) => TxnOutcome::Abort,
                        Err(_) => {
                            producer = make()?;
                            TxnOutcome::Unknown
                        }
                    }
                }
            };
            if outcome == TxnOutcome::Abort {
                // Acknowledged, but no consumer will ever process them.
                let mut acked = recorder.acked.lock().expect("recorder lock");
                for v in &values {
                    acked.remove(v);
                }
            }
            if outcome == TxnOutcome::Commit {
                recorder.txn_latencies_us.lock().expect("recorder lock").push(txn_started.elapsed().as_micros() as u64);
            }
            recorder.push(Event::Txn { producer: p, txn: txn_id, values, outcome, time_ms: recorder.now_ms() });
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn consume(
    s: Semantics,
    c: u32,
    endpoint: &Endpoint,
    topic: &str,
    out_topic: &str,
    seed: u64,
    recorder: &Arc<Recorder>,
    produced_all: &AtomicBool,
) -> anyhow::Result<()> {
    let mut config = endpoint.config();
    config
        .set("group.id", format!("verify-{}-{seed}", name_of(s)))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    if s == Semantics::ExactlyOnce {
        config.set("isolation.level", "read_committed");
    }
    // librdkafka's own debug contexts (e.g. `cgrp,fetch`), logged through
    // FERRY_LOG=librdkafka=debug: the client's side of a stall.
    if let Ok(contexts) = std::env::var("FERRY_VERIFY_CLIENT_DEBUG") {
        config.set("debug", contexts);
    }
    let rebalances = Arc::new(AtomicU64::new(0));
    let consumer: BaseConsumer<RebalanceCounter> = config.create_with_context(RebalanceCounter { rebalances: rebalances.clone() })?;
    consumer.subscribe(&[topic])?;
    let txn_producer: Option<BaseProducer> = if s == Semantics::ExactlyOnce {
        let p: BaseProducer = endpoint
            .config()
            .set("transactional.id", format!("verify-{seed}-ctp{c}"))
            .set("transaction.timeout.ms", "20000")
            .create()?;
        init_with_retry(&p)?;
        Some(p)
    } else {
        None
    };
    let mut txn_producer = txn_producer;
    let mut since_commit = 0u32;
    let idle_limit = Duration::from_millis(CONSUMER_IDLE_LIMIT_MS + if s == Semantics::ExactlyOnce { 5_000 } else { 0 });
    let mut idle_since = Instant::now();
    let mut draining = false;
    let mut caught_up_checked = Instant::now();
    loop {
        if produced_all.load(Ordering::SeqCst) {
            // The idle limit counts from the end of producing at the
            // earliest: a consumer that faults kept from its broker for a
            // while must still get the chance to catch up.
            if !draining {
                draining = true;
                idle_since = Instant::now();
            }
            if idle_since.elapsed() > idle_limit {
                break;
            }
            if caught_up_checked.elapsed() > Duration::from_millis(500) {
                caught_up_checked = Instant::now();
                if recorder.caught_up() {
                    break;
                }
            }
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
        let Ok(m) = result else { continue };
        idle_since = Instant::now();
        let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        match s {
            Semantics::AtMostOnce => {
                // Commit first; process only what is committed.
                if consumer.commit_message(&m, CommitMode::Sync).is_ok() {
                    recorder.processed([&value]);
                    recorder.push(Event::Deliver { consumer: c, partition: m.partition(), offset: m.offset(), value, time_ms: recorder.now_ms() });
                }
            }
            Semantics::AtLeastOnce => {
                recorder.processed([&value]);
                recorder.push(Event::Deliver { consumer: c, partition: m.partition(), offset: m.offset(), value, time_ms: recorder.now_ms() });
                since_commit += 1;
                if since_commit >= 50 {
                    let _ = consumer.commit_consumer_state(CommitMode::Sync);
                    since_commit = 0;
                }
            }
            _ => {
                // Consume-transform-produce: a batch of outputs and the input
                // offsets commit together in one transaction.
                // A rebalance during the batch may have handed some of its
                // partitions to another member: such a batch must not commit.
                let rebalances_at_start = rebalances.load(Ordering::SeqCst);
                let mut batch = vec![(m.partition(), m.offset(), value)];
                let topic_name = m.topic().to_string();
                drop(m);
                let batch_deadline = Instant::now() + Duration::from_millis(200);
                while batch.len() < 200 && Instant::now() < batch_deadline {
                    if let Some(Ok(next)) = consumer.poll(Duration::from_millis(20)) {
                        batch.push((next.partition(), next.offset(), String::from_utf8_lossy(next.payload().unwrap_or_default()).into_owned()));
                    }
                }
                let p = txn_producer.as_ref().expect("exactly-once has a producer");
                let mut next_offsets: HashMap<i32, i64> = HashMap::new();
                for (partition, offset, _) in &batch {
                    let e = next_offsets.entry(*partition).or_insert(0);
                    *e = (*e).max(offset + 1);
                }
                let mut offsets = TopicPartitionList::new();
                for (partition, next) in &next_offsets {
                    let _ = offsets.add_partition_offset(&topic_name, *partition, Offset::Offset(*next));
                }
                let mut ok = p.begin_transaction().is_ok();
                for (partition, _, value) in &batch {
                    ok = ok && p.send(BaseRecord::<(), str>::to(out_topic).partition(*partition).payload(value)).is_ok();
                }
                ok = ok
                    && rebalances.load(Ordering::SeqCst) == rebalances_at_start
                    && consumer
                        .group_metadata()
                        .map(|g| p.send_offsets_to_transaction(&offsets, &g, Duration::from_secs(10)).is_ok())
                        .unwrap_or(false)
                    && p.commit_transaction(Duration::from_secs(30)).is_ok();
                if ok {
                    recorder.processed(batch.iter().map(|(_, _, value)| value));
                } else {
                    let _ = p.abort_transaction(Duration::from_secs(10));
                    // Rewind to the committed offsets: leaving and rejoining the
                    // group makes the consumer fetch them again (a seek can fail
                    // while partitions are being reassigned, and skipping records
                    // would lose them).
                    consumer.unsubscribe();
                    consumer.subscribe(&[topic])?;
                    let fresh: BaseProducer = endpoint
                        .config()
                        .set("transactional.id", format!("verify-{seed}-ctp{c}"))
                        .set("transaction.timeout.ms", "20000")
                        .create()?;
                    init_with_retry(&fresh)?;
                    txn_producer = Some(fresh);
                    idle_since = Instant::now();
                }
            }
        }
    }
    if s == Semantics::AtLeastOnce {
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
    }
    Ok(())
}

/// How long a consumer waits, after producing ended, for a record before
/// it gives up. Faults every second or so push librdkafka's reconnect
/// backoff to its cap: it doubles at every connection made and resets only
/// after `reconnect.backoff.max.ms` (10 s) without one, so each of a
/// client's connections may stay down ~10 s after the broker is back; then
/// the member rejoins (its session, 6 s, may have expired meanwhile) and
/// fetches its committed offsets. A shorter limit called such a consumer's
/// wait a lost record. Consumers stop earlier once every acknowledged
/// record was processed.
const CONSUMER_IDLE_LIMIT_MS: u64 = 20_000;

fn init_with_retry(p: &BaseProducer) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match p.init_transactions(Duration::from_secs(10)) {
            Ok(()) => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Every (partition, offset, value) of a topic.
pub fn read_all(endpoint: &Endpoint, topic: &str, partitions: i32, committed: bool) -> anyhow::Result<Vec<(i32, i64, String)>> {
    let c: BaseConsumer = endpoint
        .config()
        .set("group.id", "verify-final-read")
        .set("enable.auto.commit", "false")
        .set("isolation.level", if committed { "read_committed" } else { "read_uncommitted" })
        .create()?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push((m.partition(), m.offset(), String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()));
            last = Instant::now();
        }
    }
    Ok(out)
}

pub fn final_read(endpoint: &Endpoint, topic: &str, partitions: i32, committed: bool, recorder: &Recorder) -> anyhow::Result<()> {
    for (partition, offset, value) in read_all(endpoint, topic, partitions, committed)? {
        recorder.push(Event::Final { partition, offset, value, committed });
    }
    Ok(())
}
