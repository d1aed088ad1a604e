//! The idempotent consumer: at-least-once delivery from the broker, but each
//! message id is processed once. Processed ids live in a [`ProcessedStore`]
//! with a TTL:
//! - [`SqliteStore`] (the default): a SQLite table. When the business data
//!   lives in the same database, the handler's writes and the id's mark
//!   commit in one database transaction, so a crash can never leave one
//!   without the other: exactly-once effects.
//! - `RedisStore` (feature `redis`): keys with Redis's own expiry. The
//!   handler runs, then the id is marked; a crash in between re-runs the
//!   handler on redelivery (see its documentation).

use std::fmt::Display;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::semantics::{Preset, Semantics};
use crate::{ClientError, Result};

/// How long a processed id is remembered: 7 days, longer than any redelivery
/// the broker can cause (retention, group offsets retention).
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a message's id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// A header (the producer's own id, e.g. `message-id`); messages without
    /// it fall back to the key, then to topic/partition/offset.
    Header(String),
    /// The record key; keyless messages fall back to topic/partition/offset.
    Key,
    /// topic/partition/offset: filters redeliveries of the same record only,
    /// not a producer's retried sends.
    Coordinates,
}

impl Default for IdSource {
    fn default() -> IdSource {
        IdSource::Header("message-id".to_string())
    }
}

impl IdSource {
    pub fn id_of(&self, message: &BorrowedMessage<'_>) -> String {
        let coordinates = || format!("{}/{}/{}", message.topic(), message.partition(), message.offset());
        let key = || message.key().map(|k| String::from_utf8_lossy(k).into_owned());
        match self {
            IdSource::Header(name) => message
                .headers()
                .and_then(|headers| headers.iter().find(|h| h.key == name).and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .or_else(key)
                .unwrap_or_else(coordinates),
            IdSource::Key => key().unwrap_or_else(coordinates),
            IdSource::Coordinates => coordinates(),
        }
    }
}

/// What happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    Processed(T),
    /// Its id was processed before (within the TTL); the handler did not run.
    Duplicate,
}

/// Where an [`IdempotentConsumer`] remembers processed message ids, each
/// for the store's TTL.
pub trait ProcessedStore {
    /// What the handler is given while it processes a message: the open
    /// database transaction for [`SqliteStore`] (its writes commit with the
    /// mark), `()` for stores outside the application's database.
    type Tx<'a>
    where
        Self: 'a;

    /// Whether `id` was processed within the TTL.
    fn is_processed(&mut self, id: &str) -> Result<bool>;
    /// Runs `handler` unless `id` was processed within the TTL, then marks
    /// `id`. A handler error leaves `id` unmarked and is returned as
    /// [`ClientError::Handler`]. How a crash between the two is resolved is
    /// the store's guarantee (see each store).
    fn process_once<T, E: Display>(
        &mut self,
        id: &str,
        handler: impl FnOnce(&Self::Tx<'_>) -> std::result::Result<T, E>,
    ) -> Result<Outcome<T>>;
    /// Marks `id` processed now (for the TTL).
    fn mark(&mut self, id: &str) -> Result<()>;
    /// Deletes marks older than the TTL, for stores that do not expire
    /// them themselves; returns how many.
    fn purge_expired(&mut self) -> Result<usize>;
    fn ttl(&self) -> Duration;
}

/// The processed-id store: a table `ferry_processed_ids` in a SQLite
/// database, which may also hold the application's own tables.
pub struct SqliteStore {
    connection: Connection,
    ttl: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Opens (or creates) a SQLite database for records that must survive a
/// power cut once committed: WAL with `synchronous=FULL`, and a busy timeout
/// so a second process sharing it waits instead of failing.
pub(crate) fn open_durable_sqlite(path: &Path) -> Result<Connection> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.busy_timeout(Duration::from_secs(10))?;
    Ok(connection)
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, in WAL mode with
    /// `synchronous=FULL` so a committed mark survives a power cut.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let connection = open_durable_sqlite(path.as_ref())?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS ferry_processed_ids (
                 id TEXT PRIMARY KEY,
                 processed_at_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS ferry_processed_ids_age ON ferry_processed_ids (processed_at_ms);",
        )?;
        Ok(SqliteStore { connection, ttl: DEFAULT_TTL })
    }

    pub fn with_ttl(mut self, ttl: Duration) -> SqliteStore {
        self.ttl = ttl;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The database, for the application's own schema and queries.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    fn cutoff_ms(&self) -> i64 {
        now_ms() - self.ttl.as_millis() as i64
    }

    /// Whether `id` was processed within the TTL.
    pub fn is_processed(&self, id: &str) -> Result<bool> {
        let found: Option<i64> = self
            .connection
            .query_row(
                "SELECT processed_at_ms FROM ferry_processed_ids WHERE id = ?1 AND processed_at_ms >= ?2",
                params![id, self.cutoff_ms()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Runs `handler` unless `id` was processed within the TTL; the
    /// handler's writes (through the transaction it is given) and the mark
    /// commit together. A handler error rolls both back.
    pub fn process_once<T, E: Display>(
        &mut self,
        id: &str,
        handler: impl FnOnce(&Transaction<'_>) -> std::result::Result<T, E>,
    ) -> Result<Outcome<T>> {
        let cutoff_ms = self.cutoff_ms();
        // IMMEDIATE takes the write lock first, so two processes sharing the
        // store cannot both find the id absent and both run the handler.
        let tx = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seen: Option<i64> = tx
            .query_row(
                "SELECT processed_at_ms FROM ferry_processed_ids WHERE id = ?1 AND processed_at_ms >= ?2",
                params![id, cutoff_ms],
                |row| row.get(0),
            )
            .optional()?;
        if seen.is_some() {
            return Ok(Outcome::Duplicate);
        }
        let value = handler(&tx).map_err(|e| ClientError::Handler(e.to_string()))?;
        tx.execute(
            "INSERT OR REPLACE INTO ferry_processed_ids (id, processed_at_ms) VALUES (?1, ?2)",
            params![id, now_ms()],
        )?;
        tx.commit()?;
        Ok(Outcome::Processed(value))
    }

    /// Deletes ids older than the TTL; returns how many.
    pub fn purge_expired(&self) -> Result<usize> {
        Ok(self
            .connection
            .execute("DELETE FROM ferry_processed_ids WHERE processed_at_ms < ?1", params![self.cutoff_ms()])?)
    }

    pub fn len(&self) -> Result<u64> {
        let count: i64 = self.connection.query_row("SELECT COUNT(*) FROM ferry_processed_ids", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Marks `id` processed now, outside any handler.
    pub fn mark(&self, id: &str) -> Result<()> {
        self.connection.execute(
            "INSERT OR REPLACE INTO ferry_processed_ids (id, processed_at_ms) VALUES (?1, ?2)",
            params![id, now_ms()],
        )?;
        Ok(())
    }
}

/// The handler gets the open SQLite transaction; its writes and the mark
/// commit together.
impl ProcessedStore for SqliteStore {
    type Tx<'a> = Transaction<'a>;

    fn is_processed(&mut self, id: &str) -> Result<bool> {
        SqliteStore::is_processed(self, id)
    }

    fn process_once<T, E: Display>(
        &mut self,
        id: &str,
        handler: impl FnOnce(&Transaction<'_>) -> std::result::Result<T, E>,
    ) -> Result<Outcome<T>> {
        SqliteStore::process_once(self, id, handler)
    }

    fn mark(&mut self, id: &str) -> Result<()> {
        SqliteStore::mark(self, id)
    }

    fn purge_expired(&mut self) -> Result<usize> {
        SqliteStore::purge_expired(self)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// An at-least-once consumer that processes each message id once, with its
/// processed ids in `S` ([`SqliteStore`] unless said otherwise).
pub struct IdempotentConsumer<S: ProcessedStore = SqliteStore> {
    consumer: BaseConsumer,
    store: S,
    id_source: IdSource,
    /// Offsets are committed after processing, every this many messages
    /// (and on [`IdempotentConsumer::commit`]); the store filters what a
    /// crash in between redelivers.
    commit_every: u64,
    uncommitted: u64,
    purge_interval: Duration,
    last_purge: Instant,
}

impl<S: ProcessedStore> IdempotentConsumer<S> {
    /// Subscribes a consumer of group `group_id` to `topics`, configured as
    /// at-least-once (commit after processing). `preset` supplies the
    /// bootstrap address and overrides; its semantics must be at-least-once.
    pub fn new(preset: &Preset, group_id: &str, topics: &[&str], store: S) -> Result<IdempotentConsumer<S>> {
        if preset.semantics() != Semantics::AtLeastOnce {
            return Err(ClientError::Config(format!(
                "IdempotentConsumer completes at-least-once delivery; the preset is {}",
                preset.semantics()
            )));
        }
        let consumer: BaseConsumer = preset.consumer_config(group_id).create()?;
        consumer.subscribe(topics)?;
        Ok(IdempotentConsumer {
            consumer,
            store,
            id_source: IdSource::default(),
            commit_every: 100,
            uncommitted: 0,
            purge_interval: Duration::from_secs(600),
            last_purge: Instant::now(),
        })
    }

    pub fn id_source(mut self, id_source: IdSource) -> IdempotentConsumer<S> {
        self.id_source = id_source;
        self
    }

    pub fn commit_every(mut self, messages: u64) -> IdempotentConsumer<S> {
        self.commit_every = messages.max(1);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    pub fn consumer(&self) -> &BaseConsumer {
        &self.consumer
    }

    /// Waits up to `timeout` for one message and processes it once.
    /// `Ok(None)`: nothing arrived. A handler error rewinds the partition to
    /// the message, so the next poll returns it again.
    pub fn poll_process<T, E: Display>(
        &mut self,
        timeout: Duration,
        handler: impl FnOnce(&BorrowedMessage<'_>, &S::Tx<'_>) -> std::result::Result<T, E>,
    ) -> Result<Option<Outcome<T>>> {
        if self.last_purge.elapsed() >= self.purge_interval {
            self.store.purge_expired()?;
            self.last_purge = Instant::now();
        }
        let message = match self.consumer.poll(timeout) {
            None => {
                self.commit()?;
                return Ok(None);
            }
            Some(message) => message?,
        };
        let id = self.id_source.id_of(&message);
        match self.store.process_once(&id, |tx| handler(&message, tx)) {
            Ok(outcome) => {
                self.consumer.store_offset_from_message(&message)?;
                self.uncommitted += 1;
                if self.uncommitted >= self.commit_every {
                    self.commit()?;
                }
                Ok(Some(outcome))
            }
            Err(error) => {
                self.consumer.seek(
                    message.topic(),
                    message.partition(),
                    Offset::Offset(message.offset()),
                    Duration::from_secs(10),
                )?;
                Err(error)
            }
        }
    }

    /// Commits the offsets of every message processed so far.
    pub fn commit(&mut self) -> Result<()> {
        if self.uncommitted == 0 {
            return Ok(());
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit (e.g. after a rebalance).
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            other => other?,
        }
        self.uncommitted = 0;
        Ok(())
    }

    /// Commits and leaves the group.
    pub fn close(mut self) -> Result<()> {
        self.commit()?;
        self.consumer.unsubscribe();
        Ok(())
    }

    /// The committed offsets of this consumer's assignment.
    pub fn committed(&self, timeout: Duration) -> Result<TopicPartitionList> {
        Ok(self.consumer.committed(timeout)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_processes_once_and_forgets_after_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path().join("ids.db")).unwrap();
        store.connection().execute_batch("CREATE TABLE effects (id TEXT)").unwrap();
        let apply = |tx: &Transaction<'_>| tx.execute("INSERT INTO effects VALUES ('a')", []).map(|_| ());
        assert_eq!(store.process_once("a", apply).unwrap(), Outcome::Processed(()));
        assert_eq!(store.process_once("a", apply).unwrap(), Outcome::Duplicate);
        let effects: i64 = store.connection().query_row("SELECT COUNT(*) FROM effects", [], |r| r.get(0)).unwrap();
        assert_eq!(effects, 1);

        // A failing handler leaves neither its writes nor the mark.
        let failing = |tx: &Transaction<'_>| -> std::result::Result<(), String> {
            tx.execute("INSERT INTO effects VALUES ('b')", []).map_err(|e| e.to_string())?;
            Err("refused".to_string())
        };
        assert!(matches!(store.process_once("b", failing), Err(ClientError::Handler(_))));
        assert!(!store.is_processed("b").unwrap());
        let effects: i64 = store.connection().query_row("SELECT COUNT(*) FROM effects", [], |r| r.get(0)).unwrap();
        assert_eq!(effects, 1);

        // Reopened with a zero TTL, "a" has expired: processed again, then purged.
        drop(store);
        let mut store = SqliteStore::open(dir.path().join("ids.db")).unwrap().with_ttl(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!store.is_processed("a").unwrap());
        assert_eq!(store.purge_expired().unwrap(), 1);
        assert_eq!(store.process_once("a", apply).unwrap(), Outcome::Processed(()));
    }
}
