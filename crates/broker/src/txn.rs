//! The transaction coordinator. Each transactional id's state lives in
//! memory and every transition is written to a durable transaction log
//! (`<data-dir>/internal/transactions.log`, fsynced) before it is acted on:
//! PrepareCommit/PrepareAbort is durable before any marker is written, and
//! after a crash every Prepare* found is completed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use ferry_log::meta::MetaLog;
use ferry_log::storage::Storage;
use futures::future::{join_all, BoxFuture};
use futures::FutureExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

use crate::engine::{now_ms, Engine};
use crate::group::{CommittedOffset, GroupError};
use crate::producer_ids::ProducerIdManager;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    PrepareEpochFence,
    Dead,
}

impl TxnState {
    /// Kafka's name (DescribeTransactions, ListTransactions).
    pub fn kafka_name(&self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
            TxnState::Dead => "Dead",
        }
    }
}

/// One transactional id's state, exactly as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    /// Offsets committed inside the transaction: (group, topic, partition) → offset.
    #[serde(with = "pairs")]
    pub pending_offsets: BTreeMap<(String, String, i32), CommittedOffset>,
    pub txn_start_ms: i64,
    pub last_update_ms: i64,
}

/// JSON maps need string keys: persist a map as a list of pairs.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<K, V>, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TxnError {
    #[error("transaction timeout {0} ms is out of bounds")]
    InvalidTransactionTimeout(i32),
    #[error("producer id does not match the transactional id")]
    InvalidProducerIdMapping,
    #[error("producer fenced: a newer epoch exists")]
    ProducerFenced,
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    #[error("another transaction operation is completing; retry")]
    ConcurrentTransactions,
    #[error("unknown topic or partition {0}-{1}")]
    UnknownTopicOrPartition(String, i32),
    #[error("{0}")]
    Group(GroupError),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// A marker could not be written yet (no leader, a leader unreachable):
    /// the transaction stays Prepare* and is completed on a retry.
    #[error("transaction markers not written yet: {0}")]
    MarkersPending(String),
}

/// Why an operator's abort ([`TxnCoordinator::abort`]) did not happen.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AbortError {
    #[error("no transactional id {0}")]
    Unknown(String),
    #[error("transactional id {0} has no ongoing transaction (state {1})")]
    NotOngoing(String, &'static str),
    #[error("aborting failed: {0}")]
    Txn(TxnError),
}

/// Coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`
    pub transactional_id_expiration_ms: i64,
    /// `producer.id.expiration.ms`
    pub producer_id_expiration_ms: i64,
    /// Most transactional ids kept.
    pub max_transactional_ids: usize,
    /// Most partitions in one transaction.
    pub max_partitions_per_transaction: usize,
    /// Which producer ids this broker hands out.
    pub producer_id_space: crate::producer_ids::IdSpace,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            producer_id_expiration_ms: 24 * 3600 * 1000,
            max_transactional_ids: 100_000,
            max_partitions_per_transaction: 10_000,
            producer_id_space: crate::producer_ids::IdSpace::default(),
        }
    }
}

type Entry = Arc<tokio::sync::Mutex<TxnMeta>>;

/// One COMMIT or ABORT marker for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub topic: String,
    pub partition: i32,
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
}

/// Writes markers on a cluster, where a partition's leader may be another
/// broker and its log is a Raft log: resolves once the marker is committed
/// (on a majority of replicas). The Kafka front end provides it; a single
/// node writes markers into its own partitions.
pub trait MarkerWriter: Send + Sync + std::fmt::Debug {
    fn write_marker(&self, marker: Marker) -> BoxFuture<'static, Result<(), String>>;
}

#[derive(Debug)]
pub struct TxnCoordinator {
    config: TxnConfig,
    log: Arc<Mutex<MetaLog>>,
    entries: Mutex<HashMap<String, Entry>>,
    /// group → partitions with offsets pending in an open transaction
    /// (for OffsetFetch's require_stable).
    pending_by_group: Mutex<HashMap<String, HashSet<(String, i32)>>>,
    pub producer_ids: ProducerIdManager,
    /// Set on a cluster: where markers go instead of this broker's partitions.
    marker_writer: std::sync::OnceLock<Arc<dyn MarkerWriter>>,
}

/// Crash points for tests: `FERRY_FAILPOINT=txn-after-prepare` (or
/// `txn-between-markers`, `txn-before-complete`) aborts the process there.
fn failpoint(name: &str) {
    if std::env::var("FERRY_FAILPOINT").is_ok_and(|v| v == name) {
        warn!(failpoint = name, "failpoint hit: aborting the process");
        std::process::abort();
    }
}

impl TxnCoordinator {
    pub fn open(data_dir: &Path, storage: Arc<dyn Storage>, config: TxnConfig) -> Result<TxnCoordinator, crate::EngineError> {
        let path = data_dir.join("internal").join("transactions.log");
        let (log, records) = MetaLog::open(&path, storage.clone()).map_err(|e| crate::EngineError::Storage(e.to_string()))?;
        let mut latest: HashMap<String, TxnMeta> = HashMap::new();
        for raw in &records {
            let meta: TxnMeta = serde_json::from_slice(raw)
                .map_err(|e| crate::EngineError::Storage(format!("{}: unreadable record: {e}", path.display())))?;
            latest.insert(meta.transactional_id.clone(), meta);
        }
        let producer_ids = ProducerIdManager::open(data_dir, storage, config.producer_id_space)?;
        let mut pending_by_group: HashMap<String, HashSet<(String, i32)>> = HashMap::new();
        for m in latest.values() {
            for (g, t, p) in m.pending_offsets.keys() {
                pending_by_group.entry(g.clone()).or_default().insert((t.clone(), *p));
            }
        }
        let entries = latest.into_iter().map(|(k, v)| (k, Arc::new(tokio::sync::Mutex::new(v)))).collect();
        Ok(TxnCoordinator {
            config,
            log: Arc::new(Mutex::new(log)),
            entries: Mutex::new(entries),
            pending_by_group: Mutex::new(pending_by_group),
            producer_ids,
            marker_writer: std::sync::OnceLock::new(),
        })
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// On a cluster: markers go through `writer` to each partition's leader.
    pub fn route_markers(&self, writer: Arc<dyn MarkerWriter>) {
        let _ = self.marker_writer.set(writer);
    }

    /// A partition leader's question (KIP-890's verification, Kafka's
    /// AddPartitionsToTxn with verifyOnly): is this partition in the
    /// producer's ongoing transaction? Nothing changes.
    pub async fn verify_partition(&self, tid: &str, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> Result<(), TxnError> {
        let entry = self.entry(tid).ok_or(TxnError::InvalidProducerIdMapping)?;
        let meta = entry.lock().await;
        Self::check_producer(&meta, producer_id, epoch)?;
        if meta.state != TxnState::Ongoing || !meta.partitions.contains(&(topic.to_string(), partition)) {
            return Err(TxnError::InvalidTxnState(format!(
                "{topic}-{partition} is not in an ongoing transaction of transactional id {tid}"
            )));
        }
        Ok(())
    }

    async fn persist(&self, meta: &TxnMeta) -> Result<(), TxnError> {
        let payload = serde_json::to_vec(meta).expect("txn metadata serializes");
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.lock().append(&[payload]))
            .await
            .map_err(|e| TxnError::Storage(e.to_string()))?
            .map_err(|e| TxnError::Storage(e.to_string()))
    }

    fn entry(&self, tid: &str) -> Option<Entry> {
        self.entries.lock().get(tid).cloned()
    }

    /// Partitions of `group` with offsets waiting on an open transaction.
    pub fn pending_offsets(&self, group: &str) -> HashSet<(String, i32)> {
        self.pending_by_group.lock().get(group).cloned().unwrap_or_default()
    }

    fn check_producer(meta: &TxnMeta, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != meta.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch != meta.epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// InitProducerId for a transactional id: a new id, or the epoch bumped
    /// (fencing the previous producer and aborting what it left open).
    pub async fn init_producer(&self, engine: &Engine, tid: &str, timeout_ms: i32, hint: Option<(i64, i16)>) -> Result<(i64, i16), TxnError> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout(timeout_ms));
        }
        let entry = {
            let entries = self.entries.lock();
            if !entries.contains_key(tid) && entries.len() >= self.config.max_transactional_ids {
                return Err(TxnError::LimitReached(format!("at most {} transactional ids", self.config.max_transactional_ids)));
            }
            entries.get(tid).cloned()
        };
        let entry = match entry {
            Some(e) => e,
            None => {
                let pid = self.producer_ids.allocate().map_err(|e| TxnError::Storage(e.to_string()))?;
                let meta = TxnMeta {
                    transactional_id: tid.to_string(),
                    producer_id: pid,
                    epoch: -1,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    groups: BTreeSet::new(),
                    pending_offsets: BTreeMap::new(),
                    txn_start_ms: -1,
                    last_update_ms: now_ms(),
                };
                self.entries.lock().entry(tid.to_string()).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(meta))).clone()
            }
        };
        let mut meta = entry.lock().await;
        if let Some((pid, epoch)) = hint {
            if pid >= 0 && (pid != meta.producer_id || epoch != meta.epoch) {
                return Err(TxnError::ProducerFenced);
            }
        }
        match meta.state {
            TxnState::Ongoing => {
                // Fence the previous producer: its open transaction is
                // aborted under a newer epoch it cannot use.
                info!(transactional_id = tid, producer_id = meta.producer_id, epoch = meta.epoch, "fencing previous producer and aborting its open transaction");
                meta.epoch += 1;
                self.complete(engine, &mut meta, false).await?;
            }
            TxnState::PrepareCommit => self.complete(engine, &mut meta, true).await?,
            TxnState::PrepareAbort | TxnState::PrepareEpochFence => self.complete(engine, &mut meta, false).await?,
            _ => {}
        }
        if meta.epoch >= i16::MAX - 1 {
            meta.producer_id = self.producer_ids.allocate().map_err(|e| TxnError::Storage(e.to_string()))?;
            meta.epoch = 0;
        } else {
            meta.epoch += 1;
        }
        meta.timeout_ms = timeout_ms;
        meta.state = TxnState::Empty;
        meta.partitions.clear();
        meta.groups.clear();
        meta.last_update_ms = now_ms();
        self.persist(&meta).await?;
        Ok((meta.producer_id, meta.epoch))
    }

    fn begin_if_needed(meta: &mut TxnMeta) -> Result<(), TxnError> {
        match meta.state {
            TxnState::Ongoing => Ok(()),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                meta.state = TxnState::Ongoing;
                meta.txn_start_ms = now_ms();
                meta.partitions.clear();
                meta.groups.clear();
                meta.pending_offsets.clear();
                Ok(())
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => Err(TxnError::ConcurrentTransactions),
            TxnState::Dead => Err(TxnError::InvalidTxnState("the transactional id expired".into())),
        }
    }

    /// AddPartitionsToTxn: the partitions join the ongoing transaction
    /// (durably), then each partition accepts this producer's
    /// transactional writes.
    pub async fn add_partitions(&self, engine: &Engine, tid: &str, producer_id: i64, epoch: i16, partitions: &[(String, i32)]) -> Result<(), TxnError> {
        let entry = self.entry(tid).ok_or(TxnError::InvalidProducerIdMapping)?;
        let mut meta = entry.lock().await;
        Self::check_producer(&meta, producer_id, epoch)?;
        for (t, p) in partitions {
            if engine.topic(t).and_then(|topic| topic.partition(*p)).is_none() {
                return Err(TxnError::UnknownTopicOrPartition(t.clone(), *p));
            }
        }
        Self::begin_if_needed(&mut meta)?;
        let new: Vec<(String, i32)> = partitions.iter().filter(|tp| !meta.partitions.contains(*tp)).cloned().collect();
        if meta.partitions.len() + new.len() > self.config.max_partitions_per_transaction {
            return Err(TxnError::LimitReached(format!("at most {} partitions in one transaction", self.config.max_partitions_per_transaction)));
        }
        if new.is_empty() && meta.state == TxnState::Ongoing {
            return Ok(());
        }
        meta.partitions.extend(new.iter().cloned());
        meta.last_update_ms = now_ms();
        self.persist(&meta).await?;
        let now = now_ms();
        for (t, p) in &new {
            if let Some(partition) = engine.topic(t).and_then(|topic| topic.partition(*p)) {
                partition.allow_txn(producer_id, epoch, now).map_err(|e| TxnError::InvalidTxnState(e.to_string()))?;
            }
        }
        Ok(())
    }

    pub async fn add_offsets(&self, tid: &str, producer_id: i64, epoch: i16, group: &str) -> Result<(), TxnError> {
        let entry = self.entry(tid).ok_or(TxnError::InvalidProducerIdMapping)?;
        let mut meta = entry.lock().await;
        Self::check_producer(&meta, producer_id, epoch)?;
        Self::begin_if_needed(&mut meta)?;
        if meta.groups.insert(group.to_string()) {
            meta.last_update_ms = now_ms();
            self.persist(&meta).await?;
        }
        Ok(())
    }

    /// TxnOffsetCommit: offsets that become visible only if the
    /// transaction commits.
    pub async fn add_offset_commits(
        &self,
        tid: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<(), TxnError> {
        let entry = self.entry(tid).ok_or(TxnError::InvalidProducerIdMapping)?;
        let mut meta = entry.lock().await;
        Self::check_producer(&meta, producer_id, epoch)?;
        if meta.state != TxnState::Ongoing || !meta.groups.contains(group) {
            return Err(TxnError::InvalidTxnState(format!("group {group} was not added to an ongoing transaction")));
        }
        for ((t, p), v) in &offsets {
            meta.pending_offsets.insert((group.to_string(), t.clone(), *p), v.clone());
        }
        meta.last_update_ms = now_ms();
        self.persist(&meta).await?;
        let mut pending = self.pending_by_group.lock();
        let set = pending.entry(group.to_string()).or_default();
        for ((t, p), _) in offsets {
            set.insert((t, p));
        }
        Ok(())
    }

    pub async fn end_txn(&self, engine: &Engine, tid: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<(), TxnError> {
        let entry = self.entry(tid).ok_or(TxnError::InvalidProducerIdMapping)?;
        let mut meta = entry.lock().await;
        Self::check_producer(&meta, producer_id, epoch)?;
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => self.complete(engine, &mut meta, commit).await,
            // A retried EndTxn whose first attempt completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => self.complete(engine, &mut meta, commit).await,
            (state, _) => Err(TxnError::InvalidTxnState(format!(
                "cannot {} in state {}",
                if commit { "commit" } else { "abort" },
                state.kafka_name()
            ))),
        }
    }

    /// Drives a transaction to its end: Prepare* (durable) → markers on
    /// every partition (durable) → offsets applied on commit → Complete*.
    /// Safe to run again on a Prepare* state after a crash.
    async fn complete(&self, engine: &Engine, meta: &mut TxnMeta, commit: bool) -> Result<(), TxnError> {
        let prepare = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        if meta.state != prepare {
            meta.state = prepare;
            meta.last_update_ms = now_ms();
            self.persist(meta).await?;
        }
        failpoint("txn-after-prepare");
        self.write_markers(engine, meta, commit).await?;
        if commit {
            let mut by_group: BTreeMap<String, Vec<((String, i32), CommittedOffset)>> = BTreeMap::new();
            for ((g, t, p), v) in &meta.pending_offsets {
                by_group.entry(g.clone()).or_default().push(((t.clone(), *p), v.clone()));
            }
            for (g, offsets) in by_group {
                engine.groups.offsets.commit(&g, offsets).await.map_err(|e| TxnError::Storage(e.to_string()))?;
            }
        }
        failpoint("txn-before-complete");
        {
            let mut pending = self.pending_by_group.lock();
            for (g, t, p) in meta.pending_offsets.keys() {
                if let Some(set) = pending.get_mut(g) {
                    set.remove(&(t.clone(), *p));
                }
            }
        }
        meta.pending_offsets.clear();
        meta.state = if commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        meta.last_update_ms = now_ms();
        self.persist(meta).await?;
        info!(transactional_id = %meta.transactional_id, producer_id = meta.producer_id, epoch = meta.epoch, outcome = if commit { "commit" } else { "abort" }, partitions = meta.partitions.len(), "transaction completed");
        Ok(())
    }

    /// A marker on every partition of the transaction, each durable (on a
    /// cluster: committed on a majority of its replicas) before this returns.
    async fn write_markers(&self, engine: &Engine, meta: &TxnMeta, commit: bool) -> Result<(), TxnError> {
        let now = now_ms();
        let writer = self.marker_writer.get();
        let mut waits: Vec<BoxFuture<'static, Result<(), TxnError>>> = Vec::new();
        for (i, (t, p)) in meta.partitions.iter().enumerate() {
            if i == 1 {
                failpoint("txn-between-markers");
            }
            if let Some(writer) = writer {
                let marker = Marker { topic: t.clone(), partition: *p, producer_id: meta.producer_id, epoch: meta.epoch, commit };
                let (t, p) = (t.clone(), *p);
                waits.push(writer.write_marker(marker).map(move |r| r.map_err(|e| TxnError::MarkersPending(format!("{t}-{p}: {e}")))).boxed());
                continue;
            }
            let Some(partition) = engine.topic(t).and_then(|topic| topic.partition(*p)) else {
                warn!(topic = %t, partition = p, "partition of a transaction is gone; no marker written");
                continue;
            };
            let offset = partition
                .write_marker(meta.producer_id, meta.epoch, commit, now)
                .map_err(|e| TxnError::Storage(format!("marker on {t}-{p}: {e}")))?;
            waits.push(async move { partition.wait_durable(offset + 1).await.map_err(|e| TxnError::Storage(e.to_string())) }.boxed());
        }
        if !waits.is_empty() {
            engine.notify_data_arrived();
        }
        // Every marker is tried, so a retry has fewer left to write.
        join_all(waits).await.into_iter().collect::<Result<Vec<()>, TxnError>>()?;
        Ok(())
    }

    /// At start: completes every Prepare* left by a crash, and lets
    /// ongoing transactions' partitions accept their producer again.
    pub async fn recover(&self, engine: &Engine) {
        let entries: Vec<Entry> = self.entries.lock().values().cloned().collect();
        for entry in entries {
            let mut meta = entry.lock().await;
            let result = match meta.state {
                TxnState::PrepareCommit => self.complete(engine, &mut meta, true).await,
                TxnState::PrepareAbort | TxnState::PrepareEpochFence => self.complete(engine, &mut meta, false).await,
                TxnState::Ongoing => {
                    let now = now_ms();
                    for (t, p) in meta.partitions.clone() {
                        if let Some(partition) = engine.topic(&t).and_then(|topic| topic.partition(p)) {
                            if let Err(e) = partition.allow_txn(meta.producer_id, meta.epoch, now) {
                                warn!(transactional_id = %meta.transactional_id, topic = %t, partition = p, error = %e, "cannot reopen partition for an ongoing transaction");
                            }
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                warn!(transactional_id = %meta.transactional_id, error = %e, "recovering transaction failed; will retry");
            }
        }
    }

    /// Aborts transactions past their timeout (bumping the epoch, which
    /// fences the producer), retries stuck Prepare* states, and forgets
    /// idle transactional ids.
    pub async fn tick(&self, engine: &Engine) {
        let now = now_ms();
        let entries: Vec<Entry> = self.entries.lock().values().cloned().collect();
        // Concurrently: on a cluster one transaction whose leader is out of
        // reach takes seconds to give up, and must not hold up the others.
        let due = entries.into_iter().filter_map(|entry| entry.try_lock_owned().ok()).filter(|meta| {
            matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence)
                || (meta.state == TxnState::Ongoing && now - meta.txn_start_ms > meta.timeout_ms as i64)
        });
        let work = due.map(|mut meta| async move {
            let result = match meta.state {
                TxnState::Ongoing => {
                    info!(transactional_id = %meta.transactional_id, timeout_ms = meta.timeout_ms, "transaction timed out; aborting it and fencing its producer");
                    self.fence_and_abort(engine, &mut meta).await
                }
                TxnState::PrepareCommit => self.complete(engine, &mut meta, true).await,
                _ => self.complete(engine, &mut meta, false).await,
            };
            if let Err(e) = result {
                warn!(transactional_id = %meta.transactional_id, error = %e, "completing transaction failed; will retry");
            }
        });
        join_all(work).await;
        let expiration = self.config.transactional_id_expiration_ms;
        self.entries.lock().retain(|_, e| match e.try_lock() {
            Ok(m) => !(matches!(m.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort) && now - m.last_update_ms > expiration),
            Err(_) => true,
        });
    }

    /// Bumps the epoch (the producer's next request is fenced), then
    /// aborts under it: markers written, the LSO released.
    async fn fence_and_abort(&self, engine: &Engine, meta: &mut TxnMeta) -> Result<(), TxnError> {
        meta.epoch = meta.epoch.saturating_add(1);
        meta.state = TxnState::PrepareEpochFence;
        self.complete(engine, meta, false).await
    }

    /// An operator's abort (`POST /api/transactions/{id}/abort`): what a
    /// timeout does, now. Only an Ongoing transaction; a Prepare* one is
    /// already being completed. Returns the state after the abort.
    pub async fn abort(&self, engine: &Engine, tid: &str) -> Result<TxnMeta, AbortError> {
        let entry = self.entry(tid).ok_or_else(|| AbortError::Unknown(tid.to_string()))?;
        let mut meta = entry.lock().await;
        if meta.state != TxnState::Ongoing {
            return Err(AbortError::NotOngoing(tid.to_string(), meta.state.kafka_name()));
        }
        info!(transactional_id = tid, producer_id = meta.producer_id, epoch = meta.epoch, "aborting on request; fencing the producer");
        self.fence_and_abort(engine, &mut meta).await.map_err(AbortError::Txn)?;
        Ok(meta.clone())
    }

    /// Every transaction's state (ListTransactions, DescribeTransactions).
    pub async fn snapshot(&self) -> Vec<TxnMeta> {
        let entries: Vec<Entry> = self.entries.lock().values().cloned().collect();
        let mut out = Vec::new();
        for e in entries {
            out.push(e.lock().await.clone());
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }
}
