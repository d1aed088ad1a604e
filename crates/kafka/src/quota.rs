//! Client quotas on the connection, as Kafka enforces them (KIP-219): a
//! request over a quota is answered at once with `throttle_time_ms` set,
//! and the connection is muted for that long: nothing more of it is read
//! or handled until the time has passed, so the client really slows down
//! to its quota whether or not it honours the field itself.
//!
//! - Produce: the request's bytes count against producer_byte_rate when it
//!   is read (Kafka counts the request's size too).
//! - Fetch: the answer's record bytes count against consumer_byte_rate; a
//!   fetch that goes over is answered empty and taken back, as in Kafka,
//!   and a fetch asks for at most what the quota allows in its window.
//! - Every request's handling time (time spent in its handler's code, not
//!   waiting) counts against request_percentage; a client already over it
//!   is throttled on its next request (Kafka: on the request that went over).
//!
//! With no quota set, each step is one atomic load.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use ferry_auth::quota::{ClientQuotas, Enforced};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ResponseKind};
use parking_lot::Mutex;

use crate::server::Context;

/// The quota user of a principal: `alice` for `User:alice`, `ANONYMOUS`
/// for a client without a login, the certificate's CN on TLS.
pub fn user_of(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

/// Until when one connection is muted (KIP-219's channel throttling).
/// `armed` lets an unthrottled connection skip the lock.
#[derive(Debug, Default)]
pub struct Mute {
    armed: AtomicBool,
    until: Mutex<Option<tokio::time::Instant>>,
}

impl Mute {
    /// Mutes for `ms` from now, unless already muted for longer.
    pub fn extend(&self, ms: u64) {
        if ms == 0 {
            return;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(ms);
        let mut slot = self.until.lock();
        if slot.is_none_or(|u| u < until) {
            *slot = Some(until);
        }
        self.armed.store(true, Ordering::Release);
    }

    /// When the mute ends, if it has not yet.
    pub fn pending(&self) -> Option<tokio::time::Instant> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.until.lock();
        match *slot {
            Some(u) if u > tokio::time::Instant::now() => Some(u),
            _ => {
                *slot = None;
                self.armed.store(false, Ordering::Release);
                None
            }
        }
    }
}

/// The throttle a request gets before it is handled: its produce bytes
/// recorded against producer_byte_rate, and the request time its client
/// already used against request_percentage. Mutes the connection for it.
pub fn before_request(ctx: &Context, api: ApiKey, client_id: &str, frame_len: usize) -> u64 {
    let Some(q) = &ctx.quotas else { return 0 };
    let user = user_of(&ctx.session.principal);
    let mut throttle = 0;
    if api == ApiKey::Produce && q.is_active(Enforced::Produce) {
        // The frame plus its 4-byte length: the request's size on the wire.
        throttle = q.record(Enforced::Produce, user, client_id, (frame_len + 4) as f64);
    }
    if q.is_active(Enforced::Request) {
        throttle = throttle.max(q.throttle(Enforced::Request, user, client_id));
    }
    ctx.mute.extend(throttle);
    throttle
}

/// Records handling time against request_percentage: percent of one
/// thread for one second per unit, as Kafka's request quota counts.
pub fn record_request_time(q: &ClientQuotas, principal: &str, client_id: &str, busy: Duration) {
    let percent_seconds = busy.as_nanos() as f64 * 100.0 / 1e9;
    q.record(Enforced::Request, user_of(principal), client_id, percent_seconds);
}

/// Whether handling time needs measuring at all.
pub fn times_requests(ctx: &Context) -> bool {
    ctx.quotas.as_ref().is_some_and(|q| q.is_active(Enforced::Request))
}

/// A Fetch under consumer_byte_rate: capped to what the quota allows in
/// its window, recorded, and answered empty (taken back) when over.
pub async fn fetch(ctx: &Context, mut r: FetchRequest, version: i16, client_id: &str) -> (FetchResponse, u64) {
    let user = user_of(&ctx.session.principal);
    let Some(q) = ctx.quotas.as_ref().filter(|q| q.is_active(Enforced::Fetch)) else {
        return (crate::handlers::fetch_handle(ctx, r, version).await, 0);
    };
    if let Some(max) = q.max_in_window(Enforced::Fetch, user, client_id) {
        r.max_bytes = r.max_bytes.min(max.clamp(1.0, i32::MAX as f64) as i32);
    }
    let resp = crate::handlers::fetch_handle(ctx, r, version).await;
    let bytes: usize = resp.responses.iter().flat_map(|t| &t.partitions).map(|p| p.records.as_ref().map_or(0, |b| b.len())).sum();
    let throttle = q.record(Enforced::Fetch, user, client_id, bytes as f64);
    if throttle == 0 {
        return (resp, 0);
    }
    q.unrecord(Enforced::Fetch, user, client_id, bytes as f64);
    ctx.mute.extend(throttle);
    (FetchResponse::default().with_session_id(resp.session_id), throttle)
}

/// Sets a throttle time on an answer that has the field (every API Ferry
/// serves but the SASL ones and DescribeQuorum). Keeps a larger one.
pub fn set_throttle(body: &mut ResponseKind, ms: u64) {
    let ms = ms.min(i32::MAX as u64) as i32;
    macro_rules! throttled {
        ($($v:ident),*) => {
            match body {
                $(ResponseKind::$v(r) => r.throttle_time_ms = r.throttle_time_ms.max(ms),)*
                _ => {}
            }
        };
    }
    throttled!(
        AddOffsetsToTxn, AddPartitionsToTxn, AlterConfigs, AlterPartitionReassignments, AlterUserScramCredentials, ApiVersions,
        CreateAcls, CreatePartitions, CreateTopics, DeleteAcls, DeleteGroups, DeleteRecords, DeleteTopics, DescribeAcls,
        DescribeCluster, DescribeConfigs, DescribeGroups, DescribeLogDirs, DescribeProducers, DescribeTransactions,
        DescribeUserScramCredentials, ElectLeaders, EndTxn, Fetch, FindCoordinator, Heartbeat, IncrementalAlterConfigs,
        InitProducerId, JoinGroup, LeaveGroup, ListGroups, ListOffsets, ListPartitionReassignments, ListTransactions, Metadata,
        OffsetCommit, OffsetDelete, OffsetFetch, OffsetForLeaderEpoch, Produce, SyncGroup, TxnOffsetCommit,
        DescribeClientQuotas, AlterClientQuotas
    );
}

/// A future and the time spent polling it: its handler's own work, not
/// the time it waited (a fetch's long poll, an fsync on another thread).
pub struct Timed<F> {
    inner: F,
    busy: Duration,
}

impl<F: Future + Unpin> Timed<F> {
    pub fn new(inner: F) -> Timed<F> {
        Timed { inner, busy: Duration::ZERO }
    }
}

impl<F: Future + Unpin> Future for Timed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let started = Instant::now();
        let polled = Pin::new(&mut self.inner).poll(cx);
        self.busy += started.elapsed();
        polled.map(|out| (out, self.busy))
    }
}
