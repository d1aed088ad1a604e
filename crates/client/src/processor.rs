//! Consume-transform-produce with exactly-once results: each batch's outputs
//! and its input offsets commit in one transaction (KIP-98/447). A failed
//! batch is aborted and the consumer rewound to the batch's start, so the
//! inputs are processed again; a newer instance with the same
//! transactional.id fences this one.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::semantics::{Preset, Semantics};
use crate::{ClientError, Result};

/// Bound on how long the processor waits for a transactional call
/// (init, send offsets, commit, abort).
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a [`TransactionalProcessor`].
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Must be exactly-once with a transactional.id.
    pub preset: Preset,
    pub group_id: String,
    pub input_topics: Vec<String>,
    /// A transaction commits when it is this old (and has input)...
    pub commit_interval: Duration,
    /// ...or holds this many input messages.
    pub max_batch: usize,
}

impl ProcessorConfig {
    pub fn new(preset: Preset, group_id: &str, input_topics: &[&str]) -> ProcessorConfig {
        ProcessorConfig {
            preset,
            group_id: group_id.to_string(),
            input_topics: input_topics.iter().map(|t| t.to_string()).collect(),
            commit_interval: Duration::from_millis(100),
            max_batch: 10_000,
        }
    }
}

/// One record the handler wants written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub topic: String,
    /// None: chosen by key (or spread when there is no key).
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl Output {
    pub fn new(topic: &str, key: Option<&[u8]>, value: &[u8]) -> Output {
        Output { topic: topic.to_string(), partition: None, key: key.map(<[u8]>::to_vec), value: value.to_vec() }
    }
}

/// How one [`TransactionalProcessor::process_batch`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Nothing arrived; no transaction was left open.
    Idle,
    Committed { inputs: usize, outputs: usize },
    /// Rolled back and rewound; the inputs will be processed again.
    Aborted { inputs: usize, reason: String },
}

/// Notes partition revocations: a batch that spans one must not commit the
/// offsets of a partition another member now owns.
#[derive(Default)]
pub struct RebalanceWatch {
    revoked: AtomicBool,
}

impl ClientContext for RebalanceWatch {}

impl ConsumerContext for RebalanceWatch {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_) | Rebalance::Error(_)) {
            self.revoked.store(true, Ordering::SeqCst);
        }
    }
}

impl RebalanceWatch {
    pub(crate) fn take_revoked(&self) -> bool {
        self.revoked.swap(false, Ordering::SeqCst)
    }
}

/// Whether a transactional error means this producer was fenced (or is
/// otherwise unusable): the instance must stop.
pub(crate) fn is_fatal(error: &KafkaError) -> bool {
    if let KafkaError::Transaction(e) = error {
        if e.is_fatal() {
            return true;
        }
    }
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
    )
}

/// A consume-transform-produce loop with offsets inside the transaction.
pub struct TransactionalProcessor {
    consumer: BaseConsumer<RebalanceWatch>,
    producer: ThreadedProducer<DefaultProducerContext>,
    transactional_id: String,
    config: ProcessorConfig,
}

impl TransactionalProcessor {
    /// Creates the consumer (read_committed) and the transactional producer
    /// and registers the transactional.id with the broker, which fences any
    /// older instance and aborts what it left open.
    pub fn new(config: ProcessorConfig) -> Result<TransactionalProcessor> {
        if config.preset.semantics() != Semantics::ExactlyOnce {
            return Err(ClientError::Config("TransactionalProcessor needs the exactly-once preset".into()));
        }
        let producer_config = config.preset.producer_config();
        let transactional_id = producer_config
            .get("transactional.id")
            .ok_or_else(|| ClientError::Config("the exactly-once preset needs a transactional.id".into()))?
            .to_string();
        let producer: ThreadedProducer<DefaultProducerContext> = producer_config.create()?;
        producer.init_transactions(TXN_CALL_TIMEOUT)?;
        let consumer: BaseConsumer<RebalanceWatch> =
            config.preset.consumer_config(&config.group_id).create_with_context(RebalanceWatch::default())?;
        let topics: Vec<&str> = config.input_topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(TransactionalProcessor { consumer, producer, transactional_id, config })
    }

    pub fn consumer(&self) -> &BaseConsumer<RebalanceWatch> {
        &self.consumer
    }

    /// One transaction: polls up to `max_batch` inputs for up to
    /// `commit_interval`, hands each to `handler`, writes its outputs, and
    /// commits outputs and input offsets together. A handler error or an
    /// abortable broker error aborts and rewinds; a fenced producer returns
    /// [`ClientError::Fenced`].
    pub fn process_batch<E: Display>(
        &mut self,
        mut handler: impl FnMut(&BorrowedMessage<'_>) -> std::result::Result<Vec<Output>, E>,
    ) -> Result<BatchOutcome> {
        let started = Instant::now();
        // first offset (for the rewind) and next offset (for the commit) per partition
        let mut positions: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
        let mut inputs = 0usize;
        let mut outputs = 0usize;
        let mut failure: Option<String> = None;
        let mut in_transaction = false;
        self.consumer.context().take_revoked();

        while inputs < self.config.max_batch {
            let remaining = self.config.commit_interval.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            let message = match self.consumer.poll(remaining) {
                None => break,
                Some(Err(e)) => {
                    failure = Some(format!("consume: {e}"));
                    break;
                }
                Some(Ok(message)) => message,
            };
            if !in_transaction {
                self.producer.begin_transaction().map_err(|e| self.classify(e))?;
                in_transaction = true;
            }
            inputs += 1;
            positions
                .entry((message.topic().to_string(), message.partition()))
                .and_modify(|p| p.1 = message.offset() + 1)
                .or_insert((message.offset(), message.offset() + 1));
            match handler(&message) {
                Ok(records) => {
                    for record in &records {
                        if let Err(e) = self.send(record) {
                            failure = Some(format!("produce: {e}"));
                            break;
                        }
                        outputs += 1;
                    }
                }
                Err(e) => failure = Some(format!("handler: {e}")),
            }
            if failure.is_some() {
                break;
            }
        }
        if !in_transaction {
            return Ok(BatchOutcome::Idle);
        }
        if failure.is_none() && self.consumer.context().take_revoked() {
            failure = Some("a partition was revoked during the transaction".to_string());
        }
        if failure.is_none() {
            match self.commit(&positions) {
                Ok(()) => return Ok(BatchOutcome::Committed { inputs, outputs }),
                Err(e) if is_fatal(&e) => return Err(ClientError::Fenced(self.transactional_id.clone())),
                Err(e) => failure = Some(format!("commit: {e}")),
            }
        }
        let reason = failure.unwrap_or_default();
        tracing::warn!(%reason, inputs, "aborting transaction and rewinding");
        self.producer.abort_transaction(TXN_CALL_TIMEOUT).map_err(|e| self.classify(e))?;
        self.rewind(&positions)?;
        Ok(BatchOutcome::Aborted { inputs, reason })
    }

    fn send(&self, record: &Output) -> std::result::Result<(), KafkaError> {
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&record.topic).payload(&record.value[..]);
        if let Some(key) = &record.key {
            base = base.key(&key[..]);
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn commit(&self, positions: &BTreeMap<(String, i32), (i64, i64)>) -> std::result::Result<(), KafkaError> {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), (_, next)) in positions {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
        self.producer.send_offsets_to_transaction(&offsets, &metadata, TXN_CALL_TIMEOUT)?;
        self.producer.commit_transaction(TXN_CALL_TIMEOUT)
    }

    /// Puts every partition of the aborted batch back to its first input.
    fn rewind(&self, positions: &BTreeMap<(String, i32), (i64, i64)>) -> Result<()> {
        let assigned = self.consumer.assignment()?;
        for ((topic, partition), (first, _)) in positions {
            // A revoked partition restarts from its committed offset at its new owner.
            if assigned.find_partition(topic, *partition).is_some() {
                self.consumer.seek(topic, *partition, Offset::Offset(*first), Duration::from_secs(10))?;
            }
        }
        Ok(())
    }

    fn classify(&self, error: KafkaError) -> ClientError {
        if is_fatal(&error) {
            ClientError::Fenced(self.transactional_id.clone())
        } else {
            ClientError::Kafka(error)
        }
    }
}
