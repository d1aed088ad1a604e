//! Metadata under ACLs, as Kafka answers it: a topic the principal may not
//! DESCRIBE is left out of an all-topics answer and is
//! TOPIC_AUTHORIZATION_FAILED when named; a missing topic is created only
//! with CREATE (on the cluster or the topic), else UNKNOWN_TOPIC_OR_PARTITION;
//! authorized-operation fields are narrowed to what the principal may do.
//! Done around the handler, so metadata.rs stays as it is.

use std::collections::HashSet;

use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};

use super::Op;
use crate::authorized::{self, NOT_REQUESTED};
use crate::codes::{TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PARTITION};
use crate::handlers::str_bytes;
use crate::server::Context;

/// What the request screen took out, for the answer.
#[derive(Debug, Default)]
pub struct Screened {
    /// Named topics kept in the request; None when all topics were asked.
    kept: Option<HashSet<String>>,
    /// Named topics answered here, with their error.
    refused: Vec<(String, i16)>,
    version: i16,
}

fn exists(ctx: &Context, name: &str) -> bool {
    match &ctx.cluster {
        Some(c) => c.state().topics.contains_key(name),
        None => ctx.engine.topic(name).is_some(),
    }
}

/// Takes out of the request the named topics the principal may not see,
/// and the missing ones it may not create.
pub fn screen_request(ctx: &Context, mut req: MetadataRequest, version: i16) -> (MetadataRequest, Screened) {
    let mut screened = Screened { version, ..Screened::default() };
    let all = req.topics.as_ref().is_none_or(|t| t.is_empty() && version == 0);
    if !super::enabled(ctx) || all {
        return (req, screened);
    }
    let mut kept = HashSet::new();
    if let Some(topics) = req.topics.as_mut() {
        topics.retain(|t| {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else { return true };
            let refusal = if !super::topic(ctx, Op::Describe, &name) {
                Some(TOPIC_AUTHORIZATION_FAILED)
            } else if !exists(ctx, &name) && !super::create_topic(ctx, &name) {
                Some(UNKNOWN_TOPIC_OR_PARTITION)
            } else {
                None
            };
            match refusal {
                Some(code) => screened.refused.push((name, code)),
                None => {
                    kept.insert(name);
                }
            }
            refusal.is_none()
        });
    }
    screened.kept = Some(kept);
    (req, screened)
}

fn refused(name: String, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default().with_name(Some(TopicName(str_bytes(name)))).with_error_code(code).with_topic_authorized_operations(NOT_REQUESTED)
}

/// Hides or refuses what the principal may not describe, adds the
/// refusals of the request screen, narrows authorized operations.
pub fn screen_response(ctx: &Context, screened: Screened, mut resp: MetadataResponse) -> MetadataResponse {
    if !super::enabled(ctx) {
        return resp;
    }
    if resp.cluster_authorized_operations != NOT_REQUESTED {
        resp.cluster_authorized_operations = authorized::narrow_cluster(ctx, resp.cluster_authorized_operations);
    }
    let named = screened.kept.is_some();
    let mut topics = Vec::with_capacity(resp.topics.len() + screened.refused.len());
    for mut t in std::mem::take(&mut resp.topics) {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        // v0: a request whose every named topic was taken out reads as "all".
        if screened.version == 0 && screened.kept.as_ref().is_some_and(|k| !k.contains(&name)) {
            continue;
        }
        if !super::topic(ctx, Op::Describe, &name) {
            if named {
                topics.push(refused(name, TOPIC_AUTHORIZATION_FAILED));
            }
            continue;
        }
        if t.topic_authorized_operations != NOT_REQUESTED {
            t.topic_authorized_operations = authorized::narrow_topic(ctx, &name, t.topic_authorized_operations);
        }
        topics.push(t);
    }
    topics.extend(screened.refused.into_iter().map(|(name, code)| refused(name, code)));
    resp.topics = topics;
    resp
}
