//! DescribeQuorum (KIP-595, KIP-853): the metadata group as Kafka's
//! `kafka-metadata-quorum.sh describe` shows it. Only the leader knows every
//! voter's progress, so a follower forwards the request to it, once.

use std::time::Duration;

use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
use ferry_cluster::VoterInfo;
use tracing::debug;

use super::str_bytes;
use crate::client::{forward, FORWARD_CLIENT_ID};
use crate::codes;
use crate::server::Context;

/// Kafka's name for the metadata log.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn describe(ctx: &Context, req: DescribeQuorumRequest, version: i16, client_id: &str) -> DescribeQuorumResponse {
    fit_version(answer_any_version(ctx, req, version, client_id).await, version)
}

/// Drops what `version` cannot carry: the encoder refuses a field set in a
/// version that lacks it (nodes and the error message came in v2, the
/// replicas' timestamps in v1).
fn fit_version(mut resp: DescribeQuorumResponse, version: i16) -> DescribeQuorumResponse {
    if version < 2 {
        resp.nodes.clear();
        resp.error_message = None;
        for p in resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            p.error_message = None;
        }
    }
    if version < 1 {
        let replicas = resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()).flat_map(|p| p.current_voters.iter_mut().chain(p.observers.iter_mut()));
        for r in replicas {
            r.last_fetch_timestamp = -1;
            r.last_caught_up_timestamp = -1;
        }
    }
    resp
}

async fn answer_any_version(ctx: &Context, req: DescribeQuorumRequest, version: i16, client_id: &str) -> DescribeQuorumResponse {
    let asks_metadata = req.topics.len() == 1
        && req.topics[0].topic_name.as_str() == METADATA_TOPIC
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    if !asks_metadata {
        return DescribeQuorumResponse::default()
            .with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION)
            .with_error_message(Some(str_bytes(format!("only {METADATA_TOPIC} partition 0 has a quorum"))));
    }
    let Some(cluster) = &ctx.cluster else {
        return single_node(ctx);
    };
    let info = match cluster.describe_quorum().await {
        Ok(info) => info,
        Err(e) => return failed(codes::NOT_CONTROLLER, e.to_string()),
    };
    if !info.is_leader && client_id != FORWARD_CLIENT_ID {
        if let Some(leader) = cluster.state().brokers.get(&info.leader_id) {
            match forward::<_, DescribeQuorumResponse>(&format!("{}:{}", leader.host, leader.port), ApiKey::DescribeQuorum, version, &req, FORWARD_TIMEOUT).await {
                Ok(resp) => return resp,
                Err(e) => debug!(leader = info.leader_id, error = %e, "cannot forward DescribeQuorum to the metadata leader"),
            }
        }
        return failed(codes::NOT_LEADER_OR_FOLLOWER, format!("the metadata leader ({}) is not reachable from here", info.leader_id));
    }
    if !info.is_leader {
        return failed(codes::NOT_LEADER_OR_FOLLOWER, "this broker no longer leads the metadata group".into());
    }
    let replica = |v: &VoterInfo| {
        ReplicaState::default()
            .with_replica_id(BrokerId(v.id as i32))
            .with_log_end_offset(v.log_end)
            .with_last_fetch_timestamp(v.last_contact_ms)
            .with_last_caught_up_timestamp(v.caught_up_ms)
    };
    let voters = info.voters.iter().map(replica).collect();
    let observers = info.observers.iter().map(replica).collect();
    let nodes = cluster
        .state()
        .brokers
        .iter()
        .map(|(id, b)| node(*id as i32, &b.host, b.port))
        .collect();
    answer(info.leader_id as i32, info.term as i32, info.commit_index as i64, (voters, observers), nodes)
}

/// A single broker is its own quorum of one.
fn single_node(ctx: &Context) -> DescribeQuorumResponse {
    let id = ctx.engine.config.node_id;
    let now = ferry_broker::now_ms();
    let me = ReplicaState::default().with_replica_id(BrokerId(id)).with_log_end_offset(0).with_last_fetch_timestamp(now).with_last_caught_up_timestamp(now);
    answer(id, 1, 0, (vec![me], vec![]), vec![node(id, &ctx.config.advertised_host, ctx.config.advertised_port)])
}

fn node(id: i32, host: &str, port: i32) -> Node {
    let listener = Listener::default().with_name(str_bytes("PLAINTEXT")).with_host(str_bytes(host)).with_port(port as u16);
    Node::default().with_node_id(BrokerId(id)).with_listeners(vec![listener])
}

fn answer(leader: i32, epoch: i32, high_watermark: i64, (voters, observers): (Vec<ReplicaState>, Vec<ReplicaState>), nodes: Vec<Node>) -> DescribeQuorumResponse {
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(epoch)
        .with_high_watermark(high_watermark)
        .with_current_voters(voters)
        .with_observers(observers);
    DescribeQuorumResponse::default()
        .with_topics(vec![TopicData::default().with_topic_name(TopicName(str_bytes(METADATA_TOPIC))).with_partitions(vec![partition])])
        .with_nodes(nodes)
}

fn failed(code: i16, message: String) -> DescribeQuorumResponse {
    DescribeQuorumResponse::default().with_error_code(code).with_error_message(Some(str_bytes(message)))
}
