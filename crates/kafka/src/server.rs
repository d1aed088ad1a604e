//! The TCP server: one accept loop per listener (plaintext or TLS) under a
//! shared connection limit, one task per connection, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_broker::Engine;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::connection::serve_connection;
use crate::metrics::WireMetrics;
use crate::ip_limit::ConnectionsPerIp;
use crate::sasl::SaslConfig;
use crate::tls::{TlsState, ANONYMOUS};

/// Front-end settings, named after Kafka's broker configs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Host and port clients are told to connect to (Metadata).
    pub advertised_host: String,
    pub advertised_port: i32,
    pub cluster_id: String,
    /// `max.connections`
    pub max_connections: usize,
    /// `max.connections.per.ip` and its overrides.
    pub max_connections_per_ip: crate::ip_limit::PerIpLimits,
    /// `socket.request.max.bytes`
    pub socket_request_max_bytes: usize,
    /// `fetch.max.bytes`: cap on one fetch response.
    pub fetch_max_bytes: usize,
    /// Requests read ahead on one connection before answers are written.
    pub max_inflight_requests_per_connection: usize,
    /// `connections.max.idle.ms`
    pub connections_max_idle_ms: u64,
    /// `default.replication.factor`, for topics created without one.
    pub default_replication_factor: i16,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            advertised_host: listen.ip().to_string(),
            advertised_port: listen.port() as i32,
            cluster_id: "ferry-cluster".into(),
            max_connections: 10_000,
            max_connections_per_ip: crate::ip_limit::PerIpLimits::default(),
            socket_request_max_bytes: 100 * 1024 * 1024,
            fetch_max_bytes: 55 * 1024 * 1024,
            max_inflight_requests_per_connection: 128,
            connections_max_idle_ms: 600_000,
            default_replication_factor: 1,
        }
    }
}

/// What every request handler can reach.
#[derive(Debug, Clone)]
pub struct Context {
    pub engine: Arc<Engine>,
    pub config: Arc<ServerConfig>,
    /// Set when this broker is one of a cluster (`--cluster-voters`).
    pub cluster: Option<Arc<ferry_cluster::Cluster>>,
    /// Request, connection and produce-latency metrics; None when the
    /// engine counts nothing.
    pub metrics: Option<Arc<WireMetrics>>,
    /// SCRAM users, for Alter/DescribeUserScramCredentials; None when the
    /// broker keeps no user store.
    pub users: Option<Arc<ferry_auth::UserStore>>,
    /// The authorizer (`--acls-enable true`); None: everything is allowed
    /// and the ACL APIs answer SECURITY_DISABLED.
    pub acls: Option<Arc<ferry_auth::acl::Authorizer>>,
    /// Client quotas (always present on a broker; tests may run without).
    pub quotas: Option<Arc<ferry_auth::quota::ClientQuotas>>,
    /// This connection's quota mute (each connection sets its own).
    pub mute: Arc<crate::quota::Mute>,
    /// Who this connection is (set by the connection, updated after SASL).
    pub session: Arc<ferry_auth::acl::Session>,
    /// On a cluster: users and ACLs replicated through the metadata group.
    pub security: Option<Arc<crate::security_replica::SecurityReplica>>,
}

impl Context {
    /// Counts into the engine's metrics, if it has any.
    pub fn new(engine: Arc<Engine>, config: Arc<ServerConfig>) -> Context {
        let metrics = engine.config.metrics.clone().map(|m| Arc::new(WireMetrics::new(m)));
        let session = Arc::new(ferry_auth::acl::Session { principal: ANONYMOUS.to_string(), host: "0.0.0.0".to_string() });
        let mute = Arc::new(crate::quota::Mute::default());
        Context { engine, config, metrics, cluster: None, users: None, acls: None, quotas: None, mute, session, security: None }
    }
}

/// How a listener's connections are carried.
#[derive(Debug, Clone)]
pub enum Transport {
    Plaintext,
    /// A TLS handshake first, with the certificates live in the state.
    Tls(Arc<TlsState>),
}

impl Transport {
    /// Kafka's security protocol name.
    pub fn protocol_name(&self) -> &'static str {
        match self {
            Transport::Plaintext => "PLAINTEXT",
            Transport::Tls(_) => "SSL",
        }
    }
}

/// One bound listener, with the settings its clients see (Metadata
/// advertises this listener's own address, as Kafka does per listener).
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    pub transport: Transport,
    /// Set on SASL_PLAINTEXT and SASL_SSL listeners: clients authenticate first.
    pub sasl: Option<SaslConfig>,
    pub config: Arc<ServerConfig>,
}

impl Listener {
    /// Kafka's security protocol name of this listener.
    pub fn protocol_name(&self) -> &'static str {
        match (&self.transport, &self.sasl) {
            (Transport::Plaintext, None) => "PLAINTEXT",
            (Transport::Tls(_), None) => "SSL",
            (Transport::Plaintext, Some(_)) => "SASL_PLAINTEXT",
            (Transport::Tls(_), Some(_)) => "SASL_SSL",
        }
    }
}

/// Serves one plaintext listener with `ctx`'s settings (see [`serve_listeners`]).
pub async fn serve(listener: TcpListener, ctx: Context, shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
    let config = ctx.config.clone();
    serve_listeners(vec![Listener { socket: listener, transport: Transport::Plaintext, sasl: None, config }], ctx, shutdown).await
}

/// Serves every listener (one accept loop each, `max.connections` shared)
/// until `shutdown` turns true, then stops accepting, lets open connections
/// answer what they already read, and returns.
pub async fn serve_listeners(listeners: Vec<Listener>, ctx: Context, shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
    let per_ip = ConnectionsPerIp::new(ctx.config.max_connections_per_ip.clone());
    let mut loops = Vec::new();
    for listener in listeners {
        let ctx = Context { config: listener.config.clone(), ..ctx.clone() };
        loops.push(tokio::spawn(accept_loop(listener, ctx, slots.clone(), per_ip.clone(), shutdown.clone())));
    }
    for l in loops {
        if let Err(e) = l.await {
            warn!(error = %e, "accept loop failed");
        }
    }
    info!("stopped accepting; waiting for open connections to finish");
    let all = ctx.config.max_connections as u32;
    if tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(all)).await.is_err() {
        warn!("some connections did not finish within 10 s");
    }
    Ok(())
}

async fn accept_loop(listener: Listener, ctx: Context, slots: Arc<Semaphore>, per_ip: ConnectionsPerIp, mut shutdown: watch::Receiver<bool>) {
    let protocol = listener.protocol_name();
    let local = listener.socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    info!(listen = %local, protocol, "accepting Kafka connections");
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.socket.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let ip_slot = match per_ip.try_open(peer.ip()) {
                    Ok(slot) => slot,
                    Err(limit) => {
                        warn!(%peer, max_connections_per_ip = limit, "connection refused: max.connections.per.ip reached for this address");
                        drop(stream);
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    warn!(%peer, max_connections = ctx.config.max_connections, "connection refused: max.connections reached");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                let transport = listener.transport.clone();
                let sasl = listener.sasl.clone();
                tokio::spawn(async move {
                    let _open = ctx.metrics.as_ref().map(|m| m.connection_opened());
                    open_connection(stream, peer, transport, sasl, ctx, shutdown).await;
                    drop(permit);
                    drop(ip_slot);
                });
            }
        }
    }
}

/// Runs the TLS handshake if the listener has one, then serves the connection
/// (which authenticates the client first on a SASL listener).
async fn open_connection(
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    sasl: Option<SaslConfig>,
    ctx: Context,
    shutdown: watch::Receiver<bool>,
) {
    match transport {
        Transport::Plaintext => serve_connection(stream, peer, ANONYMOUS.to_string(), sasl, ctx, shutdown).await,
        Transport::Tls(tls) => match tls.accept(stream).await {
            Ok((stream, principal)) => serve_connection(stream, peer, principal, sasl, ctx, shutdown).await,
            Err(e) => warn!(%peer, error = %e, "closing connection"),
        },
    }
}
