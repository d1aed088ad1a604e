//! The broker engine: the set of topics, their partitions and configs.
//! Protocol-agnostic: the Kafka front end translates requests into calls here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_log::storage::Storage;
use ferry_log::{DiskLog, MemoryLog};
use ferry_metrics::Metrics;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};
use uuid::Uuid;

use crate::cleaner::CleanerConfig;
use crate::error::{EngineError, EngineResult};
use crate::group::{GroupConfig, GroupCoordinator};
use crate::txn::{TxnConfig, TxnCoordinator};
use crate::partition::{Partition, PartitionLog};
use crate::producer_state::ProducerStateTable;
use crate::topic_config::{validate_topic_name, StorageKind, TopicConfig};

/// Engine settings (the `ferry serve` config file and flags fill these).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub node_id: i32,
    /// `auto.create.topics.enable`
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of an auto-created topic.
    pub num_partitions: i32,
    /// Upper bound on partitions across all topics.
    pub max_partitions: usize,
    /// Upper bound on partitions of one topic.
    pub max_partitions_per_topic: i32,
    pub group: GroupConfig,
    pub txn: TxnConfig,
    /// The log cleaner (`log.cleaner.*`).
    pub cleaner: CleanerConfig,
    /// Where appends, fetches and fsyncs are counted; None counts nothing
    /// (`ferry serve --http-listen none`, and unit tests).
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: PathBuf::from("./data"),
            node_id: 1,
            auto_create_topics_enable: true,
            num_partitions: 1,
            max_partitions: 10_000,
            max_partitions_per_topic: 1_000,
            group: GroupConfig::default(),
            txn: TxnConfig::default(),
            cleaner: CleanerConfig::default(),
            metrics: None,
        }
    }
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub config: RwLock<TopicConfig>,
    pub partitions: RwLock<Vec<Arc<Partition>>>,
    dir: PathBuf,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index).ok().and_then(|i| self.partitions.read().get(i).cloned())
    }
    pub fn partition_count(&self) -> i32 {
        self.partitions.read().len() as i32
    }
    pub fn storage(&self) -> StorageKind {
        self.config.read().storage
    }
}

/// What is persisted per topic in `topic.json`.
#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Engine {
    pub config: EngineConfig,
    storage: Arc<dyn Storage>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Woken on every append, for fetches waiting on new data.
    data_arrived: Notify,
    /// Serialises topic creation/deletion (metadata file writes).
    admin_lock: tokio::sync::Mutex<()>,
    /// Consumer groups and their committed offsets.
    pub groups: GroupCoordinator,
    /// Producer ids and transactions.
    pub txns: TxnCoordinator,
}

/// Producers whose idempotence state one partition keeps at most.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Engine {
    /// Opens the data directory, recovering every topic's partitions.
    pub fn open(config: EngineConfig, storage: Arc<dyn Storage>) -> EngineResult<Engine> {
        let topics_dir = config.data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .map_err(|e| EngineError::Storage(format!("cannot create {}: {e}", topics_dir.display())))?;
        let mut topics = BTreeMap::new();
        let entries = std::fs::read_dir(&topics_dir)
            .map_err(|e| EngineError::Storage(format!("cannot read {}: {e}", topics_dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| EngineError::Storage(e.to_string()))?;
            let meta_path = entry.path().join("topic.json");
            if !meta_path.exists() {
                warn!(dir = %entry.path().display(), "skipping directory without topic.json");
                continue;
            }
            let text = std::fs::read_to_string(&meta_path)
                .map_err(|e| EngineError::Storage(format!("cannot read {}: {e}", meta_path.display())))?;
            let meta: TopicMeta = serde_json::from_str(&text)
                .map_err(|e| EngineError::Storage(format!("{} is not valid: {e}", meta_path.display())))?;
            let topic_config = TopicConfig::from_overrides(meta.configs.clone())
                .map_err(|e| EngineError::Storage(format!("{}: {e}", meta_path.display())))?;
            let topic = Self::open_topic(&storage, config.metrics.as_deref(), entry.path(), &meta, topic_config)?;
            topics.insert(meta.name.clone(), Arc::new(topic));
        }
        let groups = GroupCoordinator::open(&config.data_dir, storage.clone(), config.group.clone())?;
        let txns = TxnCoordinator::open(&config.data_dir, storage.clone(), config.txn.clone())?;
        info!(topics = topics.len(), data_dir = %config.data_dir.display(), "engine opened");
        Ok(Engine {
            groups,
            txns,
            config,
            storage,
            topics: RwLock::new(topics),
            data_arrived: Notify::new(),
            admin_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn open_partition(
        storage: &Arc<dyn Storage>,
        metrics: Option<&Metrics>,
        dir: &Path,
        topic: &str,
        index: i32,
        config: &TopicConfig,
    ) -> EngineResult<Partition> {
        let mut producers = ProducerStateTable::new(MAX_PRODUCERS_PER_PARTITION);
        let now = now_ms();
        let log = match config.storage {
            StorageKind::Disk => {
                let pdir = dir.join(index.to_string());
                // Producer state and the transaction index are rebuilt from the log itself.
                let mut observe = |h: &ferry_log::batch::BatchHeader, bytes: &[u8]| producers.replay(h, bytes, now);
                PartitionLog::Disk(DiskLog::open_observed(&pdir, storage.clone(), config.log.clone(), &mut observe).map_err(|e| {
                    EngineError::Storage(format!("topic {topic} partition {index}: {e}"))
                })?)
            }
            StorageKind::Memory => PartitionLog::Memory(MemoryLog::new(config.memory_bytes())),
        };
        Ok(Partition::new(topic.to_string(), index, log, producers, metrics.map(|m| m.topic(topic))))
    }

    fn open_topic(storage: &Arc<dyn Storage>, metrics: Option<&Metrics>, dir: PathBuf, meta: &TopicMeta, config: TopicConfig) -> EngineResult<Topic> {
        let mut partitions = Vec::new();
        for index in 0..meta.partitions {
            partitions.push(Arc::new(Self::open_partition(storage, metrics, &dir, &meta.name, index, &config)?));
        }
        Ok(Topic { name: meta.name.clone(), id: meta.id, config: RwLock::new(config), partitions: RwLock::new(partitions), dir })
    }

    /// The broker's metrics, unless counting is off.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.config.metrics.as_deref()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    fn total_partitions(&self) -> usize {
        self.topics.read().values().map(|t| t.partition_count() as usize).sum()
    }

    /// The topic, created with defaults if auto-creation is on.
    pub async fn topic_or_auto_create(&self, name: &str, allow: bool) -> EngineResult<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if !(allow && self.config.auto_create_topics_enable) {
            return Err(EngineError::UnknownTopicOrPartition(name.to_string()));
        }
        match self.create_topic(name, self.config.num_partitions, BTreeMap::new(), false).await {
            Ok(t) => Ok(t),
            Err(EngineError::TopicAlreadyExists(_)) => self.topic(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.into())),
            Err(e) => Err(e),
        }
    }

    /// Creates a topic (or only validates, with `validate_only`).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> EngineResult<Arc<Topic>> {
        self.create_topic_with_id(name, Uuid::new_v4(), partitions, configs, validate_only).await
    }

    /// Creates a topic with the id the cluster's metadata gave it, so every
    /// broker knows it by the same id.
    pub async fn create_topic_with_id(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> EngineResult<Arc<Topic>> {
        validate_topic_name(name)?;
        if partitions < 1 || partitions > self.config.max_partitions_per_topic {
            return Err(EngineError::InvalidPartitions(format!(
                "{partitions} partitions requested; allowed 1..={}",
                self.config.max_partitions_per_topic
            )));
        }
        let config = TopicConfig::from_overrides(configs.clone())?;
        let _guard = self.admin_lock.lock().await;
        if self.topics.read().contains_key(name) {
            return Err(EngineError::TopicAlreadyExists(name.into()));
        }
        if self.total_partitions() + partitions as usize > self.config.max_partitions {
            return Err(EngineError::LimitReached(format!("the broker holds at most {} partitions", self.config.max_partitions)));
        }
        let meta = TopicMeta { name: name.to_string(), id, partitions, configs };
        let dir = self.config.data_dir.join("topics").join(name);
        if validate_only {
            return Ok(Arc::new(Topic {
                name: meta.name,
                id: meta.id,
                config: RwLock::new(config),
                partitions: RwLock::new(Vec::new()),
                dir,
            }));
        }
        write_meta(&dir, &meta)?;
        let topic = Arc::new(Self::open_topic(&self.storage, self.metrics(), dir, &meta, config)?);
        self.topics.write().insert(name.to_string(), topic.clone());
        info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    pub async fn delete_topic(&self, name: &str) -> EngineResult<Uuid> {
        let _guard = self.admin_lock.lock().await;
        let topic = self.topics.write().remove(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.into()))?;
        for p in topic.partitions.read().iter() {
            p.with_log(|log| {
                if let PartitionLog::Disk(l) = log {
                    l.retire("topic deleted");
                }
            });
        }
        std::fs::remove_dir_all(&topic.dir)
            .map_err(|e| EngineError::Storage(format!("cannot remove {}: {e}", topic.dir.display())))?;
        if let Some(m) = self.metrics() {
            m.remove_topic(name);
        }
        info!(topic = name, "topic deleted");
        Ok(topic.id)
    }

    pub async fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> EngineResult<()> {
        let _guard = self.admin_lock.lock().await;
        let topic = self.topic(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.into()))?;
        let current = topic.partition_count();
        if count <= current {
            return Err(EngineError::InvalidPartitions(format!("topic {name} has {current} partitions; the new count must be larger, got {count}")));
        }
        if count > self.config.max_partitions_per_topic
            || self.total_partitions() + (count - current) as usize > self.config.max_partitions
        {
            return Err(EngineError::InvalidPartitions(format!("{count} partitions is over the limit")));
        }
        if validate_only {
            return Ok(());
        }
        let config = topic.config.read().clone();
        let mut added = Vec::new();
        for index in current..count {
            added.push(Arc::new(Self::open_partition(&self.storage, self.metrics(), &topic.dir, name, index, &config)?));
        }
        write_meta(&topic.dir, &TopicMeta { name: name.into(), id: topic.id, partitions: count, configs: config.overrides.clone() })?;
        topic.partitions.write().extend(added);
        Ok(())
    }

    /// Replaces a topic's explicit configs (AlterConfigs semantics).
    pub async fn set_topic_configs(&self, name: &str, configs: BTreeMap<String, String>, validate_only: bool) -> EngineResult<()> {
        let _guard = self.admin_lock.lock().await;
        let topic = self.topic(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.into()))?;
        let new_config = TopicConfig::from_overrides(configs.clone())?;
        if new_config.storage != topic.storage() {
            return Err(EngineError::InvalidConfig {
                name: "ferry.storage".into(),
                value: format!("{:?}", new_config.storage).to_lowercase(),
                reason: "cannot be changed after the topic is created".into(),
            });
        }
        if validate_only {
            return Ok(());
        }
        write_meta(&topic.dir, &TopicMeta { name: name.into(), id: topic.id, partitions: topic.partition_count(), configs })?;
        for p in topic.partitions.read().iter() {
            p.with_log(|log| match log {
                PartitionLog::Disk(l) => l.set_config(new_config.log.clone()),
                PartitionLog::Memory(l) => l.set_max_bytes(new_config.memory_bytes()),
            });
        }
        *topic.config.write() = new_config;
        Ok(())
    }

    pub fn notify_data_arrived(&self) {
        self.data_arrived.notify_waiters();
    }

    pub fn data_arrived(&self) -> &Notify {
        &self.data_arrived
    }

    /// Applies retention to every disk partition.
    pub fn apply_retention(&self) {
        let now = now_ms();
        for topic in self.topics() {
            // A replicated log keeps what Raft may still need (retention on
            // a cluster comes with snapshots).
            for p in topic.partitions.read().iter().filter(|p| !p.is_replicated()) {
                let result = p.with_log(|log| match log {
                    PartitionLog::Disk(l) => l.apply_retention(now),
                    PartitionLog::Memory(_) => Ok(0),
                });
                if let Err(e) = result {
                    warn!(topic = %topic.name, partition = p.index, error = %e, "retention failed");
                }
            }
        }
    }

    /// Drops idle producers' state everywhere (`producer.id.expiration.ms`).
    pub fn expire_producers(&self) {
        let now = now_ms();
        for topic in self.topics() {
            for p in topic.partitions.read().iter() {
                p.expire_producers(now, self.config.txn.producer_id_expiration_ms);
            }
        }
    }

    /// Fsyncs every partition (clean shutdown).
    pub fn sync_all(&self) -> EngineResult<()> {
        let mut first_err = None;
        for topic in self.topics() {
            for p in topic.partitions.read().iter() {
                if let Err(e) = p.sync_now() {
                    warn!(topic = %topic.name, partition = p.index, error = %e, "sync at shutdown failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Writes `topic.json` atomically and durably: temp file, fsync, rename, dir fsync.
fn write_meta(dir: &Path, meta: &TopicMeta) -> EngineResult<()> {
    let err = |what: &str, e: std::io::Error| EngineError::Storage(format!("{what} {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(|e| err("cannot create", e))?;
    let tmp = dir.join("topic.json.tmp");
    let text = serde_json::to_vec_pretty(meta).map_err(|e| EngineError::Storage(e.to_string()))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| err("cannot write", e))?;
        f.write_all(&text).map_err(|e| err("cannot write", e))?;
        f.sync_all().map_err(|e| err("cannot sync", e))?;
    }
    std::fs::rename(&tmp, dir.join("topic.json")).map_err(|e| err("cannot rename in", e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err("cannot sync", e))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| err("cannot sync parent of", e))?;
    }
    Ok(())
}
