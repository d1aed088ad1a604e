//! The TCP server: accept loop with a connection limit, one task per
//! connection, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_broker::Engine;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::connection::serve_connection;
use crate::metrics::WireMetrics;

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
}

impl Context {
    /// Counts into the engine's metrics, if it has any.
    pub fn new(engine: Arc<Engine>, config: Arc<ServerConfig>) -> Context {
        let metrics = engine.config.metrics.clone().map(|m| Arc::new(WireMetrics::new(m)));
        Context { engine, config, metrics, cluster: None }
    }
}

/// Serves until `shutdown` turns true, then stops accepting, lets open
/// connections answer what they already read, and returns.
pub async fn serve(listener: TcpListener, ctx: Context, mut shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
    info!(listen = %listener.local_addr()?, "accepting Kafka connections");
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
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
                tokio::spawn(async move {
                    let _open = ctx.metrics.as_ref().map(|m| m.connection_opened());
                    serve_connection(stream, peer, ctx, shutdown).await;
                    drop(permit);
                });
            }
        }
    }
    info!("stopped accepting; waiting for open connections to finish");
    let all = ctx.config.max_connections as u32;
    if tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(all)).await.is_err() {
        warn!("some connections did not finish within 10 s");
    }
    Ok(())
}
