//! One client connection: frames in, answers out, in request order.
//!
//! The reader decodes and handles each request in order, so requests take
//! effect in the order they were sent (pipelined produces append in order,
//! pipelined offset commits land in order). Work that only waits (a fetch's
//! long poll, an acks=all fsync) is spawned and the next request is handled
//! meanwhile, so a pipelining producer's requests share fsyncs. Work whose
//! effects happen while it waits (an offset commit's fsync before it is
//! visible, a transaction step) is spawned too, but the reader handles
//! nothing more until it finished. The writer sends answers in request
//! order, as Kafka clients require.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::codec::{decode_request, Decoded};
use crate::handlers::{self, Dispatched, Reply};
use crate::quota::Timed;
use crate::sasl::{SaslConfig, SaslGate, Screened};
use crate::server::Context;

/// An answer in the making, queued in request order.
enum Pending {
    Ready(Reply),
    Task(JoinHandle<Reply>),
}

enum FrameRead {
    Frame(Bytes),
    /// The peer closed between frames.
    Closed,
}

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("frame of {len} bytes is over socket.request.max.bytes={max}")]
    TooLarge { len: usize, max: usize },
    #[error("peer closed the connection mid-frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The peer went away (reset, or closed mid-frame): not a bad frame.
    fn is_disconnect(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        match self {
            FrameError::Truncated { .. } => true,
            FrameError::Io(e) => matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof),
            FrameError::Negative(_) | FrameError::TooLarge { .. } => false,
        }
    }
}

async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, max_bytes: usize) -> Result<FrameRead, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = match rd.read(&mut len_buf[got..]).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify, between frames:
            // as ordinary as a plaintext close (most Kafka clients do it).
            Err(e) if got == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if got == 0 { Ok(FrameRead::Closed) } else { Err(FrameError::Truncated { got, want: 4 }) };
        }
        got += n;
    }
    let len = i32::from_be_bytes(len_buf);
    if len < 0 {
        return Err(FrameError::Negative(len));
    }
    let len = len as usize;
    if len > max_bytes {
        return Err(FrameError::TooLarge { len, max: max_bytes });
    }
    // Grow with the data that actually arrives: a peer announcing a large
    // frame and sending nothing holds no large buffer.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *rd).take(len as u64).read_to_end(&mut body).await?;
    if read < len {
        return Err(FrameError::Truncated { got: read, want: len });
    }
    Ok(FrameRead::Frame(Bytes::from(body)))
}

/// How long a connection stays open idle between AddOffsetsToTxn and
/// EndTxn (see [`idle_limit`]).
const IDLE_AFTER_ADD_OFFSETS_MS: u64 = 5_000;

/// The idle limit of a connection. A transactional client sends
/// TxnOffsetCommit right after AddOffsetsToTxn, to the group coordinator,
/// then EndTxn on the transaction coordinator's connection. librdkafka
/// (2.10 to at least 2.16), after re-bootstrapping when its only broker
/// restarted, can keep a decommissioned handle cached as the group
/// coordinator, and TxnOffsetCommit then waits for a broker state change
/// that never comes (librdkafka issues #5511 and #5456; Kafka 4.4.0 hangs
/// the same way, until connections.max.idle.ms closes the connection).
/// Closing the transaction-coordinator connection it last used is such a
/// change: the client looks the coordinator up again and sends. Closing an
/// idle connection is harmless to every client: it reconnects when it next
/// has something to send.
fn idle_limit(offsets_added: bool, idle: Duration) -> Duration {
    if offsets_added {
        idle.min(Duration::from_millis(IDLE_AFTER_ADD_OFFSETS_MS))
    } else {
        idle
    }
}

/// Starts a dispatched request's remaining work; for Ordered work, sets
/// `effects_pending` to what tells when its effects are applied.
fn queue(dispatched: Dispatched, effects_pending: &mut Option<oneshot::Receiver<()>>) -> Pending {
    match dispatched {
        Dispatched::Ready(reply) => Pending::Ready(reply),
        Dispatched::Waiting(work) => Pending::Task(tokio::spawn(work)),
        Dispatched::Ordered(work) => {
            let (done_tx, done_rx) = oneshot::channel();
            *effects_pending = Some(done_rx);
            Pending::Task(tokio::spawn(async move {
                let reply = work.await;
                let _ = done_tx.send(());
                reply
            }))
        }
    }
}

/// Who the client proved to be, kept for authorization: its certificate's
/// principal (`User:ANONYMOUS` without one) and its SASL login, if any.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tls: String,
    pub sasl: Option<String>,
}

impl Identity {
    /// The principal ACLs see: the SASL login on a SASL listener (as in
    /// Kafka, where SASL_SSL's principal is the SASL one), else the certificate's.
    pub fn principal(&self) -> &str {
        self.sasl.as_deref().unwrap_or(&self.tls)
    }

    /// What the authorizer is asked about: the principal and the client's IP.
    fn session(&self, peer: SocketAddr) -> std::sync::Arc<ferry_auth::acl::Session> {
        let host = peer.ip().to_canonical().to_string();
        std::sync::Arc::new(ferry_auth::acl::Session { principal: self.principal().to_string(), host })
    }
}

/// Serves one connection, plaintext or TLS alike. `principal` is the TLS
/// principal; with `sasl` set, the client must authenticate first.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    principal: String,
    sasl: Option<SaslConfig>,
    mut ctx: Context,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    debug!(%peer, %principal, "connection opened");
    let mut identity = Identity { tls: principal, sasl: None };
    ctx.session = identity.session(peer);
    ctx.mute = std::sync::Arc::new(crate::quota::Mute::default());
    let mut gate = sasl.map(SaslGate::new);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Pending>(ctx.config.max_inflight_requests_per_connection);
    let writer = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            let reply = match pending {
                Pending::Ready(r) => r,
                Pending::Task(handle) => match handle.await {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(%peer, error = %e, "request handler failed; closing connection");
                        return;
                    }
                },
            };
            match reply {
                Reply::Send(bytes) => {
                    // A TLS stream may hold encrypted bytes until flushed
                    // (a no-op on plain TCP).
                    if let Err(e) = async { wr.write_all(&bytes).await?; wr.flush().await }.await {
                        debug!(%peer, error = %e, "write failed; closing connection");
                        return;
                    }
                }
                Reply::Nothing => {}
                Reply::Close(reason) => {
                    info!(%peer, %reason, "closing connection");
                    let _ = wr.shutdown().await;
                    return;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let idle = Duration::from_millis(ctx.config.connections_max_idle_ms);
    // Set while an Ordered request's effects are still being applied.
    let mut effects_pending: Option<oneshot::Receiver<()>> = None;
    // Between AddOffsetsToTxn and EndTxn on this connection (see `idle_limit`).
    let mut offsets_added = false;
    loop {
        let mut idle_limit = idle_limit(offsets_added, idle);
        let mut max_frame = ctx.config.socket_request_max_bytes;
        if let Some(g) = &gate {
            idle_limit = g.read_limit(idle_limit);
            max_frame = g.max_frame(max_frame);
        }
        // A quota throttle mutes the connection: nothing is read meanwhile.
        if !wait_unmuted(&ctx, &mut shutdown).await {
            break;
        }
        let frame = tokio::select! {
            _ = shutdown.changed() => break,
            r = tokio::time::timeout(idle_limit, read_frame(&mut rd, max_frame)) => match r {
                Err(_) => {
                    let authenticating = gate.as_ref().is_some_and(|g| !g.is_done());
                    info!(%peer, idle_ms = idle_limit.as_millis() as u64, offsets_added, authenticating, "closing idle connection");
                    break;
                }
                Ok(Ok(FrameRead::Frame(f))) => f,
                Ok(Ok(FrameRead::Closed)) => break,
                Ok(Err(e)) if e.is_disconnect() => {
                    info!(%peer, reason = %e, "client disconnected");
                    break;
                }
                Ok(Err(e)) => {
                    warn!(%peer, error = %e, "closing connection: bad frame");
                    break;
                }
            },
        };
        if let Some(done) = effects_pending.take() {
            tokio::select! {
                _ = shutdown.changed() => break,
                // An error means the task ended without finishing (it
                // panicked); the writer closes the connection then.
                _ = done => {}
            }
        }
        // A fetch answered meanwhile may have muted the connection.
        if !wait_unmuted(&ctx, &mut shutdown).await {
            break;
        }
        if let Some(g) = gate.as_mut().filter(|g| g.expects_raw_token()) {
            let screened = g.raw_token(frame).await;
            if !answer_sasl(screened, peer, &mut identity, &tx).await {
                break;
            }
            ctx.session = identity.session(peer);
            continue;
        }
        let frame_len = frame.len();
        let pending = match decode_request(frame) {
            Ok(Decoded::Request(header, body)) => {
                let api = ApiKey::try_from(header.request_api_key);
                if let (Some(m), Ok(api)) = (&ctx.metrics, api) {
                    m.count_request(api);
                }
                let (header, body) = match gate.as_mut().filter(|g| !g.is_done()) {
                    Some(g) => match g.screen(header, body).await {
                        Screened::Pass(header, body) => (header, *body),
                        other => {
                            if !answer_sasl(other, peer, &mut identity, &tx).await {
                                break;
                            }
                            ctx.session = identity.session(peer);
                            continue;
                        }
                    },
                    None => (header, body),
                };
                match api {
                    Ok(ApiKey::AddOffsetsToTxn) => offsets_added = true,
                    Ok(ApiKey::EndTxn) => offsets_added = false,
                    _ => {}
                }
                let dispatched = handle(&ctx, peer, header, body, frame_len).await;
                queue(dispatched, &mut effects_pending)
            }
            Ok(Decoded::UnsupportedVersion(prefix, api)) => {
                if api != ApiKey::ApiVersions && gate.as_ref().is_some_and(|g| !g.is_done()) {
                    warn!(%peer, api = ?api, version = prefix.api_version, "closing connection: unsupported version before SASL authentication");
                    break;
                }
                if api != ApiKey::ApiVersions {
                    warn!(%peer, api = ?api, version = prefix.api_version, "unsupported API version");
                }
                Pending::Ready(handlers::unsupported_version(prefix, api))
            }
            Err(e) => {
                warn!(%peer, error = %e, "closing connection: undecodable request");
                break;
            }
        };
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
    debug!(%peer, principal = identity.principal(), "connection closed");
}

/// Waits out a quota mute; false when the broker shuts down meanwhile.
async fn wait_unmuted(ctx: &Context, shutdown: &mut watch::Receiver<bool>) -> bool {
    let Some(until) = ctx.mute.pending() else { return true };
    tokio::select! {
        _ = shutdown.changed() => false,
        _ = tokio::time::sleep_until(until) => true,
    }
}

/// Dispatches one request under the client quotas: its throttle decided
/// first (quota.rs), and with request_percentage set, the time spent in its
/// handler (and in the work it leaves running) recorded against it.
async fn handle(ctx: &Context, peer: SocketAddr, header: RequestHeader, body: RequestKind, frame_len: usize) -> Dispatched {
    let Some(quotas) = ctx.quotas.as_ref().filter(|q| q.any_active()) else {
        return handlers::dispatch(ctx, peer, header, body, 0).await;
    };
    let api = ApiKey::try_from(header.request_api_key).unwrap_or(ApiKey::ApiVersions);
    let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
    let throttle = crate::quota::before_request(ctx, api, &client_id, frame_len);
    if !crate::quota::times_requests(ctx) {
        return handlers::dispatch(ctx, peer, header, body, throttle).await;
    }
    let (dispatched, busy) = Timed::new(Box::pin(handlers::dispatch(ctx, peer, header, body, throttle))).await;
    let principal = ctx.session.principal.clone();
    crate::quota::record_request_time(quotas, &principal, &client_id, busy);
    let timed = |work: handlers::ReplyFuture| -> handlers::ReplyFuture {
        let quotas = quotas.clone();
        Box::pin(async move {
            let (reply, busy) = Timed::new(work).await;
            crate::quota::record_request_time(&quotas, &principal, &client_id, busy);
            reply
        })
    };
    match dispatched {
        Dispatched::Ready(reply) => Dispatched::Ready(reply),
        Dispatched::Waiting(work) => Dispatched::Waiting(timed(work)),
        Dispatched::Ordered(work) => Dispatched::Ordered(timed(work)),
    }
}

/// Queues a SASL answer; records the login. False when the connection must close.
async fn answer_sasl(screened: Screened, peer: SocketAddr, identity: &mut Identity, tx: &mpsc::Sender<Pending>) -> bool {
    let (reply, keep_open) = match screened {
        Screened::Answer(reply) => (Some(reply), true),
        Screened::Authenticated { reply, principal, mechanism } => {
            info!(%peer, %principal, %mechanism, tls_principal = %identity.tls, "SASL authenticated");
            identity.sasl = Some(principal);
            (Some(reply), true)
        }
        Screened::Refuse(reply, reason, close_delay) => {
            info!(%peer, %reason, "closing connection: SASL authentication refused");
            if let Some(reply) = reply {
                let _ = tx.send(Pending::Ready(reply)).await;
            }
            tokio::time::sleep(close_delay).await;
            return false;
        }
        // Only `screen` passes requests on; the caller handles those.
        Screened::Pass(..) => (None, true),
    };
    if let Some(reply) = reply {
        if tx.send(Pending::Ready(reply)).await.is_err() {
            return false;
        }
    }
    keep_open
}
