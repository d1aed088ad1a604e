//! Ferry's engine: topics, partitions, durability. It never sees Kafka
//! bytes beyond the record-batch header.

mod cleaner;
mod engine;
mod error;
pub mod group;
mod partition;
pub mod producer_ids;
pub mod producer_state;
pub mod txn;
mod topic_config;

pub use cleaner::{Cleaner, CleanerConfig};
pub use engine::{now_ms, Engine, EngineConfig, Topic};
pub use error::{EngineError, EngineResult};
pub use partition::{Appended, Partition, PartitionLog, PartitionOffsets, ReplicaPrepared};
pub use topic_config::{default_of, validate_topic_name, ConfigSpec, StorageKind, TopicConfig, LIST_CONFIGS, TOPIC_CONFIGS};
