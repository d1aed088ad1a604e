//! What the transactional processor and the two-phase-commit coordinator
//! share: a read_committed consumer and a transactional producer registered
//! under one transactional.id, the batch's consumed positions, the rewind
//! after an abort, and the sorting of transactional errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::semantics::{Preset, Semantics};
use crate::{ClientError, Result};

/// Bound on how long a transactional call (init, send offsets, commit,
/// abort) may wait.
pub(crate) const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

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
fn is_fatal(error: &KafkaError) -> bool {
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


/// Per partition of one batch: the first offset consumed (where a rewind
/// goes) and the next offset to consume (what a commit records).
#[derive(Debug, Default)]
pub(crate) struct Positions(BTreeMap<(String, i32), (i64, i64)>);

impl Positions {
    pub fn track(&mut self, message: &BorrowedMessage<'_>) {
        self.0
            .entry((message.topic().to_string(), message.partition()))
            .and_modify(|p| p.1 = message.offset() + 1)
            .or_insert((message.offset(), message.offset() + 1));
    }

    /// (topic, partition, next offset) of every partition of the batch.
    pub fn next_offsets(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.0.iter().map(|((topic, partition), (_, next))| (topic.as_str(), *partition, *next))
    }
}

/// The consumer and the transactional producer of one instance.
pub(crate) struct TxnPair {
    pub consumer: BaseConsumer<RebalanceWatch>,
    pub producer: ThreadedProducer<DefaultProducerContext>,
    pub transactional_id: String,
}

impl TxnPair {
    /// Creates both clients from an exactly-once `preset` with a
    /// transactional.id. InitProducerId fences any older instance with the
    /// same id and aborts what it left open. `who` names the caller in errors.
    pub fn open(preset: &Preset, group_id: &str, who: &str) -> Result<TxnPair> {
        if preset.semantics() != Semantics::ExactlyOnce {
            return Err(ClientError::Config(format!("{who} needs the exactly-once preset")));
        }
        let producer_config = preset.producer_config();
        let transactional_id = producer_config
            .get("transactional.id")
            .ok_or_else(|| ClientError::Config("the exactly-once preset needs a transactional.id".into()))?
            .to_string();
        let producer: ThreadedProducer<DefaultProducerContext> = producer_config.create()?;
        producer.init_transactions(TXN_CALL_TIMEOUT)?;
        let consumer = preset.consumer_config(group_id).create_with_context(RebalanceWatch::default())?;
        Ok(TxnPair { consumer, producer, transactional_id })
    }

    pub fn subscribe(&self, topics: &[String]) -> Result<()> {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        Ok(self.consumer.subscribe(&topics)?)
    }

    /// Adds the batch's next offsets to the open transaction (AddOffsetsToTxn
    /// + TxnOffsetCommit, with the group's generation and member id).
    pub fn send_offsets(&self, offsets: impl Iterator<Item = (impl AsRef<str>, i32, i64)>) -> std::result::Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in offsets {
            list.add_partition_offset(topic.as_ref(), partition, Offset::Offset(next))?;
        }
        let metadata = self.consumer.group_metadata().ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
        self.producer.send_offsets_to_transaction(&list, &metadata, TXN_CALL_TIMEOUT)
    }

    /// Puts every partition of an aborted batch back to its first input. A
    /// revoked partition restarts from its committed offset at its new owner.
    pub fn rewind(&self, positions: &Positions) -> Result<()> {
        let assigned = self.consumer.assignment()?;
        for ((topic, partition), (first, _)) in &positions.0 {
            if assigned.find_partition(topic, *partition).is_some() {
                self.consumer.seek(topic, *partition, Offset::Offset(*first), Duration::from_secs(10))?;
            }
        }
        Ok(())
    }

    /// A fenced (fatal) error means this instance must stop.
    pub fn classify(&self, error: KafkaError) -> ClientError {
        if is_fatal(&error) {
            ClientError::Fenced(self.transactional_id.clone())
        } else {
            ClientError::Kafka(error)
        }
    }
}
