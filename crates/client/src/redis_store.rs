//! A processed-id store on Redis (feature `redis`), for an
//! [`IdempotentConsumer`](crate::IdempotentConsumer) whose effects live
//! outside a SQL database, or whose instances share one store.
//!
//! Each processed id is a key `<prefix><id>` set with `SET … NX PX <ttl>`:
//! the TTL is Redis's own expiry, so there is nothing to purge.
//!
//! The guarantee, honestly: Redis and the handler's effect cannot commit
//! together, so one of them comes first. This store runs the handler, then
//! marks the id. A crash (or a lost connection) between the two leaves the
//! effect without the mark, and the redelivered message runs the handler
//! again: effects are at-least-once in that window, never lost. Marking
//! first (SETNX before processing) would turn that window into a loss —
//! the mark without the effect — which is the worse failure for most
//! handlers. Make effects idempotent themselves where a repeat matters, or
//! keep them in SQLite with [`SqliteStore`](crate::SqliteStore), whose
//! mark commits with them.
//!
//! Two more ways an id can run twice: two consumers given the same id at
//! the same moment (e.g. duplicates on different partitions) both find it
//! unmarked; and a mark lost by Redis itself — one not yet persisted when
//! Redis restarted (see `appendonly`/`appendfsync`), or evicted under
//! memory pressure (use `maxmemory-policy noeviction` or `volatile-*` with
//! room to spare). None of them loses a message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Client, Connection, RedisError, RedisResult};

use crate::idempotent::{Outcome, ProcessedStore, DEFAULT_TTL};
use crate::{ClientError, Result};

/// The key prefix used unless [`RedisStore::with_key_prefix`] sets another.
pub const DEFAULT_KEY_PREFIX: &str = "ferry:processed:";

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn redis_error(error: RedisError) -> ClientError {
    ClientError::Redis(error)
}

/// The processed-id store on Redis.
pub struct RedisStore {
    client: Client,
    connection: Connection,
    key_prefix: String,
    ttl: Duration,
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`) and
    /// checks the server answers.
    pub fn open(url: &str) -> Result<RedisStore> {
        let client = Client::open(url).map_err(redis_error)?;
        let connection = Self::connect(&client)?;
        let mut store = RedisStore { client, connection, key_prefix: DEFAULT_KEY_PREFIX.to_string(), ttl: DEFAULT_TTL };
        store.run(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(store)
    }

    fn connect(client: &Client) -> Result<Connection> {
        let connection = client.get_connection_with_timeout(IO_TIMEOUT).map_err(redis_error)?;
        connection.set_read_timeout(Some(IO_TIMEOUT)).map_err(redis_error)?;
        connection.set_write_timeout(Some(IO_TIMEOUT)).map_err(redis_error)?;
        Ok(connection)
    }

    /// How long an id stays marked (Redis expires it then). At least 1 ms.
    pub fn with_ttl(mut self, ttl: Duration) -> RedisStore {
        self.ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The prefix of the keys (one per application sharing the Redis database).
    pub fn with_key_prefix(mut self, prefix: &str) -> RedisStore {
        self.key_prefix = prefix.to_string();
        self
    }

    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.key_prefix)
    }

    /// The connection, for the application's own commands.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// Runs an idempotent command, reconnecting and retrying once when the
    /// connection was lost.
    fn run<T>(&mut self, command: impl Fn(&mut Connection) -> RedisResult<T>) -> Result<T> {
        match command(&mut self.connection) {
            Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                tracing::info!(%error, "Redis connection lost; reconnecting");
                self.connection = Self::connect(&self.client)?;
                command(&mut self.connection).map_err(redis_error)
            }
            other => other.map_err(redis_error),
        }
    }
}

impl ProcessedStore for RedisStore {
    /// Nothing: the handler's effects are outside Redis.
    type Tx<'a> = ();

    fn is_processed(&mut self, id: &str) -> Result<bool> {
        let key = self.key(id);
        self.run(|c| redis::cmd("EXISTS").arg(&key).query::<i64>(c)).map(|n| n > 0)
    }

    /// Checks the mark, runs the handler, then marks (see the module
    /// documentation for what a crash in between does).
    fn process_once<T, E: std::fmt::Display>(
        &mut self,
        id: &str,
        handler: impl FnOnce(&()) -> std::result::Result<T, E>,
    ) -> Result<Outcome<T>> {
        if self.is_processed(id)? {
            return Ok(Outcome::Duplicate);
        }
        let value = handler(&()).map_err(|e| ClientError::Handler(e.to_string()))?;
        self.mark(id)?;
        Ok(Outcome::Processed(value))
    }

    /// `SET <prefix><id> <now ms> NX PX <ttl ms>`: an existing mark keeps its expiry.
    fn mark(&mut self, id: &str) -> Result<()> {
        let key = self.key(id);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let ttl_ms = self.ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        // Nil when the id was already marked (a concurrent consumer): fine.
        self.run(|c| {
            redis::cmd("SET").arg(&key).arg(now_ms).arg("NX").arg("PX").arg(ttl_ms).query::<Option<String>>(c)
        })?;
        Ok(())
    }

    /// Redis expires marks itself: nothing to do.
    fn purge_expired(&mut self) -> Result<usize> {
        Ok(0)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}
