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

/// Applies a new explicit config set to a topic; returns (code, message).
async fn set_configs(ctx: &Context, resource_type: i8, name: &StrBytes, build: impl FnOnce(BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>, validate_only: bool) -> (i16, Option<String>) {
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
        Err(msg) => return (codes::INVALID_CONFIG, Some(msg)),
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

pub async fn incremental_alter(ctx: &Context, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let ops: Vec<(String, i8, Option<String>)> =
            r.configs.iter().map(|c| (c.name.to_string(), c.config_operation, c.value.as_ref().map(|v| v.to_string()))).collect();
        let build = move |mut current: BTreeMap<String, String>| {
            for (name, op, value) in ops {
                match (op, value) {
                    (0, Some(v)) => {
                        current.insert(name, v);
                    }
                    (0, None) => return Err(format!("SET of {name} needs a value")),
                    (1, _) => {
                        current.remove(&name);
                    }
                    (2 | 3, _) => return Err(format!("{name} is not a list config; APPEND and SUBTRACT do not apply")),
                    (other, _) => return Err(format!("unknown config operation {other}")),
                }
            }
            Ok(current)
        };
        let (code, msg) = set_configs(ctx, r.resource_type, &r.resource_name, build, req.validate_only).await;
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
