use std::path::PathBuf;

use rdkafka::error::KafkaError;

/// Errors of the SDK. Kafka errors keep librdkafka's classification
/// (retriable, abortable, fatal) reachable through [`ClientError::Kafka`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[cfg(feature = "postgres")]
    #[error("postgresql: {0}")]
    Postgres(#[from] postgres::Error),
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("decision log {path} is corrupt at byte {position}: {reason}")]
    CorruptDecisionLog { path: PathBuf, position: u64, reason: String },
    /// Another instance with the same transactional.id took over; this one
    /// must stop (its open transaction was aborted by the broker).
    #[error("fenced: another instance with transactional.id {0} is running")]
    Fenced(String),
    /// The handler refused a message; the transaction was aborted and the
    /// consumer rewound, so the message will be seen again.
    #[error("handler failed: {0}")]
    Handler(String),
    /// A decision was made but a participant cannot apply it; an operator
    /// must look (the decision log and the prepared rows say what is pending).
    #[error("heuristic hazard in transaction {xid}: {reason}")]
    Heuristic { xid: u64, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}
