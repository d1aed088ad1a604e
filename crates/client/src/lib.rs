//! Ferry's Rust SDK, built on `rdkafka` (librdkafka).
//!
//! Each delivery semantics is one choice:
//!
//! ```no_run
//! use ferry_client::{Preset, Semantics};
//! let preset = Preset::new(Semantics::AtLeastOnce, "127.0.0.1:9092");
//! let producer_config = preset.producer_config();          // acks=all, retries
//! let consumer_config = preset.consumer_config("orders");  // commit after processing
//! ```
//!
//! and [`UseCase`] says which one fits a job. Beyond the presets:
//! - [`IdempotentConsumer`]: at-least-once delivery, but each message id is
//!   processed once, remembered in a SQLite processed-id store with a TTL;
//!   when the business data lives in the same database, processing and
//!   marking commit in one database transaction.
//! - [`TransactionalProcessor`]: consume-transform-produce with the input
//!   offsets committed inside the output transaction.
//! - [`TwoPhaseCommit`]: a consumed message's effect in a SQL database and
//!   its offset commit in the broker happen together or not at all, through
//!   a coordinator with a durable decision log and crash recovery.

mod error;
pub mod failpoint;
mod idempotent;
mod processor;
#[cfg(feature = "redis")]
mod redis_store;
mod selector;
mod txn_pair;
mod semantics;
pub mod twophase;

pub use error::ClientError;
pub use idempotent::{IdSource, IdempotentConsumer, Outcome, ProcessedStore, SqliteStore, DEFAULT_TTL};
#[cfg(feature = "redis")]
pub use redis_store::{RedisStore, DEFAULT_KEY_PREFIX};
pub use processor::{BatchOutcome, Output, ProcessorConfig, TransactionalProcessor};
pub use txn_pair::RebalanceWatch;
pub use selector::UseCase;
pub use semantics::{CommitTiming, Preset, Semantics};
#[cfg(feature = "postgres")]
pub use twophase::PostgresParticipant;
pub use twophase::{Participant, SqlSession, SqlStatement, SqlValue, SqliteParticipant, TwoPhaseCommit, TwoPhaseConfig};

/// Result type of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
