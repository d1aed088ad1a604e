//! `ferry produce`: records from stdin to a topic, with the delivery
//! semantics as one choice (`ferry consume` reads them back). The
//! semantics presets live here.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use super::ConnectArgs;

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
    /// The topic (or --topic, as in kafka-console-producer.sh).
    #[arg(value_name = "TOPIC", required_unless_present = "topic_flag")]
    topic: Option<String>,
    #[arg(long = "topic", value_name = "TOPIC", conflicts_with = "topic")]
    topic_flag: Option<String>,
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
    /// As kafka-console-producer.sh's reader: parse.key=true splits each line at
    /// key.separator (default a tab).
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// A librdkafka producer setting, passed as is (repeatable).
    #[arg(long = "producer-property", value_name = "KEY=VALUE")]
    producer_properties: Vec<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// The key separator from --key-separator, or from Kafka's
/// `--property parse.key=true [--property key.separator=X]`.
fn key_separator(args: &ProduceArgs) -> anyhow::Result<Option<String>> {
    let mut parse_key = false;
    let mut separator = "\t".to_string();
    for p in &args.properties {
        match p.split_once('=') {
            Some(("parse.key", v)) => parse_key = v.eq_ignore_ascii_case("true"),
            Some(("key.separator", v)) => separator = v.to_string(),
            _ => bail!("unknown or malformed --property `{p}` (parse.key=true, key.separator=X)"),
        }
    }
    Ok(args.key_separator.clone().or(parse_key.then_some(separator)))
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let topic = args.topic.clone().or(args.topic_flag.clone()).context("a topic is required")?;
    let key_separator = key_separator(&args)?;
    let mut config = args.connect.client_config()?;
    config.set("linger.ms", "5");
    args.semantics.configure_producer(&mut config, "ferry-cli");
    for p in &args.producer_properties {
        let (k, v) = p.split_once('=').with_context(|| format!("--producer-property `{p}` is not KEY=VALUE"))?;
        config.set(k, v);
    }
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
        let (key, value) = match &key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line.clone()),
            },
            None => (None, line.clone()),
        };
        let mut record = BaseRecord::<String, String>::to(&topic).payload(&value).headers(headers.clone());
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
    eprintln!("{count} records produced to {topic} ({})", args.semantics.name());
    Ok(())
}
