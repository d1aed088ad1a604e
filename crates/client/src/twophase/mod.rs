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

use std::fmt::Display;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::Producer;
use rdkafka::{Message, Offset, TopicPartitionList};

pub use decision_log::{DecisionLog, PartitionOffset, Pending, Record};
pub use participant::{Participant, SqlSession};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresBatch, PostgresParticipant, DEFAULT_GID_PREFIX};
pub use sqlite::{SqlStatement, SqlValue, SqliteBatch, SqliteParticipant};

use crate::failpoint::Failpoint;
use crate::semantics::Preset;
use crate::txn_pair::{Positions, TxnPair, TXN_CALL_TIMEOUT};
use crate::{BatchOutcome, ClientError, Result};
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

/// The coordinator: one consumer, one transactional producer, one database
/// participant `P` and the decision log.
pub struct TwoPhaseCommit<P: Participant = SqliteParticipant> {
    config: TwoPhaseConfig,
    log: DecisionLog,
    db: P,
    clients: TxnPair,
    failpoint: Failpoint,
    recovery: RecoveryReport,
}

impl<P: Participant> TwoPhaseCommit<P> {
    /// Opens the decision log, fences any older instance, resolves every
    /// in-doubt transaction with `db`, then subscribes.
    pub fn open(config: TwoPhaseConfig, db: P) -> Result<TwoPhaseCommit<P>> {
        let (log, pending) = DecisionLog::open(&config.decision_log)?;
        // InitProducerId aborts the dead instance's open broker transaction, if any.
        let clients = TxnPair::open(&config.preset, &config.group_id, "TwoPhaseCommit")?;
        let mut coordinator = TwoPhaseCommit {
            config,
            log,
            db,
            clients,
            failpoint: Failpoint::from_env(),
            recovery: RecoveryReport::default(),
        };
        coordinator.recover(pending)?;
        coordinator.clients.subscribe(&coordinator.config.input_topics)?;
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
        let committed = self.clients.consumer.committed_offsets(wanted, TXN_CALL_TIMEOUT)?;
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
        self.clients.producer.begin_transaction()?;
        self.clients.send_offsets(offsets.iter().map(|o| (o.topic.as_str(), o.partition, o.offset)))
    }

    fn broker_commit_again(&self, offsets: &[PartitionOffset]) -> Result<()> {
        self.broker_prepare(offsets).map_err(|e| self.clients.classify(e))?;
        self.clients.producer.commit_transaction(TXN_CALL_TIMEOUT).map_err(|e| self.clients.classify(e))
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
        let mut positions = Positions::default();
        let mut statements: Vec<SqlStatement> = Vec::new();
        let mut inputs = 0usize;
        self.clients.consumer.context().take_revoked();

        let mut batch = self.db.begin()?;
        let mut failure: Option<ClientError> = None;
        while inputs < self.config.max_batch {
            let remaining = self.config.commit_interval.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            let message = match self.clients.consumer.poll(remaining) {
                None => break,
                Some(Err(e)) => {
                    failure = Some(e.into());
                    break;
                }
                Some(Ok(message)) => message,
            };
            inputs += 1;
            positions.track(&message);
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
        if failure.is_none() && self.clients.consumer.context().take_revoked() {
            drop(batch);
            self.clients.rewind(&positions)?;
            return Ok(BatchOutcome::Aborted { inputs, reason: "a partition was revoked during the batch".into() });
        }
        if let Some(error) = failure {
            drop(batch);
            self.clients.rewind(&positions)?;
            return Err(error);
        }

        let xid = self.log.allocate_xid();
        let offsets: Vec<PartitionOffset> = positions
            .next_offsets()
            .map(|(topic, partition, offset)| PartitionOffset { topic: topic.to_string(), partition, offset })
            .collect();
        self.log.append(&Record::Begin { xid, offsets: offsets.clone() })?;
        self.failpoint.pass("before-prepare");
        P::prepare(batch, xid, &statements)?;
        self.failpoint.pass("between-prepares");

        if let Err(error) = self.broker_prepare(&offsets) {
            let error = self.clients.classify(error);
            self.log.append(&Record::Abort { xid })?;
            self.db.abort(xid)?;
            if matches!(error, ClientError::Fenced(_)) {
                return Err(error);
            }
            self.clients.producer.abort_transaction(TXN_CALL_TIMEOUT).map_err(|e| self.clients.classify(e))?;
            self.log.append(&Record::Done { xid })?;
            self.clients.rewind(&positions)?;
            return Ok(BatchOutcome::Aborted { inputs, reason: format!("broker prepare: {error}") });
        }
        self.failpoint.pass("after-prepares");

        self.log.append(&Record::Commit { xid })?;
        self.failpoint.pass("after-decision");

        if let Err(error) = self.clients.producer.commit_transaction(TXN_CALL_TIMEOUT) {
            let error = self.clients.classify(error);
            if matches!(error, ClientError::Fenced(_)) {
                // Decided commit: the next instance's recovery redoes it.
                return Err(error);
            }
            // E.g. the broker aborted it on transaction.timeout.ms: the
            // decision stands, so commit the offsets again.
            tracing::warn!(xid, %error, "broker commit failed; committing the offsets again");
            if let Err(abort_error) = self.clients.producer.abort_transaction(TXN_CALL_TIMEOUT) {
                // Nothing is open to abort when the broker already aborted it.
                tracing::warn!(xid, %abort_error, "abort before committing the offsets again failed");
            }
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
}
