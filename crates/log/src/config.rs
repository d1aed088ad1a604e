//! Per-log settings, named after Kafka's topic configs.

/// Settings a partition log obeys. Field names follow Kafka's topic
/// configs (`segment.bytes` is `segment_bytes`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty segment older than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete sealed segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest sealed segments past this size; -1 is unbounded.
    /// For `ferry.storage=memory` topics it bounds the memory held (a default applies when -1).
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between two sparse index entries.
    pub index_interval_bytes: u64,
    /// `cleanup.policy` includes `compact`: the cleaner keeps the last record per key.
    pub compact: bool,
    /// `delete.retention.ms`: how long a tombstone or a transaction marker
    /// stays after the cleaner first saw it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean once this share of the cleanable log is dirty.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty records older than this are cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
}

/// Memory a `ferry.storage=memory` partition may hold when `retention.bytes` is -1.
pub const MEMORY_LOG_DEFAULT_BYTES: u64 = 64 * 1024 * 1024;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}
