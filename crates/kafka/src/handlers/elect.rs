//! ElectLeaders (KIP-460, `kafka-leader-election.sh`). A preferred election
//! moves a partition's leadership to its first replica through a Raft
//! leader transfer, which only a caught-up replica can take, so nothing
//! acknowledged is lost. Only the leader can hand leadership over: the
//! partitions another broker leads are forwarded to it, once.
//!
//! Unclean elections have no Raft counterpart (a replica without the
//! committed entries cannot win a vote); they are refused per partition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_cluster::partition::Election;
use ferry_cluster::Cluster;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use tracing::debug;

use super::str_bytes;
use crate::client::{forward, FORWARD_CLIENT_ID};
use crate::codes;
use crate::server::Context;

const PREFERRED: i8 = 0;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the new leader when the caller's timeout is larger.
const MAX_WAIT: Duration = Duration::from_secs(30);

type Outcome = (i16, Option<String>);

pub async fn handle(ctx: &Context, req: ElectLeadersRequest, version: i16, client_id: &str) -> ElectLeadersResponse {
    let all = req.topic_partitions.is_none();
    let asked = asked_partitions(ctx, &req);
    let wait = Duration::from_millis(req.timeout_ms.max(0) as u64).min(MAX_WAIT);
    let mut outcomes: BTreeMap<(String, i32), Outcome> = BTreeMap::new();
    let mut elsewhere: BTreeMap<u64, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, partition) in asked {
        let outcome = match &ctx.cluster {
            None => single_node(ctx, &topic, partition),
            Some(cluster) if cluster.state().partition(&topic, partition).is_none() => unknown(&topic, partition),
            Some(_) if req.election_type != PREFERRED => unclean(ctx, &topic, partition),
            Some(cluster) => match local_or_leader(ctx, cluster, &topic, partition) {
                Ok(()) => elect_here(ctx, cluster, &topic, partition, wait).await,
                Err(Some(leader)) if client_id != FORWARD_CLIENT_ID => {
                    elsewhere.entry(leader).or_default().push((topic, partition));
                    continue;
                }
                Err(_) => (codes::NOT_LEADER_OR_FOLLOWER, Some("no leader is known for the partition".into())),
            },
        };
        outcomes.insert((topic, partition), outcome);
    }
    if let Some(cluster) = &ctx.cluster {
        for (leader, partitions) in elsewhere {
            forward_to(cluster, leader, partitions, &req, version, &mut outcomes).await;
        }
    }
    // Asked for everything, Kafka lists only the partitions an election was
    // needed for (the tool prints the rest as nothing to do).
    if all {
        outcomes.retain(|_, (code, _)| *code != codes::ELECTION_NOT_NEEDED);
    }
    answer(outcomes)
}

/// The partitions named, or every partition of every topic when none are.
fn asked_partitions(ctx: &Context, req: &ElectLeadersRequest) -> Vec<(String, i32)> {
    match &req.topic_partitions {
        Some(topics) => topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p))).collect(),
        None => ctx
            .engine
            .topics()
            .into_iter()
            .flat_map(|t| (0..t.partition_count()).map(move |p| (t.name.clone(), p)))
            .collect(),
    }
}

fn single_node(ctx: &Context, topic: &str, partition: i32) -> Outcome {
    match ctx.engine.topic(topic) {
        Some(t) if (0..t.partition_count()).contains(&partition) => (codes::ELECTION_NOT_NEEDED, None),
        _ => unknown(topic, partition),
    }
}

fn unclean(ctx: &Context, topic: &str, partition: i32) -> Outcome {
    let Some(cluster) = &ctx.cluster else { return single_node(ctx, topic, partition) };
    match crate::cluster::leader_of(ctx, cluster, topic, partition) {
        Some((leader, _)) if leader != 0 => (codes::ELECTION_NOT_NEEDED, None),
        _ => (
            codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
            Some("Raft elects a leader only from a majority of caught-up replicas; an unclean election would lose acknowledged records".into()),
        ),
    }
}

fn unknown(topic: &str, partition: i32) -> Outcome {
    (codes::UNKNOWN_TOPIC_OR_PARTITION, Some(format!("{topic}-{partition} does not exist")))
}

/// Ok when this broker leads the partition; else the leader, if known.
fn local_or_leader(ctx: &Context, cluster: &Cluster, topic: &str, partition: i32) -> Result<(), Option<u64>> {
    match crate::cluster::leader_of(ctx, cluster, topic, partition) {
        Some((leader, _)) if leader == cluster.node_id() => Ok(()),
        Some((leader, _)) if leader != 0 => Err(Some(leader)),
        _ => Err(None),
    }
}

/// Starts the transfer and waits (up to `wait`) for the preferred replica
/// to lead, as Kafka answers once the new leader is elected.
async fn elect_here(ctx: &Context, cluster: &Cluster, topic: &str, partition: i32, wait: Duration) -> Outcome {
    let Some((group, replicas)) = cluster.state().partition(topic, partition).map(|(g, r)| (g, r.to_vec())) else {
        return unknown(topic, partition);
    };
    let memory = ctx.engine.topic(topic).is_some_and(|t| t.storage() != ferry_broker::StorageKind::Disk);
    if memory {
        return (codes::ELECTION_NOT_NEEDED, Some("memory topics are not replicated: their preferred replica always leads".into()));
    }
    let preferred = replicas.first().copied().unwrap_or(0);
    match cluster.elect_preferred(group).await {
        Ok(Some(Election::Started)) => {}
        Ok(Some(Election::NotNeeded)) => return (codes::ELECTION_NOT_NEEDED, None),
        Ok(Some(Election::PreferredUnavailable)) => {
            return (codes::PREFERRED_LEADER_NOT_AVAILABLE, Some(format!("replica {preferred} is not active and caught up")))
        }
        Ok(Some(Election::NotLeader { .. })) | Ok(None) => {
            return (codes::NOT_LEADER_OR_FOLLOWER, Some("this broker no longer leads the partition".into()))
        }
        Err(e) => return (crate::cluster::error_code(&e), Some(e.to_string())),
    }
    let deadline = Instant::now() + wait;
    loop {
        if cluster.group_status(group).is_some_and(|s| s.leader_id == preferred) {
            return (codes::NONE, None);
        }
        if Instant::now() >= deadline {
            return (codes::REQUEST_TIMED_OUT, Some(format!("replica {preferred} did not take over within {} ms", wait.as_millis())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the partitions `leader` leads to it; its answers go into `outcomes`.
async fn forward_to(
    cluster: &Cluster,
    leader: u64,
    partitions: Vec<(String, i32)>,
    req: &ElectLeadersRequest,
    version: i16,
    outcomes: &mut BTreeMap<(String, i32), Outcome>,
) {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let topics = by_topic.into_iter().map(|(t, ps)| TopicPartitions::default().with_topic(TopicName(str_bytes(t))).with_partitions(ps)).collect();
    let sub = req.clone().with_topic_partitions(Some(topics));
    let addr = cluster.state().brokers.get(&leader).map(|b| format!("{}:{}", b.host, b.port));
    let answered = match addr {
        Some(addr) => forward::<_, ElectLeadersResponse>(&addr, ApiKey::ElectLeaders, version, &sub, FORWARD_TIMEOUT + MAX_WAIT).await.map_err(|e| e.to_string()),
        None => Err(format!("broker {leader} has not registered an endpoint")),
    };
    match answered {
        Ok(resp) => {
            for t in resp.replica_election_results {
                for p in t.partition_result {
                    outcomes.insert((t.topic.to_string(), p.partition_id), (p.error_code, p.error_message.map(|m| m.to_string())));
                }
            }
        }
        Err(e) => {
            debug!(leader, error = %e, "cannot forward ElectLeaders to the partition leader");
            for tp in partitions {
                outcomes.insert(tp, (codes::NOT_LEADER_OR_FOLLOWER, Some(format!("leader {leader} is not reachable from here: {e}"))));
            }
        }
    }
}

fn answer(outcomes: BTreeMap<(String, i32), Outcome>) -> ElectLeadersResponse {
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, partition), (code, message)) in outcomes {
        by_topic.entry(topic).or_default().push(
            PartitionResult::default().with_partition_id(partition).with_error_code(code).with_error_message(message.map(str_bytes)),
        );
    }
    let results = by_topic
        .into_iter()
        .map(|(t, ps)| ReplicaElectionResult::default().with_topic(TopicName(str_bytes(t))).with_partition_result(ps))
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// Every named partition refused with `code` (the caller may not ALTER the cluster).
pub fn refused(req: &ElectLeadersRequest, code: i16) -> ElectLeadersResponse {
    let outcomes = req
        .topic_partitions
        .iter()
        .flatten()
        .flat_map(|t| t.partitions.iter().map(|p| ((t.topic.to_string(), *p), (code, None))))
        .collect();
    answer(outcomes).with_error_code(code)
}
