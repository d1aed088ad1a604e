//! CreateTopics, DeleteTopics, CreatePartitions.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, TopicName,
};

use super::str_bytes;
use crate::codes;
use crate::server::Context;

pub async fn create_topics(ctx: &Context, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> =
        req.topics.iter().map(|t| t.name.to_string()).filter(|n| !seen.insert(n.clone())).collect();
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.to_string();
        let result = CreatableTopicResult::default().with_name(t.name.clone()).with_num_partitions(-1).with_replication_factor(-1);
        let fail = |code: i16, msg: String| result.clone().with_error_code(code).with_error_message(Some(str_bytes(msg)));
        if duplicates.contains(&name) {
            results.push(fail(codes::INVALID_REQUEST, format!("topic {name} appears more than once in the request")));
            continue;
        }
        if !crate::acl::create_topic(ctx, &name) {
            results.push(fail(codes::TOPIC_AUTHORIZATION_FAILED, format!("Topic authorization failed: CREATE {name}")));
            continue;
        }
        if let Some(cluster) = &ctx.cluster {
            results.push(create_in_cluster(ctx, cluster, t, result, req.validate_only, version).await);
            continue;
        }
        if t.replication_factor != -1 && t.replication_factor != 1 {
            results.push(fail(
                codes::INVALID_REPLICATION_FACTOR,
                format!("replication factor {} is not possible on a single-node broker; use 1", t.replication_factor),
            ));
            continue;
        }
        let node = ctx.engine.config.node_id;
        if t.assignments.iter().any(|a| a.broker_ids.iter().any(|b| b.0 != node) || a.broker_ids.len() != 1) {
            results.push(fail(codes::INVALID_REPLICA_ASSIGNMENT, format!("replicas must be exactly [{node}]")));
            continue;
        }
        let partitions = if !t.assignments.is_empty() {
            t.assignments.len() as i32
        } else if t.num_partitions == -1 {
            ctx.engine.config.num_partitions
        } else {
            t.num_partitions
        };
        let configs: BTreeMap<String, String> =
            t.configs.into_iter().filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string()))).collect();
        match ctx.engine.create_topic(&name, partitions, configs, req.validate_only).await {
            Ok(topic) => {
                let mut ok = result.with_topic_id(topic.id).with_num_partitions(partitions).with_replication_factor(1);
                if version >= 5 {
                    ok = ok.with_configs(Some(created_configs(&topic.config.read())));
                }
                results.push(ok);
            }
            Err(e) => results.push(fail(codes::for_engine_error(&e), e.to_string())),
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics(ctx: &Context, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or id.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics.into_iter().map(|t| (t.name.map(|n| n.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n.to_string()), uuid::Uuid::nil())).collect()
    };
    let mut responses = Vec::new();
    for (name, id) in targets {
        let name = match name {
            Some(n) => Some(n),
            None => match &ctx.cluster {
                Some(c) => c.state().topics.iter().find(|(_, t)| t.id == id).map(|(n, _)| n.clone()),
                None => ctx.engine.topic_by_id(id).map(|t| t.name.clone()),
            },
        };
        let base = DeletableTopicResult::default().with_name(name.clone().map(|n| TopicName(str_bytes(n)))).with_topic_id(id);
        let Some(name) = name else {
            responses.push(base.with_error_code(codes::UNKNOWN_TOPIC_ID));
            continue;
        };
        if !crate::acl::topic(ctx, crate::acl::Op::Delete, &name) {
            responses.push(base.with_error_code(codes::TOPIC_AUTHORIZATION_FAILED));
            continue;
        }
        if let Some(cluster) = &ctx.cluster {
            let id = cluster.state().topics.get(&name).map(|t| t.id).unwrap_or(id);
            match crate::cluster::propose(cluster, ferry_cluster::Command::DeleteTopic { name }).await {
                Ok(()) => responses.push(base.with_topic_id(id)),
                Err((code, msg)) => responses.push(base.with_error_code(code).with_error_message(Some(str_bytes(msg)))),
            }
            continue;
        }
        match ctx.engine.delete_topic(&name).await {
            Ok(id) => responses.push(base.with_topic_id(id)),
            Err(e) => responses.push(base.with_error_code(codes::for_engine_error(&e)).with_error_message(Some(str_bytes(e.to_string())))),
        }
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(ctx: &Context, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let base = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome = match (&ctx.cluster, &t.assignments) {
            _ if !crate::acl::topic(ctx, crate::acl::Op::Alter, &t.name) => Err((codes::TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed: ALTER".to_string())),
            (Some(_), Some(_)) => Err((codes::INVALID_REPLICA_ASSIGNMENT, "manual replica assignment is not supported on a cluster yet".to_string())),
            (Some(_), None) if req.validate_only => Ok(()),
            (Some(cluster), None) => {
                crate::cluster::propose(cluster, ferry_cluster::Command::CreatePartitions { name: t.name.to_string(), count: t.count }).await
            }
            (None, a) => match a {
            Some(a) if a.iter().any(|x| x.broker_ids.len() != 1 || x.broker_ids[0].0 != ctx.engine.config.node_id) => {
                Err((codes::INVALID_REPLICA_ASSIGNMENT, "replicas must be exactly this broker".to_string()))
            }
            _ => ctx
                .engine
                .create_partitions(t.name.as_str(), t.count, req.validate_only)
                .await
                .map_err(|e| (codes::for_engine_error(&e), e.to_string())),
            },
        };
        results.push(match outcome {
            Ok(()) => base,
            Err((code, msg)) => base.with_error_code(code).with_error_message(Some(str_bytes(msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// CreateTopics on a cluster: checked here, placed and recorded by the
/// metadata group, created on each broker by its reconciler.
async fn create_in_cluster(
    ctx: &Context,
    cluster: &ferry_cluster::Cluster,
    t: kafka_protocol::messages::create_topics_request::CreatableTopic,
    result: CreatableTopicResult,
    validate_only: bool,
    version: i16,
) -> CreatableTopicResult {
    let name = t.name.to_string();
    let fail = |code: i16, msg: String| result.clone().with_error_code(code).with_error_message(Some(str_bytes(msg)));
    if !t.assignments.is_empty() {
        return fail(codes::INVALID_REPLICA_ASSIGNMENT, "manual replica assignment is not supported on a cluster yet".into());
    }
    let partitions = if t.num_partitions == -1 { ctx.engine.config.num_partitions } else { t.num_partitions };
    let factor = if t.replication_factor == -1 { ctx.config.default_replication_factor } else { t.replication_factor };
    let brokers = cluster.config().voters.len();
    if factor < 1 || factor as usize > brokers {
        return fail(codes::INVALID_REPLICATION_FACTOR, format!("replication factor {factor} is not within 1..={brokers} (brokers)"));
    }
    if partitions < 1 || partitions > ctx.engine.config.max_partitions_per_topic {
        let max = ctx.engine.config.max_partitions_per_topic;
        return fail(codes::INVALID_PARTITIONS, format!("{partitions} partitions requested; allowed 1..={max}"));
    }
    let configs: BTreeMap<String, String> = t.configs.into_iter().filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string()))).collect();
    if let Err(e) = ferry_broker::validate_topic_name(&name) {
        return fail(codes::for_engine_error(&e), e.to_string());
    }
    let config = match ferry_broker::TopicConfig::from_overrides(configs.clone()) {
        Ok(c) => c,
        Err(e) => return fail(codes::for_engine_error(&e), e.to_string()),
    };
    let id = if validate_only {
        if cluster.state().topics.contains_key(&name) {
            return fail(codes::TOPIC_ALREADY_EXISTS, format!("topic {name} already exists"));
        }
        uuid::Uuid::nil()
    } else {
        match crate::cluster::create_topic(cluster, &name, partitions, factor, configs).await {
            Ok(id) => id,
            Err((code, msg)) => return fail(code, msg),
        }
    };
    let mut ok = result.with_topic_id(id).with_num_partitions(partitions).with_replication_factor(factor);
    if version >= 5 {
        ok = ok.with_configs(Some(created_configs(&config)));
    }
    ok
}

/// A created topic's configs as CreateTopics v5+ reports them: source 1
/// (set on the topic) or 5 (the broker's default).
fn created_configs(config: &ferry_broker::TopicConfig) -> Vec<CreatableTopicConfigs> {
    config
        .describe()
        .into_iter()
        .map(|(n, v, explicit)| {
            CreatableTopicConfigs::default().with_name(str_bytes(n)).with_value(Some(str_bytes(v))).with_config_source(if explicit { 1 } else { 5 })
        })
        .collect()
}
