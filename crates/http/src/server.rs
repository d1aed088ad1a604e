//! Binding the HTTP port and the accept loop (HTTP/1.1, one task per
//! connection).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use ferry_broker::Engine;
use ferry_cluster::Cluster;
use ferry_metrics::Metrics;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api::{route, Advertised, State};
use crate::login::ConsoleAuth;

/// The default `--http-listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9644";

/// Where `ferry serve` serves HTTP (`--http-listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    /// `none`: no HTTP server, and nothing counted on the hot path.
    Off,
    /// Not given: the default address. Several brokers on one host share
    /// it, so when it is taken the broker warns and serves Kafka anyway.
    Default(SocketAddr),
    /// Given explicitly: failing to bind it stops the broker.
    Explicit(SocketAddr),
}

impl HttpListen {
    /// Parses a `--http-listen` value; None is "not given".
    pub fn parse(value: Option<&str>) -> Result<HttpListen, HttpError> {
        match value.map(str::trim) {
            None => Ok(HttpListen::Default(DEFAULT_LISTEN.parse().map_err(|_| HttpError::BadAddress(DEFAULT_LISTEN.into()))?)),
            Some(v) if v.eq_ignore_ascii_case("none") => Ok(HttpListen::Off),
            Some(v) => v.parse().map(HttpListen::Explicit).map_err(|_| HttpError::BadAddress(v.into())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http_listen `{0}` is neither HOST:PORT (an IP address and port) nor `none`")]
    BadAddress(String),
    #[error("cannot listen for HTTP on {addr} (http_listen): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Binds the HTTP port. `Ok(None)`: no HTTP (off, or the default address
/// unavailable, which is logged as a warning).
pub async fn bind(listen: HttpListen) -> Result<Option<TcpListener>, HttpError> {
    let (addr, explicit) = match listen {
        HttpListen::Off => return Ok(None),
        HttpListen::Default(a) => (a, false),
        HttpListen::Explicit(a) => (a, true),
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(source) if explicit => Err(HttpError::Bind { addr, source }),
        Err(e) => {
            warn!(http_listen = %addr, error = %e, "the default HTTP address is unavailable (another broker on this host?); serving Kafka clients without /metrics and the console; set --http-listen to another HOST:PORT or `none`");
            Ok(None)
        }
    }
}

/// Serves HTTP until `shutdown` turns true. `cluster` is the metadata
/// group on a cluster (for `/api/cluster`), None on a single broker;
/// `auth`, present when ACLs are on, makes every path need a login.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    advertised: Advertised,
    cluster: Option<Arc<Cluster>>,
    auth: Option<ConsoleAuth>,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = State { engine, metrics, advertised, cluster, auth };
    if let Ok(addr) = listener.local_addr() {
        info!(http_listen = %addr, "serving /metrics, /api and the console over HTTP");
    }
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, state, peer).await) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_listen_values() {
        assert_eq!(HttpListen::parse(None).ok(), Some(HttpListen::Default("127.0.0.1:9644".parse().expect("addr"))));
        assert_eq!(HttpListen::parse(Some("none")).ok(), Some(HttpListen::Off));
        assert_eq!(HttpListen::parse(Some("0.0.0.0:9000")).ok(), Some(HttpListen::Explicit("0.0.0.0:9000".parse().expect("addr"))));
        assert!(matches!(HttpListen::parse(Some("localhost")), Err(HttpError::BadAddress(_))));
    }
}
