//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs for topics.
//! Broker configs are described read-only: they come from the config file.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::codes;
use crate::server::Context;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;

fn entry(name: &str, value: String, source: i8, read_only: bool, doc: Option<&str>) -> DescribeConfigsResourceResult {
    let config_type = if value.parse::<i64>().is_ok() {
        TYPE_LONG
    } else if value.parse::<f64>().is_ok() {
        TYPE_DOUBLE
    } else {
        TYPE_STRING
    };
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_read_only(read_only)
        .with_config_source(source)
        .with_config_type(config_type)
        .with_documentation(doc.map(str_bytes))
}

fn java_double(v: f64) -> String {
    if v == f64::MAX {
        "1.7976931348623157E308".to_string()
    } else {
        format!("{v:?}")
    }
}

pub fn describe(ctx: &Context, req: DescribeConfigsRequest, _version: i16) -> DescribeConfigsResponse {
    let mut results = Vec::new();
    for r in req.resources {
        let wanted: Option<Vec<String>> = r.configuration_keys.map(|k| k.iter().map(|s| s.to_string()).collect());
        let keep = |name: &str| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == name));
        let base = DescribeConfigsResult::default().with_resource_type(r.resource_type).with_resource_name(r.resource_name.clone());
        let result = match r.resource_type {
            _ if let Some(code) = crate::acl::checks::configs(ctx, r.resource_type, r.resource_name.as_str(), crate::acl::Op::DescribeConfigs) => {
                base.with_error_code(code)
            }
            RESOURCE_TOPIC => match ctx.engine.topic(r.resource_name.as_str()) {
                None => base.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION).with_error_message(Some(str_bytes("unknown topic"))),
                Some(topic) => {
                    let configs = topic
                        .config
                        .read()
                        .describe()
                        .into_iter()
                        .filter(|(n, _, _)| keep(n))
                        .map(|(n, v, explicit)| {
                            let doc = ferry_broker::TOPIC_CONFIGS.iter().find(|s| s.name == n).map(|s| s.doc);
                            entry(n, v, if explicit { SOURCE_DYNAMIC_TOPIC } else { SOURCE_DEFAULT }, false, if req.include_documentation { doc } else { None })
                        })
                        .collect();
                    base.with_configs(configs)
                }
            },
            RESOURCE_BROKER => {
                let e = &ctx.engine.config;
                let c = &ctx.config;
                let all = [
                    ("auto.create.topics.enable", e.auto_create_topics_enable.to_string()),
                    ("num.partitions", e.num_partitions.to_string()),
                    ("node.id", e.node_id.to_string()),
                    ("max.connections", c.max_connections.to_string()),
                    ("max.connections.per.ip", c.max_connections_per_ip.default.min(i32::MAX as usize).to_string()),
                    ("socket.request.max.bytes", c.socket_request_max_bytes.to_string()),
                    ("fetch.max.bytes", c.fetch_max_bytes.to_string()),
                    ("connections.max.idle.ms", c.connections_max_idle_ms.to_string()),
                    ("log.cleaner.enable", e.cleaner.enable.to_string()),
                    ("log.cleaner.backoff.ms", e.cleaner.backoff_ms.to_string()),
                    // Java's Double.toString form, as Kafka shows its default.
                    ("log.cleaner.io.max.bytes.per.second", java_double(e.cleaner.io_max_bytes_per_second)),
                    ("log.cleaner.dedupe.buffer.size", e.cleaner.dedupe_buffer_size.to_string()),
                ];
                base.with_configs(all.into_iter().filter(|(n, _)| keep(n)).map(|(n, v)| entry(n, v, SOURCE_STATIC_BROKER, true, None)).collect())
            }
            other => base.with_error_code(codes::INVALID_REQUEST).with_error_message(Some(str_bytes(format!("resource type {other} is not supported")))),
        };
        results.push(result);
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// A refusal of a config change: a Kafka error code and its message.
type Refusal = (i16, String);

/// Applies a new explicit config set to a topic; returns (code, message).
async fn set_configs(ctx: &Context, resource_type: i8, name: &StrBytes, build: impl FnOnce(BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Refusal>, validate_only: bool) -> (i16, Option<String>) {
    if let Some(code) = crate::acl::checks::configs(ctx, resource_type, name.as_str(), crate::acl::Op::AlterConfigs) {
        return (code, None);
    }
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => return (codes::INVALID_CONFIG, Some("broker configs are static: set them in the config file or flags".into())),
        other => return (codes::INVALID_REQUEST, Some(format!("resource type {other} is not supported"))),
    }
    let Some(topic) = ctx.engine.topic(name.as_str()) else {
        return (codes::UNKNOWN_TOPIC_OR_PARTITION, Some("unknown topic".into()));
    };
    let current = topic.config.read().overrides.clone();
    let next = match build(current) {
        Ok(n) => n,
        Err((code, msg)) => return (code, Some(msg)),
    };
    match ctx.engine.set_topic_configs(name.as_str(), next, validate_only).await {
        Ok(()) => (codes::NONE, None),
        Err(e) => (codes::for_engine_error(&e), Some(e.to_string())),
    }
}

pub async fn alter(ctx: &Context, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        // AlterConfigs replaces the whole set of explicit configs.
        let replacement: BTreeMap<String, String> =
            r.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string()))).collect();
        let (code, msg) = set_configs(ctx, r.resource_type, &r.resource_name, |_| Ok(replacement), req.validate_only).await;
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(msg.map(str_bytes)),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// IncrementalAlterConfigs' operations on a topic's explicit configs, as
/// Kafka applies them: APPEND adds the values a list config lacks, SUBTRACT
/// removes values, both starting from the default when the topic has no
/// value of its own; on other configs they are an invalid request.
fn apply_incremental(mut current: BTreeMap<String, String>, ops: Vec<(String, i8, Option<String>)>) -> Result<BTreeMap<String, String>, Refusal> {
    for (name, op, value) in ops {
        let invalid = |msg: String| (codes::INVALID_CONFIG, msg);
        match (op, value) {
            (OP_SET, Some(v)) => {
                current.insert(name, v);
            }
            (OP_SET, None) => return Err(invalid(format!("SET of {name} needs a value"))),
            (OP_DELETE, _) => {
                current.remove(&name);
            }
            (OP_APPEND | OP_SUBTRACT, _) if !ferry_broker::LIST_CONFIGS.contains(&name.as_str()) => {
                return Err((codes::INVALID_REQUEST, format!("{name} is not a list config: APPEND and SUBTRACT do not apply")));
            }
            (OP_APPEND | OP_SUBTRACT, None) => return Err(invalid(format!("APPEND or SUBTRACT of {name} needs a value"))),
            (op, Some(v)) if op == OP_APPEND || op == OP_SUBTRACT => {
                let old = current.get(&name).map(String::as_str).or(ferry_broker::default_of(&name)).unwrap_or("");
                let mut list: Vec<&str> = old.split(',').filter(|x| !x.is_empty()).collect();
                let given = v.split(',').map(str::trim).filter(|x| !x.is_empty());
                if op == OP_APPEND {
                    for x in given {
                        if !list.contains(&x) {
                            list.push(x);
                        }
                    }
                } else {
                    let removed: Vec<&str> = given.collect();
                    list.retain(|x| !removed.contains(x));
                }
                let joined = list.join(",");
                current.insert(name, joined);
            }
            (other, _) => return Err((codes::INVALID_REQUEST, format!("unknown config operation {other}"))),
        }
    }
    Ok(current)
}

/// Broker configs are static, so no dynamic one is ever set: deleting one
/// (kafka-reassign-partitions.sh --verify clears the replication throttles)
/// finds nothing to delete, which Kafka answers with success too.
fn delete_broker_configs(ctx: &Context, name: &StrBytes) -> (i16, Option<String>) {
    match crate::acl::checks::configs(ctx, RESOURCE_BROKER, name.as_str(), crate::acl::Op::AlterConfigs) {
        Some(code) => (code, None),
        None => (codes::NONE, None),
    }
}

pub async fn incremental_alter(ctx: &Context, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let ops: Vec<(String, i8, Option<String>)> =
            r.configs.iter().map(|c| (c.name.to_string(), c.config_operation, c.value.as_ref().map(|v| v.to_string()))).collect();
        let (code, msg) = if r.resource_type == RESOURCE_BROKER && !ops.is_empty() && ops.iter().all(|(_, op, _)| *op == OP_DELETE) {
            delete_broker_configs(ctx, &r.resource_name)
        } else {
            let build = move |current: BTreeMap<String, String>| apply_incremental(current, ops);
            set_configs(ctx, r.resource_type, &r.resource_name, build, req.validate_only).await
        };
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(msg.map(str_bytes)),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(list: &[(&str, i8, &str)]) -> Vec<(String, i8, Option<String>)> {
        list.iter().map(|(n, op, v)| (n.to_string(), *op, Some(v.to_string()))).collect()
    }

    #[test]
    fn append_and_subtract_start_from_the_default_and_keep_order() {
        let next = apply_incremental(BTreeMap::new(), ops(&[("cleanup.policy", OP_APPEND, "compact")])).unwrap();
        assert_eq!(next["cleanup.policy"], "delete,compact");
        let next = apply_incremental(next, ops(&[("cleanup.policy", OP_APPEND, "compact,delete")])).unwrap();
        assert_eq!(next["cleanup.policy"], "delete,compact", "values already there are not added twice");
        let next = apply_incremental(next, ops(&[("cleanup.policy", OP_SUBTRACT, "delete")])).unwrap();
        assert_eq!(next["cleanup.policy"], "compact");
        let fresh = apply_incremental(BTreeMap::new(), ops(&[("cleanup.policy", OP_SUBTRACT, "delete")])).unwrap();
        assert_eq!(fresh["cleanup.policy"], "", "an emptied list is left for validation to judge");
    }

    #[test]
    fn append_on_a_scalar_config_is_an_invalid_request() {
        let err = apply_incremental(BTreeMap::new(), ops(&[("retention.ms", OP_APPEND, "5")])).unwrap_err();
        assert_eq!(err.0, codes::INVALID_REQUEST);
        let err = apply_incremental(BTreeMap::new(), ops(&[("retention.ms", 9, "5")])).unwrap_err();
        assert_eq!(err.0, codes::INVALID_REQUEST);
    }
}
