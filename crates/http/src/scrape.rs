//! `/metrics`: the hot-path series kept in [`Metrics`], plus gauges that
//! describe engine state, computed from it at scrape time (a fresh registry
//! per scrape, so a deleted group's series simply stop appearing).

use std::sync::atomic::AtomicU64;

use ferry_broker::{now_ms, Engine};
use ferry_cluster::Cluster;
use ferry_metrics::{Family, Gauge, Metrics, Registry, Unit, PREFIX};
use labels::{GroupLabels, LagLabels, PartitionLabels};

use crate::views;

/// Label sets of the scrape-time series.
mod labels {
    use prometheus_client::encoding::EncodeLabelSet;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct LagLabels {
        pub group: String,
        pub topic: String,
        pub partition: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct GroupLabels {
        pub group: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct PartitionLabels {
        pub topic: String,
        pub partition: String,
    }
}

/// The whole exposition, OpenMetrics text.
pub async fn render(engine: &Engine, metrics: &Metrics, cluster: Option<&Cluster>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix(PREFIX);
    register_groups(engine, &mut registry);
    if let Some(c) = cluster {
        register_partitions(c, &mut registry);
    }
    register_transactions(engine, &mut registry).await;
    metrics.encode(&registry)
}

fn register_groups(engine: &Engine, registry: &mut Registry) {
    let lag = Family::<LagLabels, Gauge>::default();
    let members = Family::<GroupLabels, Gauge>::default();
    for g in views::groups(engine) {
        members.get_or_create(&GroupLabels { group: g.group_id.clone() }).set(g.members.len() as i64);
        for o in g.offsets {
            let Some(l) = o.lag else { continue };
            let labels = LagLabels { group: g.group_id.clone(), topic: o.topic, partition: o.partition.to_string() };
            lag.get_or_create(&labels).set(l);
        }
    }
    registry.register("consumer_group_lag", "High watermark minus committed offset, by group and partition", lag);
    registry.register("consumer_group_members", "Members of a consumer group", members);
}

async fn register_transactions(engine: &Engine, registry: &mut Registry) {
    let now = now_ms();
    let snapshot = engine.txns.snapshot().await;
    let open: Vec<_> = snapshot.iter().filter(|m| views::is_open(m.state)).collect();
    let oldest_ms = open.iter().filter(|m| m.txn_start_ms >= 0).map(|m| (now - m.txn_start_ms).max(0)).max().unwrap_or(0);
    let count = Gauge::<i64>::default();
    count.set(open.len() as i64);
    let oldest = Gauge::<f64, AtomicU64>::default();
    oldest.set(oldest_ms as f64 / 1000.0);
    registry.register("open_transactions", "Transactions begun and not yet completed", count);
    registry.register_with_unit("transaction_oldest_age", "Age of the oldest open transaction (0 when none)", Unit::Seconds, oldest);
}

/// On a cluster: every partition as the metadata group records it (the
/// same on every broker), and how many of the partitions this broker leads
/// are under-replicated (Kafka's UnderReplicatedPartitions: summed over the
/// brokers, the cluster's count).
fn register_partitions(cluster: &Cluster, registry: &mut Registry) {
    let leader = Family::<PartitionLabels, Gauge>::default();
    let replicas = Family::<PartitionLabels, Gauge>::default();
    let in_sync = Family::<PartitionLabels, Gauge>::default();
    let under = Family::<PartitionLabels, Gauge>::default();
    let led_under = Gauge::<i64>::default();
    let me = i32::try_from(cluster.node_id()).unwrap_or(-1);
    for p in views::partition_leaders(&cluster.state()) {
        let labels = PartitionLabels { topic: p.topic, partition: p.partition.to_string() };
        leader.get_or_create(&labels).set(p.leader.map_or(-1, i64::from));
        replicas.get_or_create(&labels).set(p.replicas.len() as i64);
        in_sync.get_or_create(&labels).set(p.in_sync_replicas.len() as i64);
        under.get_or_create(&labels).set(i64::from(p.under_replicated));
        if p.under_replicated && p.leader == Some(me) {
            led_under.inc();
        }
    }
    registry.register("partition_leader", "Node id leading the partition (-1: none reported), from the cluster metadata", leader);
    registry.register("partition_replicas", "Replicas of the partition", replicas);
    registry.register("partition_in_sync_replicas", "Replicas caught up with the partition's leader (ISR), as the leader reported", in_sync);
    registry.register("partition_under_replicated", "1 when fewer replicas are in sync than the partition has", under);
    registry.register("under_replicated_partitions", "Partitions this broker leads with fewer replicas in sync than they have", led_under);
}
