//! Consume-transform-produce with exactly-once results: each batch's outputs
//! and its input offsets commit in one transaction (KIP-98/447). A failed
//! batch is aborted and the consumer rewound to the batch's start, so the
//! inputs are processed again; a newer instance with the same
//! transactional.id fences this one.

use std::fmt::Display;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::semantics::Preset;
use crate::txn_pair::{Positions, RebalanceWatch, TxnPair, TXN_CALL_TIMEOUT};
use crate::Result;

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

/// A consume-transform-produce loop with offsets inside the transaction.
pub struct TransactionalProcessor {
    clients: TxnPair,
    config: ProcessorConfig,
}

impl TransactionalProcessor {
    /// Creates the consumer (read_committed) and the transactional producer
    /// and registers the transactional.id with the broker, which fences any
    /// older instance and aborts what it left open.
    pub fn new(config: ProcessorConfig) -> Result<TransactionalProcessor> {
        let clients = TxnPair::open(&config.preset, &config.group_id, "TransactionalProcessor")?;
        clients.subscribe(&config.input_topics)?;
        Ok(TransactionalProcessor { clients, config })
    }

    pub fn consumer(&self) -> &BaseConsumer<RebalanceWatch> {
        &self.clients.consumer
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
        let mut positions = Positions::default();
        let mut inputs = 0usize;
        let mut outputs = 0usize;
        let mut failure: Option<String> = None;
        let mut in_transaction = false;
        self.clients.consumer.context().take_revoked();

        while inputs < self.config.max_batch {
            let remaining = self.config.commit_interval.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            let message = match self.clients.consumer.poll(remaining) {
                None => break,
                Some(Err(e)) => {
                    failure = Some(format!("consume: {e}"));
                    break;
                }
                Some(Ok(message)) => message,
            };
            if !in_transaction {
                self.clients.producer.begin_transaction().map_err(|e| self.clients.classify(e))?;
                in_transaction = true;
            }
            inputs += 1;
            positions.track(&message);
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
        if failure.is_none() && self.clients.consumer.context().take_revoked() {
            failure = Some("a partition was revoked during the transaction".to_string());
        }
        if failure.is_none() {
            let committed = self
                .clients
                .send_offsets(positions.next_offsets())
                .and_then(|()| self.clients.producer.commit_transaction(TXN_CALL_TIMEOUT));
            match committed.map_err(|e| self.clients.classify(e)) {
                Ok(()) => return Ok(BatchOutcome::Committed { inputs, outputs }),
                Err(fenced @ crate::ClientError::Fenced(_)) => return Err(fenced),
                Err(e) => failure = Some(format!("commit: {e}")),
            }
        }
        let reason = failure.unwrap_or_default();
        tracing::warn!(%reason, inputs, "aborting transaction and rewinding");
        self.clients.producer.abort_transaction(TXN_CALL_TIMEOUT).map_err(|e| self.clients.classify(e))?;
        self.clients.rewind(&positions)?;
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
            match self.clients.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}
