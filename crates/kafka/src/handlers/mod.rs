//! One module per API family. `dispatch` routes a decoded request to its
//! handler and encodes the answer.

mod admin;
mod api_versions;
mod configs;
pub(crate) mod elect;
mod fetch;
pub(crate) use fetch::handle as fetch_handle;
mod groups;
mod leader_epoch;
mod list_offsets;
mod log_dirs;
pub(crate) mod markers;
mod metadata;
mod produce;
mod quorum;
mod quotas;
pub(crate) mod reassign;
mod txn;
mod users;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use tracing::error;

use crate::codec::{encode_response, HeaderPrefix};
use crate::metrics::WireMetrics;
use crate::server::Context;

/// What the connection writer does with a request's outcome.
#[derive(Debug)]
pub enum Reply {
    Send(Bytes),
    /// No answer (produce with acks=0).
    Nothing,
    /// Close the connection (acks=0 produce that failed: the only way to
    /// tell such a producer something went wrong, as Kafka does).
    Close(String),
}

/// Encodes an answer, with the request's quota throttle time when it has one.
fn encode(metrics: &Option<Arc<WireMetrics>>, api: ApiKey, version: i16, correlation_id: i32, mut body: ResponseKind, throttle_ms: u64) -> Reply {
    if throttle_ms > 0 {
        crate::quota::set_throttle(&mut body, throttle_ms);
    }
    if let Some(m) = metrics {
        m.count_errors(api, &body);
    }
    match encode_response(api, version, correlation_id, &body) {
        Ok(bytes) => Reply::Send(bytes),
        Err(e) => {
            error!(api = ?api, version, error = %e, "cannot encode response");
            Reply::Close(format!("cannot encode {api:?} v{version} response: {e}"))
        }
    }
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// A request's outcome as the connection sees it.
pub enum Dispatched {
    Ready(Reply),
    /// Work that only waits, its effects already applied (a fetch's long
    /// poll, acks=all's fsync after the append): run it concurrently with
    /// the next requests, answer in order.
    Waiting(ReplyFuture),
    /// Work whose effects happen inside it (an offset commit made durable
    /// and then visible, a transaction step, a join): run it concurrently,
    /// but handle no later request of the connection before it finished,
    /// so requests take effect in the order they were sent, as in Kafka.
    Ordered(ReplyFuture),
}

/// Handles one request. Runs in the connection's reader, so everything
/// that must happen in request order (appends, admin changes) happens here
/// or in an [`Dispatched::Ordered`] future the reader waits for.
/// `throttle_ms` is the quota throttle decided before handling (quota.rs);
/// a fetch may add its own.
pub async fn dispatch(ctx: &Context, peer: std::net::SocketAddr, header: RequestHeader, body: RequestKind, throttle_ms: u64) -> Dispatched {
    let version = header.request_api_version;
    let cid = header.correlation_id;
    let body = match crate::acl::checks::refuse(ctx, body) {
        Ok(body) => body,
        Err(refused) => {
            let api = ApiKey::try_from(header.request_api_key).unwrap_or(ApiKey::ApiVersions);
            return Dispatched::Ready(encode(&ctx.metrics, api, version, cid, *refused, throttle_ms));
        }
    };
    let (api, response): (ApiKey, ResponseKind) = match body {
        RequestKind::Produce(r) => {
            let started = Instant::now();
            let metrics = ctx.metrics.clone();
            let latency = metrics.as_ref().and_then(|m| m.produce_latency(r.acks).cloned());
            let refused = markers::verify_transactional(ctx, &r).await;
            let appended = produce::append(ctx, r, version, &refused);
            return Dispatched::Waiting(Box::pin(async move {
                let reply = match produce::finish(appended).await {
                    produce::Outcome::Respond(resp) => encode(&metrics, ApiKey::Produce, version, cid, resp.into(), throttle_ms),
                    produce::Outcome::Silent => Reply::Nothing,
                    produce::Outcome::Close(reason) => Reply::Close(reason),
                };
                if let Some(h) = latency {
                    h.observe(started.elapsed().as_secs_f64());
                }
                reply
            }));
        }
        RequestKind::Fetch(r) => {
            let ctx = ctx.clone();
            // Only a fetch under a quota needs its client id.
            let quota = ctx.quotas.as_ref().is_some_and(|q| q.is_active(ferry_auth::quota::Enforced::Fetch));
            let client_id = header.client_id.as_ref().filter(|_| quota).map(|c| c.to_string()).unwrap_or_default();
            return Dispatched::Waiting(Box::pin(async move {
                let (resp, fetch_throttle) = crate::quota::fetch(&ctx, r, version, &client_id).await;
                encode(&ctx.metrics, ApiKey::Fetch, version, cid, resp.into(), throttle_ms.max(fetch_throttle))
            }));
        }
        RequestKind::JoinGroup(r) => {
            let ctx = ctx.clone();
            let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
            let client_host = format!("/{}", peer.ip());
            return Dispatched::Ordered(Box::pin(async move {
                let resp = groups::join_group(&ctx, r, version, client_id, client_host).await;
                encode(&ctx.metrics, ApiKey::JoinGroup, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::SyncGroup(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = groups::sync_group(&ctx, r).await;
                encode(&ctx.metrics, ApiKey::SyncGroup, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::OffsetCommit(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = groups::offset_commit(&ctx, r).await;
                encode(&ctx.metrics, ApiKey::OffsetCommit, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::InitProducerId(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = txn::init_producer_id(&ctx, r, version).await;
                encode(&ctx.metrics, ApiKey::InitProducerId, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::AddPartitionsToTxn(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = txn::add_partitions(&ctx, r, version).await;
                encode(&ctx.metrics, ApiKey::AddPartitionsToTxn, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = txn::add_offsets(&ctx, r, version).await;
                encode(&ctx.metrics, ApiKey::AddOffsetsToTxn, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::TxnOffsetCommit(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = txn::txn_offset_commit(&ctx, r, version).await;
                encode(&ctx.metrics, ApiKey::TxnOffsetCommit, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::EndTxn(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = txn::end_txn(&ctx, r, version).await;
                encode(&ctx.metrics, ApiKey::EndTxn, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::WriteTxnMarkers(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = markers::write_txn_markers(&ctx, r).await;
                encode(&ctx.metrics, ApiKey::WriteTxnMarkers, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::DeleteRecords(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = log_dirs::delete_records(&ctx, r).await;
                encode(&ctx.metrics, ApiKey::DeleteRecords, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::CreateAcls(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = crate::acl::apis::create(&ctx, r).await;
                encode(&ctx.metrics, ApiKey::CreateAcls, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::DeleteAcls(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = crate::acl::apis::delete(&ctx, r).await;
                encode(&ctx.metrics, ApiKey::DeleteAcls, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::DescribeAcls(r) => (ApiKey::DescribeAcls, crate::acl::apis::describe(ctx, r).into()),
        RequestKind::AlterUserScramCredentials(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = users::alter(&ctx, r).await;
                encode(&ctx.metrics, ApiKey::AlterUserScramCredentials, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::AlterClientQuotas(r) => {
            let ctx = ctx.clone();
            return Dispatched::Ordered(Box::pin(async move {
                let resp = quotas::alter(&ctx, r).await;
                encode(&ctx.metrics, ApiKey::AlterClientQuotas, version, cid, resp.into(), throttle_ms)
            }));
        }
        RequestKind::DescribeClientQuotas(r) => (ApiKey::DescribeClientQuotas, quotas::describe(ctx, r).into()),
        RequestKind::DescribeUserScramCredentials(r) => (ApiKey::DescribeUserScramCredentials, users::describe(ctx, r).into()),
        // Authenticated already, or a listener without SASL (sasl.rs screens the others).
        RequestKind::SaslHandshake(_) => (ApiKey::SaslHandshake, crate::sasl::illegal_state(ApiKey::SaslHandshake)),
        RequestKind::SaslAuthenticate(_) => (ApiKey::SaslAuthenticate, crate::sasl::illegal_state(ApiKey::SaslAuthenticate)),
        RequestKind::DescribeLogDirs(r) => (ApiKey::DescribeLogDirs, log_dirs::describe_log_dirs(ctx, r).into()),
        RequestKind::DescribeTransactions(r) => (ApiKey::DescribeTransactions, txn::describe_transactions(ctx, r).await.into()),
        RequestKind::ListTransactions(r) => (ApiKey::ListTransactions, txn::list_transactions(ctx, r).await.into()),
        RequestKind::DescribeProducers(r) => (ApiKey::DescribeProducers, txn::describe_producers(ctx, r).into()),
        RequestKind::FindCoordinator(r) => (ApiKey::FindCoordinator, groups::find_coordinator(ctx, r, version).into()),
        RequestKind::Heartbeat(r) => (ApiKey::Heartbeat, groups::heartbeat(ctx, r).into()),
        RequestKind::LeaveGroup(r) => (ApiKey::LeaveGroup, groups::leave_group(ctx, r, version).into()),
        RequestKind::OffsetFetch(r) => (ApiKey::OffsetFetch, groups::offset_fetch(ctx, r, version).into()),
        RequestKind::OffsetDelete(r) => (ApiKey::OffsetDelete, groups::offset_delete(ctx, r).await.into()),
        RequestKind::ListGroups(r) => (ApiKey::ListGroups, groups::list_groups(ctx, r).into()),
        RequestKind::DescribeGroups(r) => (ApiKey::DescribeGroups, groups::describe_groups(ctx, r).into()),
        RequestKind::DeleteGroups(r) => (ApiKey::DeleteGroups, groups::delete_groups(ctx, r).await.into()),
        RequestKind::ApiVersions(_) => (ApiKey::ApiVersions, api_versions::handle(api_versions::OK).into()),
        RequestKind::Metadata(r) => {
            let (r, screened) = crate::acl::metadata::screen_request(ctx, r, version);
            let resp = metadata::handle(ctx, r, version).await;
            (ApiKey::Metadata, crate::acl::metadata::screen_response(ctx, screened, resp).into())
        }
        RequestKind::DescribeCluster(r) => (ApiKey::DescribeCluster, metadata::describe_cluster(ctx, r).into()),
        RequestKind::DescribeQuorum(r) => {
            let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
            (ApiKey::DescribeQuorum, quorum::describe(ctx, r, version, &client_id).await.into())
        }
        RequestKind::ElectLeaders(r) => {
            let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
            (ApiKey::ElectLeaders, elect::handle(ctx, r, version, &client_id).await.into())
        }
        RequestKind::AlterPartitionReassignments(r) => (ApiKey::AlterPartitionReassignments, reassign::alter(ctx, r).await.into()),
        RequestKind::ListPartitionReassignments(r) => (ApiKey::ListPartitionReassignments, reassign::list(ctx, r).into()),
        RequestKind::ListOffsets(r) => (ApiKey::ListOffsets, list_offsets::handle(ctx, r).await.into()),
        RequestKind::OffsetForLeaderEpoch(r) => (ApiKey::OffsetForLeaderEpoch, leader_epoch::handle(ctx, r).into()),
        RequestKind::CreateTopics(r) => (ApiKey::CreateTopics, admin::create_topics(ctx, r, version).await.into()),
        RequestKind::DeleteTopics(r) => (ApiKey::DeleteTopics, admin::delete_topics(ctx, r, version).await.into()),
        RequestKind::CreatePartitions(r) => (ApiKey::CreatePartitions, admin::create_partitions(ctx, r).await.into()),
        RequestKind::DescribeConfigs(r) => (ApiKey::DescribeConfigs, configs::describe(ctx, r, version).into()),
        RequestKind::AlterConfigs(r) => (ApiKey::AlterConfigs, configs::alter(ctx, r).await.into()),
        RequestKind::IncrementalAlterConfigs(r) => {
            (ApiKey::IncrementalAlterConfigs, configs::incremental_alter(ctx, r).await.into())
        }
        other => {
            // Only reachable if versions.rs lists an API this match lacks.
            return Dispatched::Ready(Reply::Close(format!("no handler for {:?}", std::mem::discriminant(&other))));
        }
    };
    Dispatched::Ready(encode(&ctx.metrics, api, version, cid, response, throttle_ms))
}

/// The answer to a request at a version Ferry does not serve. ApiVersions
/// gets Kafka's v0-format UNSUPPORTED_VERSION answer listing what is
/// served, so the client can retry with a version both support. Other APIs
/// close the connection, as Kafka does: their answer format at an unknown
/// version is unknowable.
pub fn unsupported_version(prefix: HeaderPrefix, api: ApiKey) -> Reply {
    if api == ApiKey::ApiVersions {
        let body = api_versions::handle(crate::codes::UNSUPPORTED_VERSION);
        return encode(&None, api, 0, prefix.correlation_id, body.into(), 0);
    }
    Reply::Close(format!("{api:?} v{} is not supported", prefix.api_version))
}
