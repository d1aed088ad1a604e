//! Committed offsets: a map in memory, made durable by an fsynced
//! metadata log (`<data-dir>/internal/consumer-offsets.log`) before any
//! commit is acknowledged or becomes visible. Compacted by rewrite.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ferry_log::meta::MetaLog;
use ferry_log::storage::Storage;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::error::{EngineError, EngineResult};

/// Compact once the log is this large and mostly dead records.
const COMPACT_MIN_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum OffsetRecord {
    Commit { group: String, topic: String, partition: i32, value: CommittedOffset },
    Delete { group: String, topic: String, partition: i32 },
    DeleteGroup { group: String },
}

pub type TopicPartitionKey = (String, i32);

#[derive(Debug)]
pub struct OffsetStore {
    log: Arc<Mutex<MetaLog>>,
    offsets: Arc<Mutex<OffsetMap>>,
    records_in_log: Arc<Mutex<usize>>,
}

type OffsetMap = BTreeMap<String, BTreeMap<TopicPartitionKey, CommittedOffset>>;

impl OffsetStore {
    pub fn open(data_dir: &Path, storage: Arc<dyn Storage>) -> EngineResult<OffsetStore> {
        let path = data_dir.join("internal").join("consumer-offsets.log");
        let (log, records) = MetaLog::open(&path, storage).map_err(|e| EngineError::Storage(e.to_string()))?;
        let mut offsets: BTreeMap<String, BTreeMap<TopicPartitionKey, CommittedOffset>> = BTreeMap::new();
        for raw in &records {
            let record: OffsetRecord = serde_json::from_slice(raw)
                .map_err(|e| EngineError::Storage(format!("{}: unreadable record: {e}", path.display())))?;
            match record {
                OffsetRecord::Commit { group, topic, partition, value } => {
                    offsets.entry(group).or_default().insert((topic, partition), value);
                }
                OffsetRecord::Delete { group, topic, partition } => {
                    if let Some(g) = offsets.get_mut(&group) {
                        g.remove(&(topic, partition));
                    }
                }
                OffsetRecord::DeleteGroup { group } => {
                    offsets.remove(&group);
                }
            }
        }
        offsets.retain(|_, g| !g.is_empty());
        info!(groups = offsets.len(), records = records.len(), "committed offsets loaded");
        Ok(OffsetStore {
            log: Arc::new(Mutex::new(log)),
            offsets: Arc::new(Mutex::new(offsets)),
            records_in_log: Arc::new(Mutex::new(records.len())),
        })
    }

    /// Appends and fsyncs `records`, then applies `apply` to the map while
    /// still holding the log lock, so a compaction never misses a change
    /// that is in the log.
    async fn persist(&self, records: Vec<OffsetRecord>, apply: impl FnOnce(&mut OffsetMap) + Send + 'static) -> EngineResult<()> {
        let payloads: Vec<Vec<u8>> =
            records.iter().map(|r| serde_json::to_vec(r).expect("offset records serialize")).collect();
        let count = payloads.len();
        let log = self.log.clone();
        let offsets = self.offsets.clone();
        let in_log = self.records_in_log.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = log.lock();
            log.append(&payloads)?;
            apply(&mut offsets.lock());
            *in_log.lock() += count;
            Ok::<(), ferry_log::LogError>(())
        })
        .await
        .map_err(|e| EngineError::Storage(format!("offset log task failed: {e}")))?
        .map_err(|e| EngineError::Storage(e.to_string()))?;
        self.maybe_compact().await;
        Ok(())
    }

    /// Makes the commits durable, then visible.
    pub async fn commit(&self, group: &str, commits: Vec<(TopicPartitionKey, CommittedOffset)>) -> EngineResult<()> {
        if commits.is_empty() {
            return Ok(());
        }
        let records = commits
            .iter()
            .map(|((topic, partition), value)| OffsetRecord::Commit {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
                value: value.clone(),
            })
            .collect();
        let group = group.to_string();
        self.persist(records, move |map| {
            let g = map.entry(group).or_default();
            for (key, value) in commits {
                g.insert(key, value);
            }
        })
        .await
    }

    pub async fn delete(&self, group: &str, keys: Vec<TopicPartitionKey>) -> EngineResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let records = keys
            .iter()
            .map(|(topic, partition)| OffsetRecord::Delete { group: group.to_string(), topic: topic.clone(), partition: *partition })
            .collect();
        let group = group.to_string();
        self.persist(records, move |map| {
            if let Some(g) = map.get_mut(&group) {
                for k in &keys {
                    g.remove(k);
                }
                if g.is_empty() {
                    map.remove(&group);
                }
            }
        })
        .await
    }

    pub async fn delete_group(&self, group: &str) -> EngineResult<()> {
        let name = group.to_string();
        self.persist(vec![OffsetRecord::DeleteGroup { group: group.to_string() }], move |map| {
            map.remove(&name);
        })
        .await
    }

    pub fn get(&self, group: &str) -> BTreeMap<TopicPartitionKey, CommittedOffset> {
        self.offsets.lock().get(group).cloned().unwrap_or_default()
    }

    pub fn groups(&self) -> Vec<String> {
        self.offsets.lock().keys().cloned().collect()
    }

    /// Rewrites the log with only live commits once it is mostly dead.
    async fn maybe_compact(&self) {
        let live: usize = self.offsets.lock().values().map(|g| g.len()).sum();
        let in_log = *self.records_in_log.lock();
        if in_log < live * 2 + 1024 || self.log.lock().size_bytes() < COMPACT_MIN_BYTES {
            return;
        }
        let log = self.log.clone();
        let offsets = self.offsets.clone();
        let in_log = self.records_in_log.clone();
        let result = tokio::task::spawn_blocking(move || {
            // The log lock is held from snapshot to rewrite: no change can slip between.
            let mut log = log.lock();
            let snapshot: Vec<Vec<u8>> = offsets
                .lock()
                .iter()
                .flat_map(|(group, g)| {
                    g.iter().map(move |((topic, partition), value)| {
                        serde_json::to_vec(&OffsetRecord::Commit {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            value: value.clone(),
                        })
                        .expect("serialize")
                    })
                })
                .collect();
            log.rewrite(&snapshot)?;
            *in_log.lock() = snapshot.len();
            Ok::<usize, ferry_log::LogError>(snapshot.len())
        })
        .await;
        match result {
            Ok(Ok(count)) => info!(records = count, "compacted the committed-offsets log"),
            Ok(Err(e)) => tracing::warn!(error = %e, "compacting the committed-offsets log failed"),
            Err(e) => tracing::warn!(error = %e, "compaction task failed"),
        }
    }
}
