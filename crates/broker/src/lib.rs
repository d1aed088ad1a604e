//! Ferry's engine: topics, partitions, durability. It never sees Kafka
//! bytes beyond the record-batch header.

mod engine;
mod error;
pub mod group;
mod partition;
mod topic_config;

pub use engine::{now_ms, Engine, EngineConfig, Topic};
pub use error::{EngineError, EngineResult};
pub use partition::{Partition, PartitionLog, PartitionOffsets};
pub use topic_config::{validate_topic_name, ConfigSpec, StorageKind, TopicConfig, TOPIC_CONFIGS};
