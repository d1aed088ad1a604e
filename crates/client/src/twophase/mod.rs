//! Two-phase commit between a SQL database and the broker: a batch of
//! consumed messages changes the database and commits its input offsets in
//! a broker transaction, both or neither.
//!
//! One batch, with its crash points (`FERRY_2PC_FAILPOINT`):
//! 1. The handler turns each message into SQL statements, tried inside an
//!    open database transaction (so later messages see earlier effects).
//! 2. `Begin{xid, offsets}` is appended to the decision log (fsync).
//!    — `before-prepare`
//! 3. Database prepare: the trial is rolled back and the statements are
//!    stored as prepared, in one commit. — `between-prepares`
//! 4. Broker prepare: a transaction is begun and the offsets are sent to it
//!    (AddOffsetsToTxn + TxnOffsetCommit; pending until committed).
//!    — `after-prepares`
//! 5. `Commit{xid}` is appended (fsync): the decision. — `after-decision`
//! 6. The broker transaction commits. — `between-commits`
//! 7. The database runs the prepared statements. — `after-commits`
//! 8. `Done{xid}` is appended.
//!
//! Recovery (at [`TwoPhaseCommit::open`]): the new producer's
//! InitProducerId aborts whatever broker transaction the dead instance left
//! open. Then every unfinished xid of the log is resolved: decided commit →
//! the database commit is repeated (idempotent) and, when the group's
//! committed offsets are behind the decision's, the offsets are committed
//! again in a new broker transaction; no decision → abort (presumed abort).
//! Prepared database rows that the log does not name are aborted too.

mod decision_log;
mod participant;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

pub use decision_log::{DecisionLog, PartitionOffset, Pending, Record};
pub use participant::{Participant, SqlSession};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresBatch, PostgresParticipant, DEFAULT_GID_PREFIX};
pub use sqlite::{SqlStatement, SqlValue, SqliteBatch, SqliteParticipant};

use crate::failpoint::Failpoint;
use crate::processor::{is_fatal, RebalanceWatch};
use crate::semantics::{Preset, Semantics};
use crate::{BatchOutcome, ClientError, Result};

const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The decision log is rewritten to a checkpoint once it holds this many records.
const DECISION_LOG_REWRITE_RECORDS: u64 = 10_000;

/// Settings of a [`TwoPhaseCommit`].
#[derive(Debug, Clone)]
pub struct TwoPhaseConfig {
    /// Exactly-once, with the transactional.id that is this instance's
    /// identity (a restart with the same id fences the old one).
    pub preset: Preset,
    pub group_id: String,
    pub input_topics: Vec<String>,
    pub decision_log: PathBuf,
    pub commit_interval: Duration,
    pub max_batch: usize,
}

impl TwoPhaseConfig {
    pub fn new(preset: Preset, group_id: &str, input_topics: &[&str], decision_log: PathBuf) -> Self {
        TwoPhaseConfig {
            preset,
            group_id: group_id.to_string(),
            input_topics: input_topics.iter().map(|t| t.to_string()).collect(),
            decision_log,
            commit_interval: Duration::from_millis(100),
            max_batch: 1000,
        }
    }
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub committed: Vec<u64>,
    pub aborted: Vec<u64>,
    /// Of `committed`: the broker commit had not happened and was redone.
    pub broker_redone: Vec<u64>,
}

type Positions = BTreeMap<(String, i32), (i64, i64)>;

/// The coordinator: one consumer, one transactional producer, one database
/// participant `P` and the decision log.
pub struct TwoPhaseCommit<P: Participant = SqliteParticipant> {
    config: TwoPhaseConfig,
    log: DecisionLog,
    db: P,
    consumer: BaseConsumer<RebalanceWatch>,
    producer: ThreadedProducer<DefaultProducerContext>,
    transactional_id: String,
    failpoint: Failpoint,
    recovery: RecoveryReport,
}

impl<P: Participant> TwoPhaseCommit<P> {
    /// Opens the decision log, fences any older instance, resolves every
    /// in-doubt transaction with `db`, then subscribes.
    pub fn open(config: TwoPhaseConfig, db: P) -> Result<TwoPhaseCommit<P>> {
        if config.preset.semantics() != Semantics::ExactlyOnce {
            return Err(ClientError::Config("TwoPhaseCommit needs the exactly-once preset".into()));
        }
        let producer_config = config.preset.producer_config();
        let transactional_id = producer_config
            .get("transactional.id")
            .ok_or_else(|| ClientError::Config("the exactly-once preset needs a transactional.id".into()))?
            .to_string();
        let (log, pending) = DecisionLog::open(&config.decision_log)?;
        let producer: ThreadedProducer<DefaultProducerContext> = producer_config.create()?;
        // Aborts the dead instance's open broker transaction, if any.
        producer.init_transactions(TXN_CALL_TIMEOUT)?;
        let consumer: BaseConsumer<RebalanceWatch> =
            config.preset.consumer_config(&config.group_id).create_with_context(RebalanceWatch::default())?;
        let mut coordinator = TwoPhaseCommit {
            config,
            log,
            db,
            consumer,
            producer,
            transactional_id,
            failpoint: Failpoint::from_env(),
            recovery: RecoveryReport::default(),
        };
        coordinator.recover(pending)?;
        let topics: Vec<&str> = coordinator.config.input_topics.iter().map(String::as_str).collect();
        coordinator.consumer.subscribe(&topics)?;
        Ok(coordinator)
    }

    /// What [`TwoPhaseCommit::open`]'s recovery did.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The database participant (e.g. for the application's schema).
    pub fn participant(&self) -> &P {
        &self.db
    }

    fn recover(&mut self, pending: Vec<Pending>) -> Result<()> {
        for entry in pending {
            if entry.decision == Some(true) {
                let applied_now = self.db.commit(entry.xid)?;
                let redone = self.ensure_broker_committed(&entry.offsets)?;
                tracing::info!(xid = entry.xid, applied_now, redone, "recovery: committed");
                if redone {
                    self.recovery.broker_redone.push(entry.xid);
                }
                self.recovery.committed.push(entry.xid);
            } else {
                self.db.abort(entry.xid)?;
                if entry.decision.is_none() {
                    self.log.append(&Record::Abort { xid: entry.xid })?;
                }
                tracing::info!(xid = entry.xid, "recovery: aborted (no commit decision)");
                self.recovery.aborted.push(entry.xid);
            }
            self.log.append(&Record::Done { xid: entry.xid })?;
        }
        // Presumed abort: a prepared row the log never decided.
        for xid in self.db.prepared()? {
            self.db.abort(xid)?;
            self.recovery.aborted.push(xid);
        }
        self.log.rewrite_empty()?;
        let next_xid = self.log.allocate_xid();
        self.db.forget_applied_below(next_xid)?;
        Ok(())
    }

    /// Commits `offsets` in a new broker transaction unless the group's
    /// committed offsets already reach them. Returns whether it committed.
    fn ensure_broker_committed(&self, offsets: &[PartitionOffset]) -> Result<bool> {
        let mut wanted = TopicPartitionList::new();
        for o in offsets {
            wanted.add_partition(&o.topic, o.partition);
        }
        let committed = self.consumer.committed_offsets(wanted, TXN_CALL_TIMEOUT)?;
        let behind = offsets.iter().any(|o| {
            match committed.find_partition(&o.topic, o.partition).map(|e| e.offset()) {
                Some(Offset::Offset(c)) => c < o.offset,
                _ => true,
            }
        });
        if behind {
            self.broker_commit_again(offsets)?;
        }
        Ok(behind)
    }

    fn broker_prepare(&self, offsets: &[PartitionOffset]) -> std::result::Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for o in offsets {
            list.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.offset))?;
        }
        let metadata = self.consumer.group_metadata().ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
        self.producer.begin_transaction()?;
        self.producer.send_offsets_to_transaction(&list, &metadata, TXN_CALL_TIMEOUT)
    }

    fn broker_commit_again(&self, offsets: &[PartitionOffset]) -> Result<()> {
        self.broker_prepare(offsets).map_err(|e| self.classify(e))?;
        self.producer.commit_transaction(TXN_CALL_TIMEOUT).map_err(|e| self.classify(e))
    }

    fn classify(&self, error: KafkaError) -> ClientError {
        if is_fatal(&error) {
            ClientError::Fenced(self.transactional_id.clone())
        } else {
            ClientError::Kafka(error)
        }
    }

    /// One batch through both phases. `handler` turns a message into the
    /// statements of its database effect; it may read the database (the
    /// batch's earlier statements are visible). A handler or statement
    /// error aborts the batch, rewinds the consumer and is returned.
    pub fn process_batch<E: Display>(
        &mut self,
        mut handler: impl FnMut(&BorrowedMessage<'_>, &mut dyn SqlSession) -> std::result::Result<Vec<SqlStatement>, E>,
    ) -> Result<BatchOutcome> {
        let started = Instant::now();
        let mut positions: Positions = BTreeMap::new();
        let mut statements: Vec<SqlStatement> = Vec::new();
        let mut inputs = 0usize;
        self.consumer.context().take_revoked();

        let mut batch = self.db.begin()?;
        let mut failure: Option<ClientError> = None;
        while inputs < self.config.max_batch {
            let remaining = self.config.commit_interval.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            let message = match self.consumer.poll(remaining) {
                None => break,
                Some(Err(e)) => {
                    failure = Some(e.into());
                    break;
                }
                Some(Ok(message)) => message,
            };
            inputs += 1;
            positions
                .entry((message.topic().to_string(), message.partition()))
                .and_modify(|p| p.1 = message.offset() + 1)
                .or_insert((message.offset(), message.offset() + 1));
            let coordinates = format!("{}/{}/{}", message.topic(), message.partition(), message.offset());
            match handler(&message, &mut batch) {
                Ok(effect) => {
                    for statement in effect {
                        if let Err(e) = batch.execute(&statement) {
                            failure = Some(ClientError::Handler(format!("{coordinates}: {}: {e}", statement.sql)));
                            break;
                        }
                        statements.push(statement);
                    }
                }
                Err(e) => failure = Some(ClientError::Handler(format!("{coordinates}: {e}"))),
            }
            if failure.is_some() {
                break;
            }
        }
        if inputs == 0 && failure.is_none() {
            return Ok(BatchOutcome::Idle);
        }
        if failure.is_none() && self.consumer.context().take_revoked() {
            drop(batch);
            self.rewind(&positions)?;
            return Ok(BatchOutcome::Aborted { inputs, reason: "a partition was revoked during the batch".into() });
        }
        if let Some(error) = failure {
            drop(batch);
            self.rewind(&positions)?;
            return Err(error);
        }

        let xid = self.log.allocate_xid();
        let offsets: Vec<PartitionOffset> = positions
            .iter()
            .map(|((topic, partition), (_, next))| PartitionOffset { topic: topic.clone(), partition: *partition, offset: *next })
            .collect();
        self.log.append(&Record::Begin { xid, offsets: offsets.clone() })?;
        self.failpoint.pass("before-prepare");
        P::prepare(batch, xid, &statements)?;
        self.failpoint.pass("between-prepares");

        if let Err(error) = self.broker_prepare(&offsets) {
            let fatal = is_fatal(&error);
            self.log.append(&Record::Abort { xid })?;
            self.db.abort(xid)?;
            if fatal {
                return Err(ClientError::Fenced(self.transactional_id.clone()));
            }
            self.producer.abort_transaction(TXN_CALL_TIMEOUT).map_err(|e| self.classify(e))?;
            self.log.append(&Record::Done { xid })?;
            self.rewind(&positions)?;
            return Ok(BatchOutcome::Aborted { inputs, reason: format!("broker prepare: {error}") });
        }
        self.failpoint.pass("after-prepares");

        self.log.append(&Record::Commit { xid })?;
        self.failpoint.pass("after-decision");

        if let Err(error) = self.producer.commit_transaction(TXN_CALL_TIMEOUT) {
            if is_fatal(&error) {
                // Decided commit: the next instance's recovery redoes it.
                return Err(ClientError::Fenced(self.transactional_id.clone()));
            }
            // E.g. the broker aborted it on transaction.timeout.ms: the
            // decision stands, so commit the offsets again.
            tracing::warn!(xid, %error, "broker commit failed; committing the offsets again");
            let _ = self.producer.abort_transaction(TXN_CALL_TIMEOUT);
            self.broker_commit_again(&offsets)?;
        }
        self.failpoint.pass("between-commits");

        self.db.commit(xid)?;
        self.failpoint.pass("after-commits");
        self.log.append(&Record::Done { xid })?;
        if self.log.records() >= DECISION_LOG_REWRITE_RECORDS {
            self.log.rewrite_empty()?;
            self.db.forget_applied_below(xid + 1)?;
        }
        Ok(BatchOutcome::Committed { inputs, outputs: statements.len() })
    }

    fn rewind(&self, positions: &Positions) -> Result<()> {
        let assigned = self.consumer.assignment()?;
        for ((topic, partition), (first, _)) in positions {
            if assigned.find_partition(topic, *partition).is_some() {
                self.consumer.seek(topic, *partition, Offset::Offset(*first), Duration::from_secs(10))?;
            }
        }
        Ok(())
    }
}
