//! `ferry produce` and `ferry consume`: records from stdin to a topic and
//! back, with the delivery semantics as one choice.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

use super::{ConnectArgs, OutputFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CliSemantics {
    /// Producer acks=0 without retries; consumer commits before processing.
    AtMostOnce,
    /// Producer acks=all with retries; consumer commits after processing.
    AtLeastOnce,
    /// Transactional producer; consumer reads committed data only (read_committed).
    ExactlyOnce,
}

impl CliSemantics {
    /// The producer settings of this semantics; an exactly-once producer
    /// gets the transactional.id `<id_prefix>-<pid>`.
    pub fn configure_producer(self, config: &mut rdkafka::ClientConfig, id_prefix: &str) {
        match self {
            CliSemantics::AtMostOnce => config.set("acks", "0").set("message.send.max.retries", "0").set("enable.idempotence", "false"),
            CliSemantics::AtLeastOnce => config.set("acks", "all").set("enable.idempotence", "false"),
            CliSemantics::ExactlyOnce => config.set("transactional.id", format!("{id_prefix}-{}", std::process::id())),
        };
    }

    /// The name used on the command line (`--semantics`).
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self).map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    #[arg(long, value_enum, default_value_t = CliSemantics::AtLeastOnce)]
    semantics: CliSemantics,
    /// Read records from this file instead of stdin (one per line).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Split each line into key and value at the first occurrence of this.
    #[arg(long)]
    key_separator: Option<String>,
    /// A header for every record (repeatable), KEY=VALUE.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Write to this partition (default: by key, or spread).
    #[arg(long)]
    partition: Option<i32>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Consumer group (commits go there).
    #[arg(long)]
    group: String,
    #[arg(long, value_enum, default_value_t = CliSemantics::AtLeastOnce)]
    semantics: CliSemantics,
    /// Start from the earliest offset when the group has no committed offset.
    #[arg(long)]
    from_beginning: bool,
    /// Start every partition at this offset (overrides the group's position).
    #[arg(long)]
    offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Exit when nothing arrives for this long.
    #[arg(long = "idle-timeout-ms")]
    idle_timeout_ms: Option<u64>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let mut config = args.connect.client_config();
    config.set("linger.ms", "5");
    args.semantics.configure_producer(&mut config, "ferry-cli");
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = config.create().context("cannot create a Kafka client")?;
    let transactional = args.semantics == CliSemantics::ExactlyOnce;
    if transactional {
        producer.init_transactions(args.connect.timeout()).map_err(|e| args.connect.explain(e))?;
        producer.begin_transaction()?;
    }
    let mut headers = OwnedHeaders::new();
    for h in &args.headers {
        let (k, v) = h.split_once('=').with_context(|| format!("header `{h}` is not KEY=VALUE"))?;
        headers = headers.insert(Header { key: k, value: Some(v) });
    }
    let input: Box<dyn BufRead> = match &args.file {
        Some(f) => Box::new(std::io::BufReader::new(std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?)),
        None => Box::new(std::io::stdin().lock()),
    };
    let progress = super::progress::counter("records sent");
    let mut count = 0u64;
    for line in input.lines() {
        let line = line?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line.clone()),
            },
            None => (None, line.clone()),
        };
        let mut record = BaseRecord::<String, String>::to(&args.topic).payload(&value).headers(headers.clone());
        if let Some(k) = &key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(5));
                    record = r;
                }
                Err((e, _)) => bail!("cannot send: {e}"),
            }
        }
        count += 1;
        progress.inc(1);
        if transactional && count % 1000 == 0 {
            producer.commit_transaction(args.connect.timeout())?;
            producer.begin_transaction()?;
        }
    }
    if transactional {
        producer.commit_transaction(args.connect.timeout()).map_err(|e| args.connect.explain(e))?;
    }
    producer.flush(args.connect.timeout()).map_err(|e| args.connect.explain(e))?;
    progress.finish_and_clear();
    let failed = producer.in_flight_count();
    if failed > 0 {
        bail!("{failed} records were not acknowledged");
    }
    eprintln!("{count} records produced to {} ({})", args.topic, args.semantics.name());
    Ok(())
}

fn text(bytes: Option<&[u8]>) -> serde_json::Value {
    match bytes {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
        },
    }
}

pub fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = args.connect.client_config();
    config
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", if args.from_beginning { "earliest" } else { "latest" });
    if args.semantics == CliSemantics::ExactlyOnce {
        config.set("isolation.level", "read_committed");
    }
    let consumer: BaseConsumer = config.create().context("cannot create a Kafka client")?;
    match args.offset {
        Some(offset) => {
            let md = consumer.fetch_metadata(Some(&args.topic), args.connect.timeout()).map_err(|e| args.connect.explain(e))?;
            let t = md.topics().first().context("no metadata for the topic")?;
            let mut tpl = TopicPartitionList::new();
            for p in t.partitions() {
                tpl.add_partition_offset(&args.topic, p.id(), Offset::Offset(offset))?;
            }
            consumer.assign(&tpl)?;
        }
        None => consumer.subscribe(&[&args.topic])?,
    }
    // Progress only when the records go elsewhere (a file, a pipe).
    let progress = if super::progress::stdout_is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        super::progress::counter("records consumed")
    };
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    let mut last = Instant::now();
    let started = Instant::now();
    loop {
        if args.max.is_some_and(|m| seen >= m) {
            break;
        }
        // The idle clock runs only once partitions are assigned: joining a
        // group can take longer than the timeout (group.initial.rebalance.delay.ms).
        if consumer.assignment().map(|a| a.count() == 0).unwrap_or(true) {
            if let Some(t) = args.idle_timeout_ms {
                if started.elapsed() > Duration::from_millis(t).max(Duration::from_secs(30)) {
                    bail!("no partition of {} was assigned to this consumer: does the topic exist?", args.topic);
                }
            }
            last = Instant::now();
        }
        if args.idle_timeout_ms.is_some_and(|t| last.elapsed() > Duration::from_millis(t)) {
            break;
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = result.map_err(|e| args.connect.explain(e))?;
        last = Instant::now();
        // At-most-once: the commit comes first; a crash after it loses this record, never repeats it.
        if args.semantics == CliSemantics::AtMostOnce {
            consumer.commit_message(&m, CommitMode::Sync)?;
        }
        match args.output {
            OutputFormat::Json => {
                let headers: serde_json::Map<String, serde_json::Value> = m
                    .headers()
                    .map(|hs| hs.iter().map(|h| (h.key.to_string(), text(h.value))).collect())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}",
                    json!({"topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "timestamp": m.timestamp().to_millis(),
                           "key": text(m.key()), "value": text(m.payload()), "headers": headers})
                )?;
            }
            OutputFormat::Text => writeln!(out, "{}", String::from_utf8_lossy(m.payload().unwrap_or_default()))?,
        }
        out.flush()?;
        // At-least-once and exactly-once reads: processed, then committed.
        if args.semantics != CliSemantics::AtMostOnce {
            consumer.commit_message(&m, CommitMode::Sync)?;
        }
        seen += 1;
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(())
}
