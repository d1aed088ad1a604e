//! FindCoordinator and the classic consumer group APIs, over the engine's
//! group coordinator. Offset commits are answered only once fsynced.

use std::collections::HashSet;

use ferry_broker::group::{CommittedOffset, JoinRequest, SyncRequest};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::codes;
use crate::server::Context;

fn opt(s: Option<String>) -> Option<StrBytes> {
    s.map(str_bytes)
}

pub fn find_coordinator(ctx: &Context, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let (node, host, port, found) = match crate::cluster::coordinator(ctx) {
        Some((id, host, port)) => (BrokerId(id), str_bytes(host), port, true),
        None => (BrokerId(-1), str_bytes(""), -1, false),
    };
    let supported = matches!(req.key_type, 0 | 1);
    let code = match (supported, found) {
        (false, _) => codes::INVALID_REQUEST,
        (true, false) => codes::COORDINATOR_NOT_AVAILABLE,
        (true, true) => codes::NONE,
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| Coordinator::default().with_key(key).with_node_id(node).with_host(host.clone()).with_port(port).with_error_code(code))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default().with_error_code(code).with_node_id(node).with_host(host).with_port(port)
}

pub async fn join_group(ctx: &Context, req: JoinGroupRequest, version: i16, client_id: String, client_host: String) -> JoinGroupResponse {
    let rebalance_timeout_ms = if version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms };
    let rx = ctx.engine.groups.join(JoinRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms,
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        client_id,
        client_host,
        require_known_member_id: version >= 4,
    });
    let answer = match rx.await {
        Ok(a) => a,
        Err(_) => return JoinGroupResponse::default().with_error_code(codes::COORDINATOR_NOT_AVAILABLE).with_generation_id(-1),
    };
    JoinGroupResponse::default()
        .with_error_code(answer.error.as_ref().map_or(codes::NONE, codes::for_group_error))
        .with_generation_id(answer.generation_id)
        .with_protocol_type(opt(answer.protocol_type))
        .with_protocol_name(opt(answer.protocol_name))
        .with_leader(str_bytes(answer.leader))
        .with_member_id(str_bytes(answer.member_id))
        .with_skip_assignment(answer.skip_assignment && version >= 9)
        .with_members(
            answer
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_group_instance_id(opt(m.group_instance_id))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

pub async fn sync_group(ctx: &Context, req: SyncGroupRequest) -> SyncGroupResponse {
    let rx = ctx.engine.groups.sync(SyncRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
    });
    match rx.await {
        Ok(a) => SyncGroupResponse::default()
            .with_error_code(a.error.as_ref().map_or(codes::NONE, codes::for_group_error))
            .with_protocol_type(opt(a.protocol_type))
            .with_protocol_name(opt(a.protocol_name))
            .with_assignment(a.assignment),
        Err(_) => SyncGroupResponse::default().with_error_code(codes::COORDINATOR_NOT_AVAILABLE),
    }
}

pub fn heartbeat(ctx: &Context, req: HeartbeatRequest) -> HeartbeatResponse {
    let r = ctx.engine.groups.heartbeat(
        req.group_id.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
    );
    HeartbeatResponse::default().with_error_code(codes::group_code(&r))
}

pub fn leave_group(ctx: &Context, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string()))).collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    match ctx.engine.groups.leave(req.group_id.as_str(), &members) {
        Err(e) => LeaveGroupResponse::default().with_error_code(codes::for_group_error(&e)),
        Ok(results) if version >= 3 => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((id, instance), r)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(opt(instance))
                        .with_error_code(codes::group_code(&r))
                })
                .collect(),
        ),
        Ok(results) => LeaveGroupResponse::default().with_error_code(results.first().map_or(codes::NONE, codes::group_code)),
    }
}

pub async fn offset_commit(ctx: &Context, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.to_string();
    let check = ctx.engine.groups.check_commit(
        &group_id,
        req.generation_id_or_member_epoch,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
    );
    let now = ferry_broker::now_ms();
    let max_metadata = ctx.engine.groups.config().offset_metadata_max_bytes;
    // Per partition: Ok(commit) or Err(code).
    let mut plan: Vec<(TopicName, Vec<(i32, Result<CommittedOffset, i16>)>)> = Vec::new();
    let mut commits = Vec::new();
    for t in req.topics {
        let topic = ctx.engine.topic(t.name.as_str());
        let readable = crate::acl::topic(ctx, crate::acl::Op::Read, t.name.as_str());
        let mut parts = Vec::new();
        for p in t.partitions {
            let outcome = if let Err(e) = &check {
                Err(codes::for_group_error(e))
            } else if !readable {
                Err(codes::TOPIC_AUTHORIZATION_FAILED)
            } else if topic.as_ref().and_then(|tp| tp.partition(p.partition_index)).is_none() {
                Err(codes::UNKNOWN_TOPIC_OR_PARTITION)
            } else if p.committed_metadata.as_ref().is_some_and(|m| m.len() > max_metadata) {
                Err(codes::OFFSET_METADATA_TOO_LARGE)
            } else {
                let value = CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.map(|m| m.to_string()),
                    commit_ms: now,
                };
                commits.push(((t.name.to_string(), p.partition_index), value.clone()));
                Ok(value)
            };
            parts.push((p.partition_index, outcome));
        }
        plan.push((t.name, parts));
    }
    // Durable before answered.
    let persisted = ctx.engine.groups.offsets.commit(&group_id, commits).await;
    let storage_code = persisted.as_ref().err().map(|_| codes::COORDINATOR_NOT_AVAILABLE);
    let topics = plan
        .into_iter()
        .map(|(name, parts)| {
            OffsetCommitResponseTopic::default().with_name(name).with_partitions(
                parts
                    .into_iter()
                    .map(|(index, outcome)| {
                        let code = match outcome {
                            Ok(_) => storage_code.unwrap_or(codes::NONE),
                            Err(c) => c,
                        };
                        OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's committed offsets for the requested topics (None: all).
/// Rows of (partition, offset, leader epoch, metadata, error code). With
/// `require_stable`, a partition whose offset waits on an open transaction
/// answers UNSTABLE_OFFSET_COMMIT so the consumer retries.
type OffsetRow = (i32, i64, i32, Option<String>, i16);

fn fetch_group_offsets(ctx: &Context, group: &str, topics: Option<Vec<(String, Vec<i32>)>>, require_stable: bool) -> Vec<(String, Vec<OffsetRow>)> {
    let committed = ctx.engine.groups.offsets.get(group);
    let unstable = if require_stable { ctx.engine.txns.pending_offsets(group) } else { Default::default() };
    let code = |t: &str, p: i32| if unstable.contains(&(t.to_string(), p)) { codes::UNSTABLE_OFFSET_COMMIT } else { codes::NONE };
    match topics {
        Some(list) => list
            .into_iter()
            .map(|(topic, parts)| {
                let rows = parts
                    .into_iter()
                    .map(|p| match committed.get(&(topic.clone(), p)) {
                        Some(c) => (p, c.offset, c.leader_epoch, c.metadata.clone(), code(&topic, p)),
                        None => (p, -1, -1, None, code(&topic, p)),
                    })
                    .collect();
                (topic, rows)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<OffsetRow>> = Default::default();
            for ((topic, p), c) in committed {
                let e = code(&topic, p);
                by_topic.entry(topic).or_default().push((p, c.offset, c.leader_epoch, c.metadata, e));
            }
            by_topic.into_iter().collect()
        }
    }
}

pub fn offset_fetch(ctx: &Context, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
                let rows = fetch_group_offsets(ctx, g.group_id.as_str(), topics, req.require_stable);
                OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_topics(
                    rows.into_iter()
                        .map(|(topic, parts)| {
                            OffsetFetchResponseTopics::default().with_name(TopicName(str_bytes(topic))).with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, offset, epoch, metadata, error)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_error_code(error)
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(metadata.unwrap_or_default())))
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
    let rows = fetch_group_offsets(ctx, req.group_id.as_str(), topics, version >= 7 && req.require_stable);
    OffsetFetchResponse::default().with_topics(
        rows.into_iter()
            .map(|(topic, parts)| {
                OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(topic))).with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, offset, epoch, metadata, error)| {
                            OffsetFetchResponsePartition::default()
                                .with_error_code(error)
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(str_bytes(metadata.unwrap_or_default())))
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

pub async fn offset_delete(ctx: &Context, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.to_string();
    if !ctx.engine.groups.group_exists(&group) {
        return OffsetDeleteResponse::default().with_error_code(codes::GROUP_ID_NOT_FOUND);
    }
    let subscribed: HashSet<String> = ctx.engine.groups.subscribed_topics(&group).unwrap_or_default().into_iter().collect();
    let mut keys = Vec::new();
    let topics: Vec<OffsetDeleteResponseTopic> = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.to_string();
            let code = if subscribed.contains(&name) { codes::GROUP_SUBSCRIBED_TO_TOPIC } else { codes::NONE };
            let parts = t
                .partitions
                .into_iter()
                .map(|p| {
                    if code == codes::NONE {
                        keys.push((name.clone(), p.partition_index));
                    }
                    OffsetDeleteResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(parts)
        })
        .collect();
    if let Err(e) = ctx.engine.groups.offsets.delete(&group, keys).await {
        tracing::warn!(group = %group, error = %e, "offset delete failed");
        return OffsetDeleteResponse::default().with_error_code(codes::COORDINATOR_NOT_AVAILABLE);
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

pub fn list_groups(ctx: &Context, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = ctx
        .engine
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.kafka_name().to_lowercase()))
        .filter(|(id, _, _)| crate::acl::group(ctx, crate::acl::Op::Describe, id))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type))
                .with_group_state(str_bytes(state.kafka_name()))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe_groups(ctx: &Context, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let operations = crate::authorized::if_requested(req.include_authorized_operations, crate::authorized::group);
    let groups = req
        .groups
        .into_iter()
        .map(|id| match ctx.engine.groups.describe(id.as_str()) {
            _ if !crate::acl::group(ctx, crate::acl::Op::Describe, &id) => {
                DescribedGroup::default().with_group_id(id).with_error_code(codes::GROUP_AUTHORIZATION_FAILED).with_authorized_operations(crate::authorized::NOT_REQUESTED)
            }
            None => DescribedGroup::default().with_group_id(id).with_group_state(str_bytes("Dead")).with_authorized_operations(crate::authorized::NOT_REQUESTED),
            Some(d) => DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(str_bytes(d.state.kafka_name()))
                .with_protocol_type(str_bytes(d.protocol_type))
                .with_protocol_data(str_bytes(d.protocol_name))
                .with_authorized_operations(crate::authorized::narrow_group(ctx, &d.group_id, operations))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(opt(m.group_instance_id))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(ctx: &Context, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for id in req.groups_names {
        if !crate::acl::group(ctx, crate::acl::Op::Delete, &id) {
            results.push(
                kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(codes::GROUP_AUTHORIZATION_FAILED),
            );
            continue;
        }
        let r = ctx.engine.groups.delete_group(id.as_str()).await;
        results.push(
            kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(codes::group_code(&r)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
