//! At-most-once: CPU samples as telemetry. The producer sends with acks=0
//! and no retries (the broker does not even answer); the consumer commits
//! each sample's offset before it uses it, so a crash skips a sample rather
//! than counting it twice. A lost sample is replaced by the next one.
//!
//!     ferry serve &
//!     cargo run -p ferry-examples --bin metrics-amo -- --samples 10000

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use ferry_client::{Preset, Semantics, UseCase};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::Message;
use serde_json::json;

#[derive(Parser)]
#[command(about = "At-most-once telemetry: acks=0 producer, commit-before-processing consumer")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    #[arg(long, default_value = "metrics")]
    topic: String,
    #[arg(long, default_value_t = 10_000)]
    samples: u64,
    /// Stop consuming after this long without a sample.
    #[arg(long, default_value_t = 3000)]
    idle_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    assert_eq!(UseCase::Telemetry.semantics(), Semantics::AtMostOnce);
    ferry_examples::ensure_topic(&args.bootstrap_server, &args.topic, 1)?;
    // A memory topic would suit telemetry too: `ferry topic create metrics --config ferry.storage=memory`.
    let preset = Preset::new(Semantics::AtMostOnce, &args.bootstrap_server);

    let producer: ThreadedProducer<_> = preset.producer_config().create().context("producer")?;
    for i in 0..args.samples {
        let value = format!("{{\"host\":\"web-{}\",\"cpu\":{}}}", i % 4, (i * 37) % 100);
        let mut record = BaseRecord::<(), str>::to(&args.topic).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(10)).context("flush")?;

    let consumer: BaseConsumer = preset.consumer_config("metrics-dashboard").create().context("consumer")?;
    consumer.subscribe(&[&args.topic])?;
    let (mut received, mut cpu_sum) = (0u64, 0u64);
    let mut idle = ferry_examples::IdleStop::new(Duration::from_millis(args.idle_ms));
    while !idle.should_stop() {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message.context("consume")?;
        idle.touch();
        // Commit first: at most once.
        consumer.commit_message(&message, CommitMode::Sync).context("commit")?;
        let sample: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default())?;
        cpu_sum += sample["cpu"].as_u64().unwrap_or(0);
        received += 1;
    }
    let mean_cpu = if received > 0 { cpu_sum as f64 / received as f64 } else { 0.0 };
    ferry_examples::print_summary(json!({
        "example": "metrics-amo", "semantics": "at-most-once",
        "sent": args.samples, "received": received, "mean_cpu": mean_cpu,
    }));
    Ok(())
}
