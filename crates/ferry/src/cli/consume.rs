//! `ferry consume`: records from a topic to stdout, with the delivery
//! semantics deciding when offsets are committed. Where it overlaps
//! kafka-console-consumer.sh it takes that tool's names and meanings
//! (`--topic`, `--from-beginning`, `--partition`, `--offset`,
//! `--max-messages`, `--timeout-ms`, `--property print.key=true`,
//! `--consumer-property`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

use super::records::CliSemantics;
use super::{ConnectArgs, ConsumeConnectArgs, OutputFormat};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic (or --topic, as in kafka-console-consumer.sh).
    #[arg(value_name = "TOPIC", required_unless_present = "topic_flag")]
    topic: Option<String>,
    #[arg(long = "topic", value_name = "TOPIC", conflicts_with = "topic")]
    topic_flag: Option<String>,
    /// Consumer group, where commits go [default: console-consumer-<pid>, as Kafka's tool].
    #[arg(long)]
    group: Option<String>,
    #[arg(long, value_enum, default_value_t = CliSemantics::AtLeastOnce)]
    semantics: CliSemantics,
    /// Start from the earliest offset when the group has no committed offset.
    #[arg(long)]
    from_beginning: bool,
    /// Consume only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Where to start: earliest, latest or an offset; for --partition, or for every
    /// partition without it (that overrides the group's position).
    #[arg(long)]
    offset: Option<String>,
    /// Exit after this many messages.
    #[arg(long = "max-messages", alias = "max")]
    max_messages: Option<u64>,
    /// Exit when no message arrives for this long (kafka-console-consumer.sh's meaning; the
    /// clock starts once partitions are assigned). --idle-timeout-ms is an older name.
    #[arg(long = "timeout-ms", alias = "idle-timeout-ms")]
    timeout_ms: Option<u64>,
    /// How text output looks, as Kafka's formatter: print.key, print.value, print.partition,
    /// print.offset, print.timestamp, print.headers (true/false), key.separator (default a
    /// tab), line.separator, headers.separator, null.literal.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// A librdkafka consumer setting, passed as is (repeatable).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    #[command(flatten)]
    connect: ConsumeConnectArgs,
}

/// Kafka's DefaultMessageFormatter settings, from `--property`.
#[derive(Debug)]
struct TextFormat {
    print_key: bool,
    print_value: bool,
    print_partition: bool,
    print_offset: bool,
    print_timestamp: bool,
    print_headers: bool,
    key_separator: String,
    line_separator: String,
    headers_separator: String,
    null_literal: String,
}

impl TextFormat {
    fn parse(properties: &[String]) -> anyhow::Result<TextFormat> {
        let mut f = TextFormat {
            print_key: false,
            print_value: true,
            print_partition: false,
            print_offset: false,
            print_timestamp: false,
            print_headers: false,
            key_separator: "\t".into(),
            line_separator: "\n".into(),
            headers_separator: ",".into(),
            null_literal: "null".into(),
        };
        for p in properties {
            let (key, value) = p.split_once('=').with_context(|| format!("--property `{p}` is not KEY=VALUE"))?;
            let flag = || value.eq_ignore_ascii_case("true");
            match key {
                "print.key" => f.print_key = flag(),
                "print.value" => f.print_value = flag(),
                "print.partition" => f.print_partition = flag(),
                "print.offset" => f.print_offset = flag(),
                "print.timestamp" => f.print_timestamp = flag(),
                "print.headers" => f.print_headers = flag(),
                "key.separator" => f.key_separator = value.into(),
                "line.separator" => f.line_separator = value.into(),
                "headers.separator" => f.headers_separator = value.into(),
                "null.literal" => f.null_literal = value.into(),
                other => bail!(
                    "unknown --property `{other}` (print.key, print.value, print.partition, print.offset, print.timestamp, print.headers, key.separator, line.separator, headers.separator, null.literal)"
                ),
            }
        }
        Ok(f)
    }

    fn bytes<'a>(&'a self, b: Option<&'a [u8]>) -> std::borrow::Cow<'a, str> {
        match b {
            Some(b) => String::from_utf8_lossy(b),
            None => self.null_literal.as_str().into(),
        }
    }

    /// One record as kafka-console-consumer.sh prints it.
    fn line(&self, m: &BorrowedMessage<'_>) -> String {
        let sep = &self.key_separator;
        let mut out = String::new();
        if self.print_timestamp {
            match m.timestamp() {
                rdkafka::Timestamp::CreateTime(t) => out.push_str(&format!("CreateTime:{t}{sep}")),
                rdkafka::Timestamp::LogAppendTime(t) => out.push_str(&format!("LogAppendTime:{t}{sep}")),
                rdkafka::Timestamp::NotAvailable => out.push_str(&format!("NO_TIMESTAMP{sep}")),
            }
        }
        if self.print_partition {
            out.push_str(&format!("Partition:{}{sep}", m.partition()));
        }
        if self.print_offset {
            out.push_str(&format!("Offset:{}{sep}", m.offset()));
        }
        if self.print_headers {
            let headers: Vec<String> =
                m.headers().map(|hs| hs.iter().map(|h| format!("{}:{}", h.key, self.bytes(h.value))).collect()).unwrap_or_default();
            out.push_str(if headers.is_empty() { "NO_HEADERS" } else { "" });
            out.push_str(&headers.join(&self.headers_separator));
            out.push_str(sep);
        }
        if self.print_key {
            out.push_str(&self.bytes(m.key()));
            if self.print_value {
                out.push_str(sep);
            }
        }
        if self.print_value {
            out.push_str(&self.bytes(m.payload()));
        }
        out.push_str(&self.line_separator);
        out
    }
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

fn json_line(m: &BorrowedMessage<'_>) -> String {
    let headers: serde_json::Map<String, serde_json::Value> =
        m.headers().map(|hs| hs.iter().map(|h| (h.key.to_string(), text(h.value))).collect()).unwrap_or_default();
    json!({"topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "timestamp": m.timestamp().to_millis(),
           "key": text(m.key()), "value": text(m.payload()), "headers": headers})
    .to_string()
        + "\n"
}

fn start_offset(text: &str) -> anyhow::Result<Offset> {
    match text {
        "earliest" => Ok(Offset::Beginning),
        "latest" => Ok(Offset::End),
        n => match n.parse::<i64>() {
            Ok(o) if o >= 0 => Ok(Offset::Offset(o)),
            _ => bail!("--offset `{n}` is not earliest, latest or a non-negative offset"),
        },
    }
}

/// Assigns the partitions asked for, or subscribes to the topic.
fn attach(consumer: &BaseConsumer, args: &ConsumeArgs, topic: &str, connect: &ConnectArgs) -> anyhow::Result<()> {
    let offset = args.offset.as_deref().map(start_offset).transpose()?;
    if args.partition.is_none() && offset.is_none() {
        return Ok(consumer.subscribe(&[topic])?);
    }
    let md = consumer.fetch_metadata(Some(topic), connect.timeout()).map_err(|e| connect.explain(e))?;
    let t = md.topics().first().context("no metadata for the topic")?;
    if let Some(err) = t.error() {
        bail!("topic {topic}: {:?}", rdkafka::types::RDKafkaRespErr::from(err));
    }
    let ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    let chosen: Vec<i32> = match args.partition {
        Some(p) if !ids.contains(&p) => bail!("topic {topic} has no partition {p} (it has {})", ids.len()),
        Some(p) => vec![p],
        None => ids,
    };
    let mut tpl = TopicPartitionList::new();
    for p in chosen {
        tpl.add_partition_offset(topic, p, offset.unwrap_or(Offset::Stored))?;
    }
    Ok(consumer.assign(&tpl)?)
}

pub fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let topic = args.topic.clone().or(args.topic_flag.clone()).context("a topic is required")?;
    let connect = ConnectArgs::from(&args.connect);
    let format = TextFormat::parse(&args.properties)?;
    let group = args.group.clone().unwrap_or_else(|| format!("console-consumer-{}", std::process::id()));
    let mut config = connect.client_config()?;
    config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", if args.from_beginning { "earliest" } else { "latest" });
    if args.semantics == CliSemantics::ExactlyOnce {
        config.set("isolation.level", "read_committed");
    }
    for p in &args.consumer_properties {
        let (k, v) = p.split_once('=').with_context(|| format!("--consumer-property `{p}` is not KEY=VALUE"))?;
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().context("cannot create a Kafka client")?;
    attach(&consumer, &args, &topic, &connect)?;
    // Progress only when the records go elsewhere (a file, a pipe).
    let progress =
        if super::progress::stdout_is_terminal() { indicatif::ProgressBar::hidden() } else { super::progress::counter("records consumed") };
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    let mut last = Instant::now();
    let started = Instant::now();
    loop {
        if args.max_messages.is_some_and(|m| seen >= m) {
            break;
        }
        // The idle clock runs only once partitions are assigned: joining a
        // group can take longer than the timeout (group.initial.rebalance.delay.ms).
        if consumer.assignment().map(|a| a.count() == 0).unwrap_or(true) {
            if let Some(t) = args.timeout_ms {
                if started.elapsed() > Duration::from_millis(t).max(Duration::from_secs(30)) {
                    bail!("no partition of {topic} was assigned to this consumer: does the topic exist?");
                }
            }
            last = Instant::now();
        }
        if args.timeout_ms.is_some_and(|t| last.elapsed() > Duration::from_millis(t)) {
            break;
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = result.map_err(|e| connect.explain(e))?;
        last = Instant::now();
        // At-most-once: the commit comes first; a crash after it loses this record, never repeats it.
        if args.semantics == CliSemantics::AtMostOnce {
            consumer.commit_message(&m, CommitMode::Sync)?;
        }
        let line = match args.output {
            OutputFormat::Json => json_line(&m),
            OutputFormat::Text => format.line(&m),
        };
        out.write_all(line.as_bytes())?;
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
