//! Shared bits of the examples: topic creation and the summary line.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Creates `topic` with `partitions` partitions unless it exists.
pub fn ensure_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().context("admin client")?;
    // librdkafka completes the future on its own thread; no runtime needed.
    let results = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .with_context(|| format!("create topic {topic} at {bootstrap} (is a broker running? `ferry serve`)"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Prints the example's result as one JSON line on stdout (the tests read it).
pub fn print_summary(summary: serde_json::Value) {
    println!("{summary}");
}

/// When a consuming example stops: after `idle` without a message, counted
/// from the first message (joining a group takes a few seconds: Kafka's
/// group.initial.rebalance.delay.ms is 3 s), or after a minute if
/// nothing arrives at all.
pub struct IdleStop {
    idle: Duration,
    first_wait: Duration,
    started: std::time::Instant,
    last: Option<std::time::Instant>,
}

impl IdleStop {
    pub fn new(idle: Duration) -> IdleStop {
        IdleStop { idle, first_wait: Duration::from_secs(60), started: std::time::Instant::now(), last: None }
    }

    /// Something arrived.
    pub fn touch(&mut self) {
        self.last = Some(std::time::Instant::now());
    }

    pub fn should_stop(&self) -> bool {
        match self.last {
            Some(last) => last.elapsed() >= self.idle,
            None => self.started.elapsed() >= self.first_wait,
        }
    }
}
