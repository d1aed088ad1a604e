//! Glue between the metadata group and this broker's engine: registers the
//! broker, and keeps the local topics what the applied cluster state says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_broker::Engine;
use ferry_cluster::{Cluster, ClusterError, ClusterState, Command};
use tracing::{info, warn};
use uuid::Uuid;

/// Registers this broker's Kafka endpoint, retrying until the metadata
/// group commits it (at start there may be no leader yet).
pub async fn register(cluster: Arc<Cluster>, host: String, port: i32) {
    let node_id = cluster.node_id();
    loop {
        let known = cluster.state().brokers.get(&node_id).is_some_and(|b| b.host == host && b.port == port);
        if known {
            return;
        }
        match cluster.propose(Command::RegisterBroker { node_id, host: host.clone(), port }).await {
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
    loop {
        let state = rx.borrow_and_update().clone();
        reconcile(&engine, &state, &mut seen).await;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn reconcile(engine: &Engine, state: &ClusterState, seen: &mut BTreeMap<String, Uuid>) {
    // Deleted (or deleted and recreated) since the last state we saw.
    for (name, id) in seen.iter() {
        let gone = state.topics.get(name).is_none_or(|t| t.id != *id);
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
    *seen = state.topics.iter().map(|(n, t)| (n.clone(), t.id)).collect();
}
