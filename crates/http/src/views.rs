//! The engine's state as plain values: what `/api/...` returns as JSON and
//! what the scrape-time gauges are computed from, so both always agree.

use std::collections::BTreeSet;

use ferry_broker::txn::{TxnMeta, TxnState};
use ferry_broker::{now_ms, Engine, StorageKind};
use ferry_cluster::{Cluster, ClusterState};
use ferry_metrics::{Metrics, TopicCounts};
use serde::Serialize;

use crate::api::Advertised;

#[derive(Debug, Serialize)]
pub struct TopicView {
    pub name: String,
    pub id: String,
    /// "disk" or "memory" (`ferry.storage`).
    pub storage: &'static str,
    /// Counted since the broker started (the console's rates are the
    /// difference between two polls).
    #[serde(flatten)]
    pub counts: TopicCounts,
    pub partitions: Vec<PartitionView>,
}

#[derive(Debug, Serialize)]
pub struct PartitionView {
    pub partition: i32,
    pub log_start_offset: i64,
    /// The next offset to be written (the high watermark on one node).
    pub log_end_offset: i64,
    pub last_stable_offset: i64,
    /// Segment bytes on disk; null for a memory topic.
    pub size_bytes: Option<u64>,
}

pub fn topics(engine: &Engine, metrics: &Metrics) -> Vec<TopicView> {
    engine
        .topics()
        .iter()
        .map(|t| TopicView {
            name: t.name.clone(),
            id: t.id.to_string(),
            storage: match t.storage() {
                StorageKind::Disk => "disk",
                StorageKind::Memory => "memory",
            },
            counts: metrics.topic_counts(&t.name).unwrap_or_default(),
            partitions: t
                .partitions
                .read()
                .iter()
                .map(|p| {
                    let o = p.offsets();
                    PartitionView {
                        partition: p.index,
                        log_start_offset: o.log_start_offset,
                        log_end_offset: o.high_watermark,
                        last_stable_offset: o.last_stable_offset,
                        size_bytes: p.disk_size_bytes(),
                    }
                })
                .collect(),
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct GroupView {
    pub group_id: String,
    /// Kafka's name: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.
    pub state: &'static str,
    pub protocol_type: String,
    pub members: Vec<MemberView>,
    pub offsets: Vec<GroupOffsetView>,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Serialize)]
pub struct GroupOffsetView {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    /// Null when the partition no longer exists.
    pub high_watermark: Option<i64>,
    /// High watermark minus committed offset (never below 0).
    pub lag: Option<i64>,
}

/// Every group with members or committed offsets (a consumer that only
/// commits, without joining, has the latter only: Kafka shows it Empty).
pub fn groups(engine: &Engine) -> Vec<GroupView> {
    let mut ids: BTreeSet<String> = engine.groups.offsets.groups().into_iter().collect();
    ids.extend(engine.groups.list().into_iter().map(|(id, _, _)| id));
    ids.into_iter().map(|id| group(engine, id)).collect()
}

fn group(engine: &Engine, group_id: String) -> GroupView {
    let offsets = engine
        .groups
        .offsets
        .get(&group_id)
        .into_iter()
        .map(|((topic, partition), committed)| {
            let hw = engine.topic(&topic).and_then(|t| t.partition(partition)).map(|p| p.offsets().high_watermark);
            GroupOffsetView { lag: hw.map(|hw| (hw - committed.offset).max(0)), topic, partition, committed_offset: committed.offset, high_watermark: hw }
        })
        .collect();
    let (state, protocol_type, members) = match engine.groups.describe(&group_id) {
        Some(d) => (
            d.state.kafka_name(),
            d.protocol_type,
            d.members
                .into_iter()
                .map(|m| MemberView {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                })
                .collect(),
        ),
        None => ("Empty", String::new(), Vec::new()),
    };
    GroupView { group_id, state, protocol_type, members, offsets }
}

#[derive(Debug, Serialize)]
pub struct TxnView {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Kafka's name: Empty, Ongoing, PrepareCommit, CompleteCommit, ...
    pub state: &'static str,
    pub timeout_ms: i32,
    /// Since the transaction began, while it is open; else null.
    pub age_ms: Option<i64>,
    pub partitions: Vec<TxnPartitionView>,
}

#[derive(Debug, Serialize)]
pub struct TxnPartitionView {
    pub topic: String,
    pub partition: i32,
    /// The transaction's first offset here: read_committed consumers see
    /// nothing at or past it until the transaction ends (null before its
    /// first write).
    pub first_offset: Option<i64>,
    /// The partition's last stable offset (held at or below `first_offset`).
    pub last_stable_offset: Option<i64>,
    pub high_watermark: Option<i64>,
}

/// Open: begun and not yet completed, so it may hold back read_committed
/// consumers.
pub fn is_open(state: TxnState) -> bool {
    matches!(state, TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence)
}

pub async fn transactions(engine: &Engine) -> Vec<TxnView> {
    let now = now_ms();
    engine.txns.snapshot().await.into_iter().map(|m| txn_view(engine, m, now)).collect()
}

pub fn txn_view(engine: &Engine, m: TxnMeta, now: i64) -> TxnView {
    let open = is_open(m.state);
    let partitions = m.partitions.iter().map(|(topic, index)| txn_partition(engine, m.producer_id, topic, *index)).collect();
    TxnView {
        transactional_id: m.transactional_id,
        producer_id: m.producer_id,
        producer_epoch: m.epoch,
        state: m.state.kafka_name(),
        timeout_ms: m.timeout_ms,
        age_ms: (open && m.txn_start_ms >= 0).then(|| (now - m.txn_start_ms).max(0)),
        partitions,
    }
}

fn txn_partition(engine: &Engine, producer_id: i64, topic: &str, index: i32) -> TxnPartitionView {
    let partition = engine.topic(topic).and_then(|t| t.partition(index));
    let offsets = partition.as_ref().map(|p| p.offsets());
    let first_offset = partition
        .as_ref()
        .and_then(|p| p.producers().into_iter().find(|s| s.producer_id == producer_id))
        .and_then(|s| s.txn_first_offset);
    TxnPartitionView {
        topic: topic.to_string(),
        partition: index,
        first_offset,
        last_stable_offset: offsets.map(|o| o.last_stable_offset),
        high_watermark: offsets.map(|o| o.high_watermark),
    }
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// "single" (one broker) or "cluster" (`--cluster-voters`).
    pub mode: &'static str,
    /// The broker answering.
    pub node_id: i32,
    /// The metadata group's leader (Kafka's controller); null while none
    /// is known. A single broker is its own.
    pub controller_id: Option<i32>,
    pub brokers: Vec<BrokerView>,
    pub partitions: Vec<LeaderView>,
}

#[derive(Debug, Serialize)]
pub struct BrokerView {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Serialize)]
pub struct LeaderView {
    pub topic: String,
    pub partition: i32,
    /// The leader its Raft group reported to the metadata group; null
    /// while none has (a new partition, or an election under way).
    pub leader: Option<i32>,
    /// The leader epoch (the group's Raft term); null with no leader.
    pub leader_epoch: Option<i64>,
    /// Every replica, the preferred leader first (during a move: the
    /// target's, then the leaving ones).
    pub replicas: Vec<i32>,
    /// The replicas caught up with the leader (Kafka's ISR), as the leader
    /// last reported them.
    pub in_sync_replicas: Vec<i32>,
    /// Fewer replicas in sync than there are replicas.
    pub under_replicated: bool,
}

pub fn cluster(engine: &Engine, me: &Advertised, cluster: Option<&Cluster>) -> ClusterView {
    match cluster {
        Some(c) => placed(c, me),
        None => single(engine, me),
    }
}

fn single(engine: &Engine, me: &Advertised) -> ClusterView {
    let partitions = engine
        .topics()
        .iter()
        .flat_map(|t| {
            (0..t.partition_count()).map(|p| LeaderView {
                topic: t.name.clone(),
                partition: p,
                leader: Some(me.node_id),
                leader_epoch: Some(0),
                replicas: vec![me.node_id],
                in_sync_replicas: vec![me.node_id],
                under_replicated: false,
            })
        })
        .collect();
    let broker = BrokerView { node_id: me.node_id, host: me.host.clone(), port: me.port };
    ClusterView { mode: "single", node_id: me.node_id, controller_id: Some(me.node_id), brokers: vec![broker], partitions }
}

fn node_id(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(-1)
}

/// Every partition of the cluster as the metadata group records it.
pub fn partition_leaders(state: &ClusterState) -> Vec<LeaderView> {
    let mut out = Vec::new();
    for (name, placement) in &state.topics {
        for p in 0..placement.replicas.len() {
            let partition = i32::try_from(p).unwrap_or(i32::MAX);
            let Some(set) = state.replica_set(name, partition) else { continue };
            let reported = state.partition_leaders.get(&set.group);
            let in_sync: Vec<i32> = reported.map(|l| l.in_sync.iter().map(|n| node_id(*n)).collect()).unwrap_or_default();
            out.push(LeaderView {
                topic: name.clone(),
                partition,
                leader: reported.map(|l| node_id(l.leader)),
                leader_epoch: reported.map(|l| i64::try_from(l.epoch).unwrap_or(i64::MAX)),
                under_replicated: in_sync.len() < set.replicas.len(),
                replicas: set.replicas.iter().map(|n| node_id(*n)).collect(),
                in_sync_replicas: in_sync,
            });
        }
    }
    out
}

fn placed(cluster: &Cluster, me: &Advertised) -> ClusterView {
    let state = cluster.state();
    let brokers = state.brokers.iter().map(|(n, b)| BrokerView { node_id: node_id(*n), host: b.host.clone(), port: b.port }).collect();
    let controller_id = match cluster.status().leader_id {
        0 => None,
        n => Some(node_id(n)),
    };
    ClusterView { mode: "cluster", node_id: me.node_id, controller_id, brokers, partitions: partition_leaders(&state) }
}
