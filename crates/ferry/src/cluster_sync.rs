//! Glue between the metadata group and this broker's engine: registers the
//! broker, and keeps the local topics what the applied cluster state says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferry_broker::{now_ms, Engine, EngineError, Partition, ReplicaPrepared, StorageKind};
use ferry_cluster::partition::{BatchInfo, GroupSpec, Prepared, ReplicaError, ReplicaLog};
use ferry_cluster::{Cluster, ClusterError, ClusterState, Command};
use tracing::{info, warn};
use uuid::Uuid;

/// Registers this broker's Kafka endpoint, retrying until the metadata
/// group commits it (at start there may be no leader yet).
pub async fn register(cluster: Arc<Cluster>, host: String, port: i32) {
    let node_id = cluster.node_id();
    let cluster_addr = Some(cluster.config().advertised_addr());
    loop {
        let known = cluster.state().brokers.get(&node_id).is_some_and(|b| b.host == host && b.port == port && b.cluster_addr == cluster_addr);
        if known {
            return;
        }
        let command = Command::RegisterBroker { node_id, host: host.clone(), port, cluster_addr: cluster_addr.clone() };
        match cluster.propose(command).await {
            Ok(_) => {
                info!(node_id, %host, port, "broker registered in the cluster metadata");
                return;
            }
            Err(ClusterError::Stopped) => return,
            Err(e) => {
                tracing::debug!(error = %e, "broker registration not committed yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Follows the applied cluster state for as long as the cluster runs.
pub async fn reconcile_topics(engine: Arc<Engine>, cluster: Arc<Cluster>) {
    let mut rx = cluster.watch_state();
    let mut seen: BTreeMap<String, Uuid> = BTreeMap::new();
    let mut replicas = Replicas { opened: BTreeMap::new(), examined: BTreeSet::new() };
    loop {
        let state = rx.borrow_and_update().clone();
        reconcile(&engine, &state, &mut seen, &cluster, &mut replicas).await;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The partition groups this broker runs, by topic.
struct Replicas {
    opened: BTreeMap<String, BTreeSet<u64>>,
    /// Groups already looked at once: only then can a replica this broker
    /// lost while it was away be found on disk.
    examined: BTreeSet<u64>,
}

impl Replicas {
    fn close_topic(&mut self, cluster: &Cluster, name: &str) {
        for group in self.opened.remove(name).unwrap_or_default() {
            if let Err(e) = cluster.close_group(group) {
                warn!(topic = %name, group, error = %e, "cannot close a partition replica");
            }
        }
    }

    /// Starts the Raft group of every partition of `name` placed on this
    /// broker (a move's target included), and leaves those moved off it.
    fn open_topic(&mut self, engine: &Arc<Engine>, cluster: &Cluster, name: &str, state: &ClusterState) {
        let Some(topic) = engine.topic(name) else { return };
        if topic.storage() != StorageKind::Disk {
            return;
        }
        let me = cluster.node_id();
        let dir = cluster.config().dir.join("partitions");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot create the partition replicas' directory");
            return;
        }
        let opened = self.opened.entry(name.to_string()).or_default();
        let examined = &mut self.examined;
        for index in 0..topic.partition_count() {
            let Some(set) = state.replica_set(name, index) else { continue };
            let group = set.group;
            let state_path = dir.join(format!("{group}.raft"));
            let mine = set.replicas.contains(&me);
            if !mine && opened.remove(&group) {
                leave(cluster, name, index, group);
                continue;
            }
            // A replica this broker held before it restarted, moved off
            // while it was away: opened only to be left, which empties it.
            let first_look = examined.insert(group);
            let stale = !mine && first_look && state_path.exists();
            if (!mine && !stale) || opened.contains(&group) {
                continue;
            }
            let Some(partition) = topic.partition(index) else { continue };
            if let Err(e) = partition.start_replication() {
                warn!(topic = %name, partition = index, error = %e, "partition cannot be replicated");
                continue;
            }
            let log = Arc::new(ReplicaAdapter { engine: engine.clone(), partition });
            let spec = GroupSpec { group, voters: set.first_voters, preferred: set.preferred, state_path, log };
            match cluster.open_group(spec) {
                Ok(()) if stale => leave(cluster, name, index, group),
                Ok(()) => {
                    opened.insert(group);
                }
                Err(e) => warn!(topic = %name, partition = index, error = %e, "cannot start the partition replica"),
            }
        }
    }
}

fn leave(cluster: &Cluster, topic: &str, partition: i32, group: u64) {
    if let Err(e) = cluster.leave_group(group) {
        warn!(topic = %topic, partition, error = %e, "cannot stop a replica that moved away");
    }
}

async fn reconcile(engine: &Arc<Engine>, state: &ClusterState, seen: &mut BTreeMap<String, Uuid>, cluster: &Cluster, replicas: &mut Replicas) {
    // Deleted (or deleted and recreated) since the last state we saw.
    for (name, id) in seen.iter() {
        let gone = state.topics.get(name).is_none_or(|t| t.id != *id);
        if gone {
            replicas.close_topic(cluster, name);
        }
        if gone && engine.topic(name).is_some_and(|t| t.id == *id) {
            match engine.delete_topic(name).await {
                Ok(_) => info!(topic = %name, "topic deleted by the cluster metadata"),
                Err(e) => warn!(topic = %name, error = %e, "cannot delete topic the cluster deleted"),
            }
        }
    }
    for (name, placement) in &state.topics {
        let partitions = placement.replicas.len() as i32;
        match engine.topic(name) {
            Some(t) if t.id == placement.id => {
                if t.partition_count() < partitions {
                    if let Err(e) = engine.create_partitions(name, partitions, false).await {
                        warn!(topic = %name, error = %e, "cannot add the partitions the cluster added");
                    }
                }
            }
            Some(t) => {
                // The cluster deleted and recreated it while this broker was away.
                warn!(topic = %name, local_id = %t.id, cluster_id = %placement.id, "replacing a local topic the cluster has since deleted");
                replicas.close_topic(cluster, name);
                if let Err(e) = engine.delete_topic(name).await {
                    warn!(topic = %name, error = %e, "cannot delete the stale local topic");
                    continue;
                }
                if let Err(e) = engine.create_topic_with_id(name, placement.id, partitions, placement.configs.clone(), false).await {
                    warn!(topic = %name, error = %e, "cannot create the topic the cluster created");
                }
            }
            None => {
                if let Err(e) = engine.create_topic_with_id(name, placement.id, partitions, placement.configs.clone(), false).await {
                    warn!(topic = %name, error = %e, "cannot create the topic the cluster created");
                }
            }
        }
    }
    for name in state.topics.keys() {
        replicas.open_topic(engine, cluster, name, state);
    }
    *seen = state.topics.iter().map(|(n, t)| (n.clone(), t.id)).collect();
}

/// A partition as its Raft group sees it.
struct ReplicaAdapter {
    engine: Arc<Engine>,
    partition: Arc<Partition>,
}

fn storage_error(e: EngineError) -> ReplicaError {
    ReplicaError::Storage(e.to_string())
}

impl ReplicaLog for ReplicaAdapter {
    fn batches(&self, visit: &mut dyn FnMut(BatchInfo)) -> Result<(), ReplicaError> {
        self.partition
            .replica_batches(&mut |base_offset, last_offset, leader_epoch| visit(BatchInfo { base_offset, last_offset, leader_epoch }))
            .map_err(storage_error)
    }

    fn prepare(&self, batch: &mut [u8], base_offset: i64, leader_epoch: i32) -> Result<Prepared, ReplicaError> {
        match self.partition.replica_prepare(batch, base_offset, leader_epoch, now_ms()) {
            Ok(ReplicaPrepared::Append) => Ok(Prepared::Append),
            Ok(ReplicaPrepared::Duplicate { base_offset, last_offset }) => Ok(Prepared::Duplicate { base_offset, last_offset }),
            Err(e) => Err(ReplicaError::Refused(Box::new(e))),
        }
    }

    fn discard_prepared(&self) -> Result<(), ReplicaError> {
        self.partition.replica_discard_prepared(now_ms()).map_err(storage_error)
    }

    fn append(&self, batches: &[u8]) -> Result<(), ReplicaError> {
        self.partition.replica_append(batches, now_ms()).map_err(storage_error)
    }

    fn sync(&self) -> Result<(), ReplicaError> {
        self.partition.replica_sync().map_err(storage_error)
    }

    fn truncate(&self, offset: i64) -> Result<(), ReplicaError> {
        self.partition.replica_truncate(offset, now_ms()).map_err(storage_error)
    }

    fn read(&self, from_offset: i64, max_bytes: usize) -> Result<Vec<u8>, ReplicaError> {
        self.partition.replica_read(from_offset, max_bytes).map_err(storage_error)
    }

    fn commit(&self, high_watermark: i64) {
        self.partition.replica_commit(high_watermark);
        self.engine.notify_data_arrived();
    }

    fn set_log_start(&self, offset: i64) {
        self.partition.replica_set_log_start(offset);
    }

    fn start_offset(&self) -> Result<i64, ReplicaError> {
        self.partition.replica_start_offset().map_err(storage_error)
    }

    fn retention_target(&self) -> Result<Option<i64>, ReplicaError> {
        self.partition.replica_retention_target(now_ms()).map_err(storage_error)
    }

    fn compact(&self, offset: i64) -> Result<(), ReplicaError> {
        self.partition.replica_compact(offset).map_err(storage_error)
    }

    fn reset(&self, offset: i64) -> Result<(), ReplicaError> {
        self.partition.replica_reset(offset, now_ms()).map_err(storage_error)?;
        self.engine.notify_data_arrived();
        Ok(())
    }

    fn clear(&self) -> Result<(), ReplicaError> {
        self.partition.replica_clear(now_ms()).map_err(storage_error)
    }
}
