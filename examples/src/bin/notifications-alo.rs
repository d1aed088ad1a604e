//! At-least-once with an idempotent consumer: order notifications. The
//! producer sends with acks=all and retries, so a notification may be in the
//! topic twice (this example re-sends every tenth one, as a retry after a
//! lost answer would). The consumer remembers each processed message id in
//! SQLite for 7 days; the "sent" record and the id's mark commit in one
//! database transaction, so each customer gets each notification once.
//!
//!     ferry serve &
//!     cargo run -p ferry-examples --bin notifications-alo -- --orders 1000

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use ferry_client::{IdempotentConsumer, Outcome, Preset, Semantics, SqliteStore};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::Message;
use serde_json::json;

#[derive(Parser)]
#[command(about = "At-least-once order notifications, each sent once thanks to the idempotent consumer")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    #[arg(long, default_value = "order-notifications")]
    topic: String,
    #[arg(long, default_value_t = 1000)]
    orders: u64,
    /// The processed-id store and the sent notifications (one SQLite file).
    #[arg(long, default_value = "notifications.db")]
    db: PathBuf,
    #[arg(long, default_value_t = 3000)]
    idle_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferry_examples::ensure_topic(&args.bootstrap_server, &args.topic, 3)?;
    let preset = Preset::new(Semantics::AtLeastOnce, &args.bootstrap_server);

    let producer: ThreadedProducer<_> = preset.producer_config().create().context("producer")?;
    let mut published = 0u64;
    for order in 0..args.orders {
        let id = format!("order-{order}");
        let body = format!("{{\"order\":\"{id}\",\"email\":\"customer{}@example.com\"}}", order % 97);
        let copies = if order % 10 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            let headers = OwnedHeaders::new().insert(Header { key: "message-id", value: Some(id.as_str()) });
            producer
                .send(BaseRecord::to(&args.topic).key(&id).payload(&body).headers(headers))
                .map_err(|(e, _)| e)
                .context("send")?;
            published += 1;
        }
    }
    producer.flush(Duration::from_secs(30)).context("flush")?;

    let store = SqliteStore::open(&args.db).context("open the processed-id store")?;
    store
        .connection()
        .execute_batch("CREATE TABLE IF NOT EXISTS sent_notifications (order_id TEXT PRIMARY KEY, email TEXT NOT NULL)")?;
    let mut consumer = IdempotentConsumer::new(&preset, "order-notifier", &[&args.topic], store)?;
    let (mut delivered, mut duplicates) = (0u64, 0u64);
    let mut idle = ferry_examples::IdleStop::new(Duration::from_millis(args.idle_ms));
    while !idle.should_stop() {
        let outcome = consumer.poll_process(Duration::from_millis(100), |message, tx| {
            let body: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default())
                .map_err(|e| format!("bad notification: {e}"))?;
            // "Sending" is recording it; the business row and the id's mark commit together.
            tx.execute(
                "INSERT INTO sent_notifications (order_id, email) VALUES (?1, ?2)",
                (body["order"].as_str().unwrap_or(""), body["email"].as_str().unwrap_or("")),
            )
            .map_err(|e| e.to_string())
        })?;
        match outcome {
            None => continue,
            Some(Outcome::Processed(_)) => delivered += 1,
            Some(Outcome::Duplicate) => duplicates += 1,
        }
        idle.touch();
    }
    let sent: i64 = consumer.store().connection().query_row("SELECT COUNT(*) FROM sent_notifications", [], |r| r.get(0))?;
    consumer.close()?;
    ferry_examples::print_summary(json!({
        "example": "notifications-alo", "semantics": "at-least-once",
        "orders": args.orders, "published": published,
        "processed": delivered, "duplicates_filtered": duplicates, "notifications_sent": sent,
    }));
    Ok(())
}
