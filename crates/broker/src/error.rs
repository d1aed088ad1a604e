use ferry_log::LogError;
use thiserror::Error;

/// Everything the engine can refuse. The Kafka front end maps each variant
/// to one Kafka error code (see `ferry_kafka::codes`).
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("invalid config {name}={value}: {reason}")]
    InvalidConfig { name: String, value: String, reason: String },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor {0}: this is a single-node broker, use 1 or -1")]
    InvalidReplicationFactor(i16),
    #[error("corrupt message: {0}")]
    CorruptMessage(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    #[error("batch of {size} bytes is larger than max.message.bytes={max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("offset out of range: {0}")]
    OffsetOutOfRange(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("request timed out waiting for durability")]
    Timeout,
    #[error("limit reached: {0}")]
    LimitReached(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// Something a replicated partition does not do yet.
    #[error("not supported on a replicated partition: {0}")]
    ReplicatedUnsupported(String),
}

impl From<LogError> for EngineError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::OffsetOutOfRange { .. } => EngineError::OffsetOutOfRange(e.to_string()),
            LogError::Batch(b) => EngineError::CorruptMessage(b.to_string()),
            other => EngineError::Storage(other.to_string()),
        }
    }
}

pub type EngineResult<T> = Result<T, EngineError>;
