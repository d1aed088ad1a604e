//! Exactly-once: payments become ledger entries. A TransactionalProcessor
//! reads `payments` (read_committed), writes a debit and a credit entry per
//! payment to `ledger`, and commits the payment offsets in the same
//! transaction. One payment fails the first time it is handled: its batch
//! is aborted and rewound, and processed again, without a duplicate entry.
//!
//!     ferry serve &
//!     cargo run -p ferry-examples --bin payments-eos -- --payments 2000

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use ferry_client::{BatchOutcome, Output, Preset, ProcessorConfig, Semantics, TransactionalProcessor};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::Message;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Exactly-once payments to ledger entries with a transactional processor")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    #[arg(long, default_value_t = 2000)]
    payments: u64,
    #[arg(long, default_value = "payments")]
    input_topic: String,
    #[arg(long, default_value = "ledger")]
    output_topic: String,
    #[arg(long, default_value = "payments-ledger")]
    transactional_id: String,
    #[arg(long, default_value_t = 3000)]
    idle_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferry_examples::ensure_topic(&args.bootstrap_server, &args.input_topic, 2)?;
    ferry_examples::ensure_topic(&args.bootstrap_server, &args.output_topic, 2)?;

    // The payments arrive through an idempotent producer (exactly-once preset, no transactional.id).
    let preset = Preset::new(Semantics::ExactlyOnce, &args.bootstrap_server);
    let producer: ThreadedProducer<_> = preset.producer_config().create().context("producer")?;
    // Payment ids are unique per run, so a second run's audit counts its own payments only.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    for i in 0..args.payments {
        let id = format!("pay-{run}-{i}");
        let body = format!("{{\"id\":\"{id}\",\"from\":\"acct-{}\",\"to\":\"acct-{}\",\"cents\":{}}}", i % 7, (i + 3) % 7, 100 + i);
        producer.send(BaseRecord::to(&args.input_topic).key(&id).payload(&body)).map_err(|(e, _)| e).context("send")?;
    }
    producer.flush(Duration::from_secs(30)).context("flush")?;

    let config = ProcessorConfig::new(
        preset.clone().transactional_id(&args.transactional_id),
        "payments-ledger",
        &[&args.input_topic],
    );
    let mut processor = TransactionalProcessor::new(config)?;
    let failing_payment = format!("pay-{run}-{}", args.payments / 2);
    let mut failed_once = false;
    let (mut committed, mut aborted) = (0usize, 0usize);
    let mut idle = ferry_examples::IdleStop::new(Duration::from_millis(args.idle_ms));
    while !idle.should_stop() {
        let outcome = processor.process_batch(|message| {
            let payment: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).map_err(|e| e.to_string())?;
            let id = payment["id"].as_str().unwrap_or_default().to_string();
            if id == failing_payment && !failed_once {
                failed_once = true;
                return Err(format!("{id}: ledger service timed out (simulated)"));
            }
            let cents = payment["cents"].as_i64().unwrap_or(0);
            let debit = json!({"payment": id, "account": payment["from"], "cents": -cents}).to_string();
            let credit = json!({"payment": id, "account": payment["to"], "cents": cents}).to_string();
            Ok::<_, String>(vec![
                Output::new(&args.output_topic, Some(id.as_bytes()), debit.as_bytes()),
                Output::new(&args.output_topic, Some(id.as_bytes()), credit.as_bytes()),
            ])
        })?;
        match outcome {
            BatchOutcome::Idle => continue,
            BatchOutcome::Committed { inputs, .. } => committed += inputs,
            BatchOutcome::Aborted { inputs, reason } => {
                eprintln!("aborted a batch of {inputs}: {reason}");
                aborted += inputs;
            }
        }
        idle.touch();
    }

    // Read the ledger back as a read_committed consumer would.
    let reader: BaseConsumer = preset.consumer_config("payments-ledger-audit").create()?;
    reader.subscribe(&[&args.output_topic])?;
    let mut entries: HashMap<String, (u32, i64)> = HashMap::new();
    let mut idle = ferry_examples::IdleStop::new(Duration::from_millis(args.idle_ms));
    while !idle.should_stop() {
        let Some(message) = reader.poll(Duration::from_millis(100)) else { continue };
        let entry: serde_json::Value = serde_json::from_slice(message?.payload().unwrap_or_default())?;
        idle.touch();
        let payment = entry["payment"].as_str().unwrap_or_default();
        if !payment.starts_with(&format!("pay-{run}-")) {
            continue;
        }
        let slot = entries.entry(payment.to_string()).or_default();
        slot.0 += 1;
        slot.1 += entry["cents"].as_i64().unwrap_or(0);
        idle.touch();
    }
    let wrong = entries.values().filter(|(count, balance)| *count != 2 || *balance != 0).count();
    ferry_examples::print_summary(json!({
        "example": "payments-eos", "semantics": "exactly-once",
        "payments": args.payments, "committed_inputs": committed, "aborted_inputs": aborted,
        "payments_in_ledger": entries.len(), "payments_with_wrong_entries": wrong,
    }));
    Ok(())
}
