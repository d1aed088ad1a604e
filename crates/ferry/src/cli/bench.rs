//! `ferry bench`: produce (and optionally consume) throughput and latency
//! against a running broker, with a delivery semantics as the one choice —
//! Kafka's producer-perf-test and consumer-perf-test in one command. The
//! side-by-side comparison with other brokers is `bench/peers/run.sh`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::json;

use super::records::CliSemantics;
use super::{ConnectArgs, OutputFormat};

/// Most records one run may send (the latency samples are kept in memory).
const MAX_RECORDS: u64 = 100_000_000;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Topic to write (created with --partitions if missing; default: a new one per run).
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// at-most-once: acks=0; at-least-once: acks=all; exactly-once: transactions committed every --transaction-ms.
    #[arg(long, value_enum, default_value_t = CliSemantics::AtLeastOnce)]
    semantics: CliSemantics,
    /// Override the semantics' acks (0, 1, all).
    #[arg(long)]
    acks: Option<String>,
    #[arg(long, default_value_t = 100)]
    transaction_ms: u64,
    /// librdkafka's linger.ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Then read the records back (from the beginning of each partition).
    #[arg(long)]
    consume: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Delivery reports: latency per record (µs since its send) and failures.
struct Reports {
    latencies_us: Mutex<Vec<u32>>,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// The producer's context; the run keeps another handle on the reports.
struct ReportsContext(Arc<Reports>);

impl ClientContext for ReportsContext {}

impl ProducerContext for ReportsContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at: Box<Instant>) {
        match result {
            Ok(_) => self.0.latencies_us.lock().push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32),
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                self.0.first_error.lock().get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.records > MAX_RECORDS {
        bail!("--records must be between 1 and {MAX_RECORDS}");
    }
    let topic = args.topic.clone().unwrap_or_else(|| format!("ferry-bench-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(super::topic::ensure(&args.connect, &topic, args.partitions))?;

    let reports = Arc::new(Reports { latencies_us: Mutex::new(Vec::with_capacity(args.records as usize)), failed: AtomicU64::new(0), first_error: Mutex::new(None) });
    let mut config = args.connect.client_config()?;
    config
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "none");
    args.semantics.configure_producer(&mut config, "ferry-bench");
    if let Some(acks) = &args.acks {
        config.set("acks", acks);
    }
    let producer: ThreadedProducer<ReportsContext> = config.create_with_context(ReportsContext(reports.clone())).map_err(|e| args.connect.explain(e))?;
    let transactional = args.semantics == CliSemantics::ExactlyOnce;
    if transactional {
        producer.init_transactions(args.connect.timeout()).map_err(|e| args.connect.explain(e))?;
        producer.begin_transaction()?;
    }
    let value = vec![b'x'; args.record_size];
    let started = Instant::now();
    let mut transaction_started = Instant::now();
    let mut transactions = 0u64;
    let progress = super::progress::bar(args.records, "records sent");
    for sent in 0..args.records {
        if sent % 10_000 == 0 {
            progress.set_position(sent);
        }
        let mut record = BaseRecord::with_opaque_to(&topic, Box::new(Instant::now())).payload(&value[..]).key(&[] as &[u8]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => return Err(e).context("send"),
            }
        }
        if transactional && transaction_started.elapsed() >= Duration::from_millis(args.transaction_ms) {
            producer.commit_transaction(args.connect.timeout()).context("commit_transaction")?;
            transactions += 1;
            producer.begin_transaction()?;
            transaction_started = Instant::now();
        }
    }
    if transactional {
        producer.commit_transaction(args.connect.timeout()).context("commit_transaction")?;
        transactions += 1;
    }
    producer.flush(Duration::from_secs(120)).context("flush")?;
    progress.finish_and_clear();
    let produce_secs = started.elapsed().as_secs_f64();
    let mut latencies = std::mem::take(&mut *reports.latencies_us.lock());
    latencies.sort_unstable();
    let delivered = latencies.len() as u64;
    let failed = reports.failed.load(Ordering::Relaxed);

    let consumed = if args.consume { Some(consume(&args, &topic, delivered)?) } else { None };
    let mb = (delivered as f64 * args.record_size as f64) / (1024.0 * 1024.0);
    // What the figures were measured over: TLS and SASL cost throughput.
    let protocol = args.connect.security.protocol()?;
    let mechanism = args.connect.client_config()?.get("sasl.mechanism").filter(|_| protocol.uses_sasl()).map(str::to_string);
    let summary = json!({
        "topic": topic, "semantics": args.semantics.name(), "acks": args.acks,
        "security_protocol": protocol.name(), "sasl_mechanism": mechanism,
        "records": args.records, "record_size": args.record_size, "partitions": args.partitions,
        "delivered": delivered, "failed": failed, "first_error": *reports.first_error.lock(),
        "produce_seconds": produce_secs, "produce_records_per_sec": delivered as f64 / produce_secs,
        "produce_mib_per_sec": mb / produce_secs, "transactions": transactions,
        "latency_ms": {"p50": percentile_ms(&latencies, 0.5), "p99": percentile_ms(&latencies, 0.99), "p999": percentile_ms(&latencies, 0.999), "max": percentile_ms(&latencies, 1.0)},
        "consume": consumed.map(|(n, secs)| json!({"records": n, "seconds": secs, "records_per_sec": n as f64 / secs})),
    });
    match args.output {
        OutputFormat::Json => println!("{summary}"),
        OutputFormat::Text => {
            if protocol != ferry_kafka::listener::SecurityProtocol::Plaintext {
                println!("over     {protocol}{}", mechanism.as_deref().map(|m| format!(" ({m})")).unwrap_or_default());
            }
            println!(
                "produce  {delivered} records ({failed} failed) in {produce_secs:.2} s: {:.0} records/s, {:.1} MiB/s",
                delivered as f64 / produce_secs,
                mb / produce_secs
            );
            println!(
                "latency  send to acknowledgement p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
                percentile_ms(&latencies, 0.5),
                percentile_ms(&latencies, 0.99),
                percentile_ms(&latencies, 0.999)
            );
            if let Some((n, secs)) = consumed {
                println!("consume  {n} records in {secs:.2} s: {:.0} records/s", n as f64 / secs);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} records were not delivered (first error: {})", reports.first_error.lock().clone().unwrap_or_default());
    }
    Ok(())
}

/// Reads every partition from the start until `expected` records (or 10 s without any).
fn consume(args: &BenchArgs, topic: &str, expected: u64) -> anyhow::Result<(u64, f64)> {
    let mut config = args.connect.client_config()?;
    config.set("group.id", format!("ferry-bench-{}", std::process::id())).set("enable.auto.commit", "false");
    if args.semantics == CliSemantics::ExactlyOnce {
        config.set("isolation.level", "read_committed");
    }
    let consumer: BaseConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..args.partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut last = Instant::now();
    let mut count = 0u64;
    while count < expected && last.elapsed() < Duration::from_secs(10) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                count += 1;
                last = Instant::now();
            }
            Some(Err(e)) => return Err(e).context("consume"),
            None => {}
        }
    }
    Ok((count, started.elapsed().as_secs_f64()))
}
