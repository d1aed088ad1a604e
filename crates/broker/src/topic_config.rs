//! Topic configs: Kafka's names, validated, with Ferry's own `ferry.storage`.

use std::collections::BTreeMap;

use ferry_log::{LogConfig, MEMORY_LOG_DEFAULT_BYTES};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, EngineResult};

/// Where a topic's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Segments on disk; acks=all is answered after fsync.
    Disk,
    /// Bounded memory only: for at-most-once use; gone on restart.
    Memory,
}

/// The effective configuration of a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub storage: StorageKind,
    pub log: LogConfig,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: usize,
    /// The configs set explicitly on this topic (the rest are defaults).
    pub overrides: BTreeMap<String, String>,
    /// `cleanup.policy=compact` without `delete`: retention deletes nothing,
    /// only the cleaner removes records (`log.compact` says whether it runs).
    pub compact_only: bool,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps every
    /// batch with its append time instead of keeping the producer's.
    pub log_append_time: bool,
    /// `compression.type`: the codec the broker stores batches in
    /// (Kafka's attribute value), or None for `producer` (kept as sent).
    pub compression: Option<i16>,
    /// `message.timestamp.before.max.ms` and `message.timestamp.after.max.ms`:
    /// how far a CreateTime record's timestamp may lie behind or ahead of
    /// the broker's clock.
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
}

/// One config a topic understands: its name, default, and documentation.
pub struct ConfigSpec {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

pub const TOPIC_CONFIGS: &[ConfigSpec] = &[
    ConfigSpec { name: "cleanup.policy", default: "delete", doc: "`delete` (retention deletes old segments), `compact` (the log cleaner keeps the last record of every key; retention deletes nothing), or `compact,delete` (both). A compacted topic refuses records without a key. Memory topics are never compacted." },
    ConfigSpec { name: "compression.type", default: "producer", doc: "`producer` stores batches as the producer compressed them; `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd` makes the broker recompress every other batch into that codec." },
    ConfigSpec { name: "delete.retention.ms", default: "86400000", doc: "How long a tombstone or transaction marker stays after the cleaner first saw it, so consumers reading from behind see the delete." },
    ConfigSpec { name: "ferry.storage", default: "disk", doc: "`disk`, or `memory` for at-most-once topics that never touch disk." },
    ConfigSpec { name: "index.interval.bytes", default: "4096", doc: "Bytes between sparse offset index entries." },
    ConfigSpec { name: "max.compaction.lag.ms", default: "9223372036854775807", doc: "A compacted topic's dirty records older than this are cleaned whatever the dirty ratio; it also rolls the active segment." },
    ConfigSpec { name: "max.message.bytes", default: "1048588", doc: "Largest record batch accepted." },
    ConfigSpec { name: "message.timestamp.type", default: "CreateTime", doc: "`CreateTime` keeps the producer's timestamps; `LogAppendTime` stamps each batch with the time the broker appended it." },
    ConfigSpec { name: "message.timestamp.after.max.ms", default: "3600000", doc: "A CreateTime record more than this far ahead of the broker's clock is refused (INVALID_TIMESTAMP); Kafka 4's default (KIP-1030)." },
    ConfigSpec { name: "message.timestamp.before.max.ms", default: "9223372036854775807", doc: "A CreateTime record more than this far behind the broker's clock is refused (INVALID_TIMESTAMP)." },
    ConfigSpec { name: "min.cleanable.dirty.ratio", default: "0.5", doc: "The cleaner compacts a log once this share of its cleanable bytes has not been cleaned yet (0 to 1)." },
    ConfigSpec { name: "min.compaction.lag.ms", default: "0", doc: "Records younger than this are never compacted." },
    ConfigSpec { name: "min.insync.replicas", default: "1", doc: "Accepted (at least 1); acks=all waits for a majority of the replicas." },
    ConfigSpec { name: "retention.bytes", default: "-1", doc: "Delete oldest segments past this size; bounds memory topics." },
    ConfigSpec { name: "retention.ms", default: "604800000", doc: "Delete segments older than this; -1 keeps forever." },
    ConfigSpec { name: "segment.bytes", default: "1073741824", doc: "Roll a new segment past this size." },
    ConfigSpec { name: "segment.ms", default: "604800000", doc: "Roll a new segment after this time." },
];

/// Topic configs whose value is a comma-separated list (Kafka's LIST
/// type): IncrementalAlterConfigs may APPEND to and SUBTRACT from them.
pub const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

/// A topic config's default value.
pub fn default_of(name: &str) -> Option<&'static str> {
    TOPIC_CONFIGS.iter().find(|s| s.name == name).map(|s| s.default)
}

fn parse_num<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    name: &str,
    value: &str,
    min: T,
) -> EngineResult<T> {
    let v: T = value.trim().parse().map_err(|_| EngineError::InvalidConfig {
        name: name.into(),
        value: value.into(),
        reason: "not a number".into(),
    })?;
    if v < min {
        return Err(EngineError::InvalidConfig { name: name.into(), value: value.into(), reason: format!("must be at least {min}") });
    }
    Ok(v)
}

/// Kafka's DOUBLE configs with a `between(lo, hi)` validator.
fn parse_ratio(name: &str, value: &str) -> EngineResult<f64> {
    let bad = |reason: &str| EngineError::InvalidConfig { name: name.into(), value: value.into(), reason: reason.into() };
    let v: f64 = value.trim().parse().map_err(|_| bad("not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(bad("must be between 0 and 1"));
    }
    Ok(v)
}

impl TopicConfig {
    /// Builds a config from explicit overrides on top of the defaults,
    /// refusing unknown names and bad values.
    pub fn from_overrides(overrides: BTreeMap<String, String>) -> EngineResult<TopicConfig> {
        let mut config = TopicConfig {
            storage: StorageKind::Disk,
            log: LogConfig::default(),
            max_message_bytes: 1_048_588,
            overrides: BTreeMap::new(),
            compact_only: false,
            log_append_time: false,
            compression: None,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
        };
        for (name, value) in &overrides {
            config.apply(name, value)?;
        }
        if config.log.min_compaction_lag_ms > config.log.max_compaction_lag_ms {
            // Kafka's LogConfig refuses this pair too.
            return Err(EngineError::InvalidConfig {
                name: "min.compaction.lag.ms".into(),
                value: config.log.min_compaction_lag_ms.to_string(),
                reason: format!("must not exceed max.compaction.lag.ms ({})", config.log.max_compaction_lag_ms),
            });
        }
        if config.compact_only {
            // Kafka does not delete from compact topics by retention either.
            config.log.retention_ms = -1;
            config.log.retention_bytes = -1;
        }
        config.overrides = overrides;
        Ok(config)
    }

    fn apply(&mut self, name: &str, value: &str) -> EngineResult<()> {
        match name {
            "cleanup.policy" => {
                let policies: Vec<&str> = value.split(',').map(str::trim).collect();
                if policies.is_empty() || policies.iter().any(|p| *p != "delete" && *p != "compact") {
                    return Err(EngineError::InvalidConfig {
                        name: name.into(),
                        value: value.into(),
                        reason: "must be `delete`, `compact` or `compact,delete`".into(),
                    });
                }
                self.compact_only = !policies.contains(&"delete");
                self.log.compact = policies.contains(&"compact");
            }
            "message.timestamp.type" => {
                self.log_append_time = match value {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => {
                        return Err(EngineError::InvalidConfig {
                            name: name.into(),
                            value: value.into(),
                            reason: "must be `CreateTime` or `LogAppendTime`".into(),
                        })
                    }
                };
            }
            "compression.type" => {
                self.compression = match value {
                    "producer" => None,
                    "uncompressed" => Some(0),
                    "gzip" => Some(1),
                    "snappy" => Some(2),
                    "lz4" => Some(3),
                    "zstd" => Some(4),
                    _ => {
                        return Err(EngineError::InvalidConfig {
                            name: name.into(),
                            value: value.into(),
                            reason: "must be `producer`, `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd`".into(),
                        })
                    }
                };
            }
            // Kafka's bound (at least 1); a Raft majority of the replicas is
            // what acks=all waits for, whatever the value.
            "min.insync.replicas" => {
                parse_num(name, value, 1i32)?;
            }
            "ferry.storage" => {
                self.storage = match value {
                    "disk" => StorageKind::Disk,
                    "memory" => StorageKind::Memory,
                    _ => {
                        return Err(EngineError::InvalidConfig {
                            name: name.into(),
                            value: value.into(),
                            reason: "must be `disk` or `memory`".into(),
                        })
                    }
                }
            }
            "delete.retention.ms" => self.log.delete_retention_ms = parse_num(name, value, 0i64)?,
            "min.cleanable.dirty.ratio" => self.log.min_cleanable_dirty_ratio = parse_ratio(name, value)?,
            "min.compaction.lag.ms" => self.log.min_compaction_lag_ms = parse_num(name, value, 0i64)?,
            "max.compaction.lag.ms" => self.log.max_compaction_lag_ms = parse_num(name, value, 1i64)?,
            "index.interval.bytes" => self.log.index_interval_bytes = parse_num(name, value, 1u64)?,
            "max.message.bytes" => self.max_message_bytes = parse_num(name, value, 64usize)?,
            "retention.bytes" => self.log.retention_bytes = parse_num(name, value, -1i64)?,
            "retention.ms" => self.log.retention_ms = parse_num(name, value, -1i64)?,
            "message.timestamp.before.max.ms" => self.timestamp_before_max_ms = parse_num(name, value, 0i64)?,
            "message.timestamp.after.max.ms" => self.timestamp_after_max_ms = parse_num(name, value, 0i64)?,
            "segment.bytes" => self.log.segment_bytes = parse_num(name, value, 1024u64)?,
            "segment.ms" => self.log.segment_ms = parse_num(name, value, 1i64)?,
            _ => {
                return Err(EngineError::InvalidConfig {
                    name: name.into(),
                    value: value.into(),
                    reason: "unknown topic config".into(),
                })
            }
        }
        Ok(())
    }

    /// The bound on a memory topic's partition.
    pub fn memory_bytes(&self) -> u64 {
        if self.log.retention_bytes >= 0 {
            self.log.retention_bytes as u64
        } else {
            MEMORY_LOG_DEFAULT_BYTES
        }
    }

    /// Every config with its effective value and whether it was set explicitly.
    pub fn describe(&self) -> Vec<(&'static str, String, bool)> {
        TOPIC_CONFIGS
            .iter()
            .map(|spec| match self.overrides.get(spec.name) {
                Some(v) => (spec.name, v.clone(), true),
                None => (spec.name, spec.default.to_string(), false),
            })
            .collect()
    }
}

/// Kafka's rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> EngineResult<()> {
    let bad = |reason: &str| Err(EngineError::InvalidTopic { name: name.into(), reason: reason.into() });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not allowed");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-') {
        return bad("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_and_bad_values() {
        let mut m = BTreeMap::new();
        m.insert("retention.ms".to_string(), "abc".to_string());
        assert!(TopicConfig::from_overrides(m).is_err());
        let mut m = BTreeMap::new();
        m.insert("no.such".to_string(), "1".to_string());
        assert!(TopicConfig::from_overrides(m).is_err());
        let mut m = BTreeMap::new();
        m.insert("ferry.storage".to_string(), "memory".to_string());
        assert_eq!(TopicConfig::from_overrides(m).unwrap().storage, StorageKind::Memory);
        // Kafka's bound; a majority is what holds (benchmarks set 2).
        assert!(with(&[("min.insync.replicas", "2")]).is_ok());
        assert!(with(&[("min.insync.replicas", "0")]).is_err());
        assert!(with(&[("min.insync.replicas", "two")]).is_err());
    }

    fn with(pairs: &[(&str, &str)]) -> EngineResult<TopicConfig> {
        TopicConfig::from_overrides(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn compaction_configs_have_kafkas_defaults_and_bounds() {
        let d = with(&[]).unwrap();
        assert!(!d.log.compact);
        assert_eq!(d.log.delete_retention_ms, 86_400_000);
        assert_eq!(d.log.min_cleanable_dirty_ratio, 0.5);
        assert_eq!(d.log.min_compaction_lag_ms, 0);
        assert_eq!(d.log.max_compaction_lag_ms, i64::MAX);
        for (name, _, _) in d.describe() {
            assert!(TOPIC_CONFIGS.iter().any(|s| s.name == name));
        }
        let compact = with(&[("cleanup.policy", "compact"), ("delete.retention.ms", "0"), ("min.cleanable.dirty.ratio", "0.01")]).unwrap();
        assert!(compact.log.compact && compact.compact_only);
        assert_eq!((compact.log.retention_ms, compact.log.retention_bytes), (-1, -1));
        assert_eq!(compact.log.delete_retention_ms, 0);
        let both = with(&[("cleanup.policy", "compact,delete"), ("retention.ms", "1000")]).unwrap();
        assert!(both.log.compact && !both.compact_only);
        assert_eq!(both.log.retention_ms, 1000);
        for bad in [
            ("delete.retention.ms", "-1"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "-0.1"),
            ("min.cleanable.dirty.ratio", "half"),
            ("min.compaction.lag.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
        ] {
            assert!(with(&[bad]).is_err(), "{bad:?} accepted");
        }
        assert!(with(&[("min.compaction.lag.ms", "10"), ("max.compaction.lag.ms", "5")]).is_err());
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
