use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName};

use super::str_bytes;
use crate::authorized;
use crate::codes;
use crate::server::Context;

/// DescribeCluster's endpoint types (KIP-919): brokers, or controllers.
const ENDPOINT_BROKERS: i8 = 1;
const UNSUPPORTED_ENDPOINT_TYPE: i16 = 115;

/// DescribeCluster: this broker, its cluster id, and (when asked) what the
/// caller may do to the cluster. There are no separate controllers to list.
pub fn describe_cluster(ctx: &Context, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let node = BrokerId(ctx.engine.config.node_id);
    let base = DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(str_bytes(ctx.config.cluster_id.clone()))
        .with_controller_id(node)
        .with_cluster_authorized_operations(authorized::narrow_cluster(ctx, authorized::if_requested(req.include_cluster_authorized_operations, authorized::cluster)));
    if req.endpoint_type != ENDPOINT_BROKERS {
        return base
            .with_error_code(UNSUPPORTED_ENDPOINT_TYPE)
            .with_error_message(Some(str_bytes("Ferry has no separate controller endpoints; ask for brokers".to_string())));
    }
    if let Some(cluster) = &ctx.cluster {
        let brokers = cluster
            .state()
            .brokers
            .iter()
            .map(|(id, b)| DescribeClusterBroker::default().with_broker_id(BrokerId(*id as i32)).with_host(str_bytes(b.host.clone())).with_port(b.port))
            .collect();
        return base.with_controller_id(BrokerId(crate::cluster::controller_id(cluster))).with_brokers(brokers);
    }
    base.with_brokers(vec![DescribeClusterBroker::default()
        .with_broker_id(node)
        .with_host(str_bytes(ctx.config.advertised_host.clone()))
        .with_port(ctx.config.advertised_port)])
}

pub async fn handle(ctx: &Context, req: MetadataRequest, version: i16) -> MetadataResponse {
    if let Some(cluster) = &ctx.cluster {
        return handle_cluster(ctx, cluster, req, version).await;
    }
    let engine = &ctx.engine;
    let node = BrokerId(engine.config.node_id);
    // v0: an empty list means all topics; v1+: null means all.
    let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()),
    };
    let allow_auto_create = version < 4 || req.allow_auto_topic_creation;
    let topic_operations = authorized::if_requested(req.include_topic_authorized_operations, authorized::topic);
    let mut topics = Vec::new();
    match requested {
        None => {
            for t in engine.topics() {
                topics.push(describe_topic(Some(&t), &t.name, node, codes::NONE, topic_operations));
            }
        }
        Some(list) => {
            for (name, id) in list {
                let (topic, label, missing_code) = match name {
                    Some(name) => match engine.topic_or_auto_create(&name, allow_auto_create).await {
                        Ok(t) => (Some(t), name, codes::NONE),
                        Err(e) => (None, name, codes::for_engine_error(&e)),
                    },
                    None => (engine.topic_by_id(id), String::new(), codes::UNKNOWN_TOPIC_ID),
                };
                let label = topic.as_ref().map(|t| t.name.clone()).unwrap_or(label);
                topics.push(describe_topic(topic.as_deref(), &label, node, missing_code, topic_operations));
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(str_bytes(ctx.config.advertised_host.clone()))
            .with_port(ctx.config.advertised_port)])
        .with_cluster_id(Some(str_bytes(ctx.config.cluster_id.clone())))
        .with_controller_id(node)
        .with_cluster_authorized_operations(authorized::if_requested(req.include_cluster_authorized_operations, authorized::cluster))
        .with_topics(topics)
}

fn describe_topic(topic: Option<&ferry_broker::Topic>, name: &str, node: BrokerId, missing_code: i16, operations: i32) -> MetadataResponseTopic {
    let base = MetadataResponseTopic::default().with_name(Some(TopicName(str_bytes(name))));
    let Some(topic) = topic else {
        return base.with_error_code(missing_code).with_topic_authorized_operations(authorized::NOT_REQUESTED);
    };
    let base = base.with_topic_authorized_operations(operations);
    let partitions = (0..topic.partition_count())
        .map(|i| {
            MetadataResponsePartition::default()
                .with_partition_index(i)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    base.with_topic_id(topic.id).with_partitions(partitions)
}

/// Metadata on a cluster: brokers, topics and placement as the metadata
/// group has applied them on this broker.
async fn handle_cluster(ctx: &Context, cluster: &ferry_cluster::Cluster, req: MetadataRequest, version: i16) -> MetadataResponse {
    let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()),
    };
    let allow_auto_create = (version < 4 || req.allow_auto_topic_creation) && ctx.engine.config.auto_create_topics_enable;
    let operations = authorized::if_requested(req.include_topic_authorized_operations, authorized::topic);
    let mut auto_create_errors = std::collections::HashMap::new();
    if let Some(list) = &requested {
        for name in list.iter().filter_map(|(n, _)| n.as_ref()) {
            if allow_auto_create && !cluster.state().topics.contains_key(name) {
                if let Err(e) = ferry_broker::validate_topic_name(name) {
                    auto_create_errors.insert(name.clone(), codes::for_engine_error(&e));
                    continue;
                }
                let rf = ctx.config.default_replication_factor;
                let created = crate::cluster::create_topic(cluster, name, ctx.engine.config.num_partitions, rf, Default::default()).await;
                match created {
                    Ok(_) | Err((codes::TOPIC_ALREADY_EXISTS, _)) => {}
                    Err((code, _)) => {
                        auto_create_errors.insert(name.clone(), code);
                    }
                }
            }
        }
    }
    let state = cluster.state();
    let describe = |name: &str, placement: &ferry_cluster::TopicPlacement| {
        let partitions = placement
            .replicas
            .iter()
            .enumerate()
            .map(|(i, replicas)| {
                let leader = crate::cluster::leader_of(ctx, cluster, name, i as i32);
                let (leader_id, epoch) = leader.map_or((-1, -1), |(id, epoch)| (id as i32, epoch));
                // While a move runs, its target and the replicas leaving, as Kafka lists them.
                let listed = placement.moving.get(&(i as i32)).map_or_else(|| replicas.clone(), ferry_cluster::reassign::Move::all);
                let replica_nodes: Vec<BrokerId> = listed.iter().map(|r| BrokerId(*r as i32)).collect();
                let in_sync = crate::cluster::in_sync(cluster, name, i as i32).map_or_else(|| replica_nodes.clone(), |ids| ids.into_iter().map(|r| BrokerId(r as i32)).collect());
                MetadataResponsePartition::default()
                    .with_error_code(if leader.is_some() { codes::NONE } else { codes::LEADER_NOT_AVAILABLE })
                    .with_partition_index(i as i32)
                    .with_leader_id(BrokerId(leader_id))
                    .with_leader_epoch(epoch)
                    .with_isr_nodes(in_sync)
                    .with_replica_nodes(replica_nodes)
            })
            .collect();
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_topic_id(placement.id)
            .with_partitions(partitions)
            .with_topic_authorized_operations(operations)
    };
    let topics = match requested {
        None => state.topics.iter().map(|(n, p)| describe(n, p)).collect(),
        Some(list) => list
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(n) => state.topics.get_key_value(n),
                    None => state.topics.iter().find(|(_, p)| p.id == id),
                };
                match found {
                    Some((n, p)) => describe(n, p),
                    None => {
                        let label = name.clone().unwrap_or_default();
                        let code = match &name {
                            Some(n) => auto_create_errors.get(n).copied().unwrap_or(codes::UNKNOWN_TOPIC_OR_PARTITION),
                            None => codes::UNKNOWN_TOPIC_ID,
                        };
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(label))))
                            .with_error_code(code)
                            .with_topic_authorized_operations(authorized::NOT_REQUESTED)
                    }
                }
            })
            .collect(),
    };
    let brokers = state
        .brokers
        .iter()
        .map(|(id, b)| MetadataResponseBroker::default().with_node_id(BrokerId(*id as i32)).with_host(str_bytes(b.host.clone())).with_port(b.port))
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(ctx.config.cluster_id.clone())))
        .with_controller_id(BrokerId(crate::cluster::controller_id(cluster)))
        .with_cluster_authorized_operations(authorized::if_requested(req.include_cluster_authorized_operations, authorized::cluster))
        .with_topics(topics)
}
